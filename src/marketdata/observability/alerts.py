"""Alert sinks: a webhook (JSON POST), a null sink and a recording one; severities in order.

Sending never blocks or fails the caller: the webhook sink deduplicates, queues, and delivers
from one background thread with one HTTP client (short timeout, a couple of retries with
backoff); a delivery that fails is logged with the URL's token masked.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pathlib import Path

    import httpx

    from marketdata.config import Settings

SEVERITIES = ("info", "warning", "error", "critical")
SYMBOLS_IN_PAYLOAD = 50  # a universe of thousands must not make a megabyte message
UNREACHABLE_PAUSE = 60.0  # seconds a webhook that timed out is skipped before trying again


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Alert:
    """One alert: what happened, how bad, and the run it is about."""

    severity: str
    title: str
    text: str
    run_id: int | None = None
    trigger: str | None = None
    providers: Sequence[str] = ()
    symbols: Sequence[str] = ()
    error: str | None = None
    host: str = field(default_factory=socket.gethostname)
    time: str = field(default_factory=_now_iso)

    @property
    def key(self) -> tuple[str, str, int | None]:
        """Alerts with the same key are one alert (sent once)."""
        return (self.severity, self.title, self.run_id)

    def payload(self) -> dict[str, Any]:
        """The JSON body: our fields, plus `text` at the top level, which Slack, Mattermost
        and Teams-style incoming webhooks display as the message."""
        from marketdata.redact import scrub

        symbols = list(self.symbols)
        return {
            "severity": self.severity,
            "title": scrub(self.title),
            "detail": scrub(self.text),
            "text": scrub(f"[{self.severity}] {self.title}: {self.text}"),
            "run_id": self.run_id,
            "trigger": self.trigger,
            "providers": list(self.providers),
            "symbols": symbols[:SYMBOLS_IN_PAYLOAD],
            "symbols_total": len(symbols),
            "error": None if self.error is None else scrub(self.error),
            "host": self.host,
            "time": self.time,
            "at": self.time,  # the field's earlier name, kept for existing receivers
        }


class Alerts(Protocol):
    """Where alerts go. Sending must never fail, block or stop a run."""

    def send(self, alert: Alert) -> bool:
        """Accept the alert if it is at or above the minimum severity and not a duplicate;
        True when accepted."""
        ...


class NullAlerts:
    """No ALERT_WEBHOOK_URL configured."""

    def send(self, alert: Alert) -> bool:
        """Discard."""
        return False


class _Filter:
    """Threshold and de-duplication shared by the sinks (thread-safe)."""

    def __init__(self, min_severity: str) -> None:
        self.min_severity = min_severity
        self._seen: set[tuple[str, str, int | None]] = set()
        self._lock = threading.Lock()

    def accepts(self, alert: Alert) -> bool:
        if not at_least(alert.severity, self.min_severity):
            return False
        with self._lock:
            if alert.key in self._seen:
                return False
            self._seen.add(alert.key)
        return True


class RecordingAlerts:
    """Keeps what it was sent, for tests."""

    def __init__(self, min_severity: str = "info") -> None:
        self._filter = _Filter(min_severity)
        self.sent: list[Alert] = []
        self._lock = threading.Lock()

    def send(self, alert: Alert) -> bool:
        """Record the alert if it passes the threshold and is not a duplicate."""
        if not self._filter.accepts(alert):
            return False
        with self._lock:
            self.sent.append(alert)
        return True


class WebhookAlerts:
    """POSTs each alert as JSON to ALERT_WEBHOOK_URL from one background thread.

    `send` only queues; `flush` waits (up to a deadline) for the queue to drain; `close`
    flushes and releases the client. A webhook that times out or answers 5xx is retried
    with backoff; one that cannot be reached is skipped for a minute after a lost alert, so
    an outage of the webhook costs one round of timeouts, not one per alert.
    """

    def __init__(
        self,
        url: str,
        min_severity: str,
        *,
        timeout: float = 3.0,
        attempts: int = 3,
        flush_timeout: float = 15.0,
        ca_bundle: Path | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.ca_bundle = ca_bundle  # HTTP_CA_BUNDLE: TLS is verified, against these CAs
        self.attempts = attempts
        self.flush_timeout = flush_timeout
        self._filter = _Filter(min_severity)
        self._queue: queue.Queue[Alert | None] = queue.Queue()
        self._pending = 0
        self._idle = threading.Condition()
        self._thread: threading.Thread | None = None
        self._client: httpx.Client | None = None
        self._skip_until = 0.0  # monotonic time before which the webhook is not tried

    @property
    def min_severity(self) -> str:
        """ALERT_MIN_SEVERITY."""
        return self._filter.min_severity

    def send(self, alert: Alert) -> bool:
        """Queue the alert for delivery (never blocks); False when filtered or a duplicate."""
        if not self._filter.accepts(alert):
            return False
        with self._idle:
            self._pending += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._deliver_queued, name="alerts", daemon=True
                )
                self._thread.start()
        self._queue.put(alert)
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued alert was delivered or given up; False on the deadline
        (what is left is logged and dropped when the process ends)."""
        deadline = time.monotonic() + (self.flush_timeout if timeout is None else timeout)
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    _log_lost(self.url, self._pending, "the flush deadline passed")
                    return False
                self._idle.wait(left)
        return True

    def close(self) -> None:
        """Flush, stop the thread, close the HTTP client."""
        self.flush()
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=1.0)
            self._thread = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def deliver(self, alert: Alert) -> bool:
        """POST one alert now, with retries; True when the webhook accepted it (2xx)."""
        import httpx
        import stamina

        from marketdata.redact import mask_url

        if time.monotonic() < self._skip_until:
            _log_lost(self.url, 1, "the webhook could not be reached a moment ago")
            return False
        if self._client is None:
            from marketdata.tls import ssl_context

            self._client = httpx.Client(timeout=self.timeout, verify=ssl_context(self.ca_bundle))
        try:
            for attempt in stamina.retry_context(
                on=_transient, attempts=self.attempts, wait_initial=0.5, wait_max=2.0
            ):
                with attempt:
                    response = self._client.post(self.url, json=alert.payload())
                    response.raise_for_status()
        except httpx.HTTPStatusError as exc:
            reason = f"HTTP {exc.response.status_code}"
        except httpx.HTTPError as exc:
            self._skip_until = time.monotonic() + UNREACHABLE_PAUSE
            reason = type(exc).__name__
        else:
            return True
        from loguru import logger

        logger.warning(
            "alert not delivered to {}: {} ({})",
            mask_url(self.url, hide_path=True),
            reason,
            alert.title,
        )
        return False

    def _deliver_queued(self) -> None:
        while True:
            alert = self._queue.get()
            if alert is None:
                return
            try:
                self.deliver(alert)
            except Exception as exc:  # noqa: BLE001 - an alert must never kill its thread
                _log_lost(self.url, 1, type(exc).__name__)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()


