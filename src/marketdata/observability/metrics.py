"""Metrics sinks: the Metrics protocol, statsd over UDP, a null sink and a recording one."""

from __future__ import annotations

import threading
from typing import Protocol


class Metrics(Protocol):
    """Where counters, gauges and timings go. Must never fail or slow a run."""

    def incr(self, name: str, value: int = 1) -> None:
        """Add to a counter."""

    def gauge(self, name: str, value: float) -> None:
        """Set a gauge."""

    def timing(self, name: str, ms: float) -> None:
        """Record a duration in milliseconds."""


class NullMetrics:
    """Discards everything (no STATSD_HOST configured)."""

    def incr(self, name: str, value: int = 1) -> None:
        """Discard."""

    def gauge(self, name: str, value: float) -> None:
        """Discard."""

    def timing(self, name: str, ms: float) -> None:
        """Discard."""


class RecordingMetrics:
    """Keeps what it was sent, for tests and for the run summary."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: dict[str, int] = {}
        self.gauges: dict[str, float] = {}
        self.timings: dict[str, list[float]] = {}

    def incr(self, name: str, value: int = 1) -> None:
        """Add to a counter."""
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + value

    def gauge(self, name: str, value: float) -> None:
        """Set a gauge."""
        with self._lock:
            self.gauges[name] = value

    def timing(self, name: str, ms: float) -> None:
        """Record a duration."""
        with self._lock:
            self.timings.setdefault(name, []).append(ms)


class StatsdMetrics:
    """Plain (Etsy) statsd over UDP; names are prefixed, e.g. marketdata.ingestion.success."""

    def __init__(self, host: str, port: int, prefix: str) -> None:
        from statsd import StatsClient

        self._client = StatsClient(host=host, port=port, prefix=prefix or None)

    def incr(self, name: str, value: int = 1) -> None:
        """Add to a counter."""
        self._client.incr(name, value)

    def gauge(self, name: str, value: float) -> None:
        """Set a gauge."""
        self._client.gauge(name, value)

    def timing(self, name: str, ms: float) -> None:
        """Record a duration."""
        self._client.timing(name, ms)

    def close(self) -> None:
        """Close the UDP socket."""
        self._client.close()
