"""Alert sinks: a webhook (JSON POST), a null sink and a recording one; severities in order."""

from __future__ import annotations

import socket
import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pathlib import Path

    from marketdata.config import Settings

SEVERITIES = ("info", "warning", "error", "critical")


@dataclass(frozen=True)
class Alert:
    """One alert: what happened, how bad, and which run."""

    severity: str
    title: str
    text: str
    run_id: int | None = None
    host: str = field(default_factory=socket.gethostname)
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def payload(self) -> dict[str, Any]:
        """The JSON body: our fields plus `text` at the top level, which Slack, Mattermost
        and Teams-style incoming webhooks display as the message."""
        body = asdict(self)
        body["text"] = f"[{self.severity}] {self.title}: {self.text}"
        body["detail"] = self.text
        return body


class Alerts(Protocol):
    """Where alerts go. Sending must never fail or stop a run."""

    def send(self, alert: Alert) -> bool:
        """Deliver the alert if it is at or above the minimum severity; True if delivered."""
        ...


class NullAlerts:
    """No ALERT_WEBHOOK_URL configured."""

    def send(self, alert: Alert) -> bool:
        """Discard."""
        return False


class RecordingAlerts:
    """Keeps what it was sent, for tests."""

    def __init__(self, min_severity: str = "info") -> None:
        self.min_severity = min_severity
        self.sent: list[Alert] = []
        self._lock = threading.Lock()

    def send(self, alert: Alert) -> bool:
        """Record the alert if it passes the threshold."""
        if not at_least(alert.severity, self.min_severity):
            return False
        with self._lock:
            self.sent.append(alert)
        return True


class WebhookAlerts:
    """POSTs each alert as JSON to ALERT_WEBHOOK_URL; failures are logged, never raised."""

    def __init__(
        self, url: str, min_severity: str, *, timeout: float = 5.0, ca_bundle: Path | None = None
    ) -> None:
        self.url = url
        self.min_severity = min_severity
        self.timeout = timeout
        self.ca_bundle = ca_bundle  # HTTP_CA_BUNDLE: TLS is verified, against these CAs

    def send(self, alert: Alert) -> bool:
        """Deliver one alert; a webhook that fails is reported in the log (URL masked)."""
        if not at_least(alert.severity, self.min_severity):
            return False
        import httpx
        from loguru import logger

        from marketdata.redact import mask_url
        from marketdata.tls import ssl_context

        try:
            response = httpx.post(
                self.url,
                json=alert.payload(),
                timeout=self.timeout,
                verify=ssl_context(self.ca_bundle),
            )
        except httpx.HTTPError as exc:
            logger.warning(
                "alert not delivered to {}: {}",
                mask_url(self.url, hide_path=True),
                type(exc).__name__,
            )
            return False
        if response.status_code >= 300:
            logger.warning(
                "alert not delivered to {}: HTTP {}",
                mask_url(self.url, hide_path=True),
                response.status_code,
            )
            return False
        return True


def at_least(severity: str, minimum: str) -> bool:
    """True when `severity` is `minimum` or worse."""
    return SEVERITIES.index(severity) >= SEVERITIES.index(minimum)


def send_test_alert(settings: Settings, severity: str) -> str:
    """Send one alert at `severity` whatever the threshold; returns the masked URL.

    Raises InputError without a webhook or for an unknown severity, MarketdataError when the
    webhook does not accept it.
    """
    from marketdata.errors import InputError, MarketdataError
    from marketdata.redact import mask_url

    if severity not in SEVERITIES:
        raise InputError(f"--severity must be one of {', '.join(SEVERITIES)}, not {severity!r}")
    if not settings.alert_webhook_url:
        raise InputError("ALERT_WEBHOOK_URL is not set", hint="set it, then run this again")
    shown = mask_url(settings.alert_webhook_url, hide_path=True)
    sink = WebhookAlerts(settings.alert_webhook_url, "info", ca_bundle=settings.http_ca_bundle)
    alert = Alert(severity, "marketdata test alert", "sent by `marketdata alert test`")
    if not sink.send(alert):
        raise MarketdataError(f"the webhook at {shown} did not accept the test alert")
    return shown