def _transient(exc: Exception) -> bool:
    """Retry timeouts, connection errors, 429 and 5xx; never other 4xx (they will not pass)."""
    import httpx

    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        return status == 429 or status >= 500
    return isinstance(exc, httpx.TransportError)


def _log_lost(url: str, count: int, why: str) -> None:
    from loguru import logger

    from marketdata.redact import mask_url

    logger.warning("{} alert(s) not delivered to {}: {}", count, mask_url(url, hide_path=True), why)


def at_least(severity: str, minimum: str) -> bool:
    """True when `severity` is `minimum` or worse."""
    return SEVERITIES.index(severity) >= SEVERITIES.index(minimum)


def check_webhook_url(url: str) -> str:
    """The URL if it is http(s) with a host; ValueError otherwise (for the settings check)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValueError("not a URL") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    return url


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
    alert = Alert(severity, "marketdata test alert", "sent by `marketdata alert test`")
    if not deliver_now(settings.alert_webhook_url, alert, ca_bundle=settings.http_ca_bundle):
        raise MarketdataError(f"the webhook at {shown} did not accept the test alert")
    return shown


def deliver_now(url: str, alert: Alert, *, ca_bundle: Path | None = None) -> bool:
    """POST one alert and wait for the answer (with the usual retries), whatever the
    threshold: for commands whose whole job is that alert. True when the webhook took it."""
    sink = WebhookAlerts(url, "info", ca_bundle=ca_bundle)
    try:
        return sink.deliver(alert)
    finally:
        sink.close()
