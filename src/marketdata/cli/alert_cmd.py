"""`marketdata alert test`: send one alert to check the webhook end to end."""

from __future__ import annotations

from typing import Annotated

import typer

from marketdata.cli import render
from marketdata.cli.options import Json
from marketdata.cli.state import build_app

app = typer.Typer(help="Webhook alerts.", no_args_is_help=True)


@app.command()
def test(
    severity: Annotated[
        str,
        typer.Option(help="info, warning, error or critical (sent whatever ALERT_MIN_SEVERITY)."),
    ] = "warning",
    json: Json = False,
) -> None:
    """Send a test alert to ALERT_WEBHOOK_URL; exit 1 when it is not delivered."""
    from marketdata.observability.alerts import send_test_alert

    shown = send_test_alert(build_app().settings, severity)
    if json:
        render.emit_json({"delivered": True, "webhook": shown, "severity": severity})
        return
    render.note(f"test alert delivered to {shown}")


@app.command("unit-failed")
def unit_failed(
    unit: Annotated[
        str, typer.Argument(help="The systemd unit that failed (%i of the alert unit).")
    ],
    json: Json = False,
) -> None:
    """Send a critical alert that UNIT failed (run by marketdata-alert@UNIT.service for
    failures the program could not report itself: killed, out of memory, broken install)."""
    from loguru import logger

    from marketdata.config import systemd_monitor
    from marketdata.systemd.failure import send_unit_failure

    monitor = systemd_monitor()
    alert = send_unit_failure(build_app().settings, unit, monitor)
    if json:
        render.emit_json(
            {"unit": unit, "sent": alert is not None, "title": alert.title if alert else None}
        )
    if alert is None:
        status = monitor.get("MONITOR_EXIT_STATUS")
        render.note(f"{unit} exited {status}, an outcome its run alerted on itself: not sent")
        return
    logger.critical("{}: {}", alert.title, alert.text)
