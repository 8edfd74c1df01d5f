"""`marketdata alert test`: send one alert to check the webhook end to end."""

from __future__ import annotations

from typing import Annotated

import typer

from marketdata.cli import render
from marketdata.cli.state import build_app

app = typer.Typer(help="Webhook alerts.", no_args_is_help=True)


@app.command()
def test(
    severity: Annotated[
        str,
        typer.Option(help="info, warning, error or critical (sent whatever ALERT_MIN_SEVERITY)."),
    ] = "warning",
) -> None:
    """Send a test alert to ALERT_WEBHOOK_URL; exit 1 when it is not delivered."""
    from marketdata.observability.alerts import send_test_alert

    shown = send_test_alert(build_app().settings, severity)
    render.note(f"test alert delivered to {shown}")
