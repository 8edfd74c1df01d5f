"""statsd metrics over real UDP: a run's counters, timers and gauges arrive with the prefix."""

from __future__ import annotations

import socket
from datetime import UTC, datetime

from marketdata.config import load_settings
from marketdata.context import AppContext, build_metrics
from marketdata.observability.metrics import NullMetrics
from marketdata.pipeline import IngestRequest, run_ingest


def listen() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2)
    return sock


def received(sock: socket.socket) -> list[str]:
    lines: list[str] = []
    try:
        while True:
            lines += sock.recv(65_535).decode().splitlines()
    except TimeoutError:
        return lines


def test_a_run_sends_its_metrics_to_statsd_over_udp(database_url):
    with listen() as sock:
        port = sock.getsockname()[1]
        loaded = load_settings(
            {
                "database_url": database_url,
                "statsd_host": "127.0.0.1",
                "statsd_port": port,
                "ingestion_provider": "synthetic",
                "ingestion_lookback_days": 5,
            },
            environ={},
        )
        app = AppContext(loaded, metrics=build_metrics(loaded.settings))
        app.clock = lambda: datetime(2024, 3, 1, 12, tzinfo=UTC)
        try:
            run_ingest(app, IngestRequest(symbols=["BTC-USD"]))
        finally:
            app.close()
        sock.settimeout(0.5)
        lines = received(sock)
    assert "marketdata.ingestion.success:1|c" in lines
    assert "marketdata.ingestion.rows_written:6|c" in lines
    assert any(
        line.startswith("marketdata.ingestion.duration_ms:") and line.endswith("|ms")
        for line in lines
    )
    gauge = next(
        line for line in lines if line.startswith("marketdata.ingestion.last_success_timestamp:")
    )
    assert (
        gauge.endswith("|g")
        and float(gauge.split(":")[1].split("|")[0])
        == datetime(2024, 3, 1, 12, tzinfo=UTC).timestamp()
    )


def test_without_a_statsd_host_metrics_are_off():
    assert isinstance(build_metrics(load_settings(environ={}).settings), NullMetrics)
