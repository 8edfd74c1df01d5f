"""The alert for a unit that failed in a way the program could not report itself."""

from __future__ import annotations

from collections.abc import Mapping

from marketdata.config import Settings
from marketdata.errors import ExitCode, InputError, MarketdataError
from marketdata.observability.alerts import Alert, deliver_now

# Outcomes a run always alerts on itself (partial, interrupted): a second alert would repeat it.
REPORTED_BY_THE_RUN = frozenset({ExitCode.PARTIAL, ExitCode.SIGINT, ExitCode.SIGTERM})


def reported_by_the_run(monitor: Mapping[str, str]) -> bool:
    """True when the unit failed because the run exited with an outcome it reports itself."""
    status = monitor.get("MONITOR_EXIT_STATUS", "")
    return (
        monitor.get("MONITOR_EXIT_CODE") == "exited"
        and status.isdigit()
        and int(status) in REPORTED_BY_THE_RUN
    )


def unit_failure_alert(unit: str, monitor: Mapping[str, str]) -> Alert:
    """A critical alert naming the unit and, from what systemd passes an OnFailure= handler
    ($MONITOR_SERVICE_RESULT, $MONITOR_EXIT_CODE, $MONITOR_EXIT_STATUS, systemd >= 251), why.
    """
    result = monitor.get("MONITOR_SERVICE_RESULT")
    code, status = monitor.get("MONITOR_EXIT_CODE"), monitor.get("MONITOR_EXIT_STATUS")
    why = ", ".join(
        part
        for part in (
            f"result {result}" if result else "",
            f"{code} {status}" if code and status else "",
        )
        if part
    )
    invocation = monitor.get("MONITOR_INVOCATION_ID")
    journal = (
        f"journalctl _SYSTEMD_INVOCATION_ID={invocation}" if invocation else f"journalctl -u {unit}"
    )
    text = f"{why or 'no details from systemd'}; see `{journal}`"
    return Alert("critical", f"systemd unit {unit} failed", text)


def send_unit_failure(settings: Settings, unit: str, monitor: Mapping[str, str]) -> Alert | None:
    """Send the alert whatever ALERT_MIN_SEVERITY, unless the run reported the outcome itself
    (then None); InputError without a webhook (the failure would reach no one),
    MarketdataError when the webhook refuses it."""
    from marketdata.redact import mask_url

    if reported_by_the_run(monitor):
        return None
    if not settings.alert_webhook_url:
        raise InputError(
            f"ALERT_WEBHOOK_URL is not set: the failure of {unit} was not sent anywhere",
            hint="set it in /etc/marketdata/marketdata.env",
        )
    alert = unit_failure_alert(unit, monitor)
    if not deliver_now(settings.alert_webhook_url, alert, ca_bundle=settings.http_ca_bundle):
        shown = mask_url(settings.alert_webhook_url, hide_path=True)
        raise MarketdataError(f"the webhook at {shown} did not accept the alert that {unit} failed")
    return alert
