"""Redis failing for real (a private server stopped mid-run, a wrong password, a port with
nothing listening, out of memory): one warning, a successful run, the same database."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from marketdata.cache.keys import latest_key
from marketdata.config import load_settings
from marketdata.context import AppContext
from marketdata.domain import RunStatus
from marketdata.pipeline import IngestRequest, run_ingest
from marketdata.storage.engine import connect
from marketdata.storage.schema import candles
from tests.fakes.redis_server import private_redis, spare_port

NOW = datetime(2024, 4, 10, 12, 0, tzinfo=UTC)
SYMBOLS = ["BTC-USD", "ETH-USD", "SOL-USD"]


@pytest.fixture
def warnings(caplog_warnings):
    return caplog_warnings


@pytest.fixture
def make_app(app_factory, tmp_path):
    def build(**overrides):
        app = app_factory(
            cache_dir=str(tmp_path / "disk-cache"), ingestion_concurrency=1, **overrides
        )
        app.clock = lambda: NOW
        return app

    return build


class StopAfterFirstPair:
    """A progress listener that stops Redis once the first pair is stored (mid-run)."""

    def __init__(self, server):
        self.server = server
        self.done = 0

    def started(self, pairs):
        pass

    def pair_done(self, outcome):
        self.done += 1
        if self.done == 1:
            self.server.stop()


def ingest(app, progress=None):
    request = IngestRequest(symbols=SYMBOLS, providers=["synthetic"], lookback_days=20)
    started = time.perf_counter()
    result = run_ingest(app, request, progress)
    return result, time.perf_counter() - started


def stored(app):
    c = candles.c
    query = sa.select(c.symbol, c.interval, c.ts, c.open, c.high, c.low, c.close, c.volume)
    with connect(app.engine(), app.target) as conn:
        return [tuple(row) for row in conn.execute(query.order_by(c.symbol, c.ts))]


@pytest.fixture
def without_redis(tmp_path):
    """What the same run stores with no Redis configured (a database of its own), and how
    long it takes."""
    url = f"sqlite:///{tmp_path / 'baseline.sqlite3'}"
    app = AppContext(load_settings({"database_url": url, "ingestion_concurrency": 1}, environ={}))
    app.clock = lambda: NOW
    result, seconds = ingest(app)
    assert result.status is RunStatus.SUCCESS
    rows = stored(app)
    app.close()
    return rows, seconds


def assert_degraded_once(app, warnings, result, seconds, without_redis):
    rows, baseline_seconds = without_redis
    assert result.status is RunStatus.SUCCESS
    redis_lines = [w for w in warnings if w.startswith("Redis client error:")]
    assert len(redis_lines) == 1, warnings
    assert app.metrics.counters["cache.fallback"] == 1
    assert [(a.severity, a.title) for a in app.alerts.sent] == [("warning", "Redis unavailable")]
    assert stored(app) == rows
    # a loose sanity bound (the benchmark measures the real cost): no multi-second waits
    assert seconds < baseline_seconds + 3.0
    return redis_lines[0]


def test_redis_stopped_in_the_middle_of_a_run_falls_back_to_disk_once(
    make_app, tmp_path, warnings, without_redis
):
    with private_redis(tmp_path) as server:
        app = make_app(redis_url=server.url())
        result, seconds = ingest(app, StopAfterFirstPair(server))
    line = assert_degraded_once(app, warnings, result, seconds, without_redis)
    assert "Connection" in line or "Error" in line
    # the pairs after the outage were cached on disk (the first one too when the run's
    # refresher wrote its keys after the outage began)
    disk = app.cache.backend
    assert disk.name == "disk"
    on_disk = [s for s in SYMBOLS if disk.get(latest_key(s, "1d")) is not None]
    assert set(SYMBOLS[1:]) <= set(on_disk)


def test_a_wrong_redis_password_falls_back_to_disk_once_without_showing_it(
    make_app, tmp_path, warnings, without_redis
):
    with private_redis(tmp_path, password="the-right-secret") as server:
        app = make_app(redis_url=server.url(password="a-wrong-secret"))
        result, seconds = ingest(app)
    line = assert_degraded_once(app, warnings, result, seconds, without_redis)
    assert "AuthenticationError" in line
    assert not any("a-wrong-secret" in w for w in warnings)
    assert app.cache.backend.get(latest_key("BTC-USD", "1d")) is not None


def test_a_port_with_nothing_listening_falls_back_to_disk_once(make_app, warnings, without_redis):
    app = make_app(redis_url=f"redis://127.0.0.1:{spare_port()}/0")
    result, seconds = ingest(app)
    line = assert_degraded_once(app, warnings, result, seconds, without_redis)
    assert "ConnectionError" in line


def test_redis_out_of_memory_falls_back_to_disk_once(make_app, tmp_path, warnings, without_redis):
    with private_redis(tmp_path) as server:
        import redis

        admin = redis.Redis.from_url(server.url())
        admin.config_set("maxmemory", 1)  # any write is now refused with OOM
        admin.close()
        app = make_app(redis_url=server.url())
        result, seconds = ingest(app)
    line = assert_degraded_once(app, warnings, result, seconds, without_redis)
    assert line.startswith("Redis client error: OutOfMemoryError: command not allowed when used")


def test_an_unusable_disk_cache_after_redis_failed_runs_uncached_with_one_more_warning(
    app_factory, tmp_path, warnings, without_redis
):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    app = app_factory(
        cache_dir=str(blocker / "cache"),
        ingestion_concurrency=1,
        redis_url=f"redis://127.0.0.1:{spare_port()}/0",
    )
    app.clock = lambda: NOW
    result, seconds = ingest(app)
    assert_degraded_once(app, warnings, result, seconds, without_redis)
    disk_lines = [w for w in warnings if w.startswith("disk cache unusable")]
    assert len(disk_lines) == 1 and len(warnings) == 2, warnings
    assert app.cache.backend.name == "none"


def test_an_unusable_disk_cache_without_redis_runs_uncached_with_one_warning(
    app_factory, tmp_path, warnings, without_redis
):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    app = app_factory(cache_dir=str(blocker / "cache"), ingestion_concurrency=1)
    app.clock = lambda: NOW
    result, _ = ingest(app)
    assert result.status is RunStatus.SUCCESS
    assert stored(app) == without_redis[0]
    assert [w for w in warnings if "disk cache unusable" in w] == warnings and len(warnings) == 1


def test_a_redis_that_never_answers_costs_one_timeout_then_disk(make_app, warnings, without_redis):
    import socket

    with socket.socket() as silent:  # accepts connections (the kernel's backlog), never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        app = make_app(redis_url=f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        result, seconds = ingest(app)
    line = assert_degraded_once(app, warnings, result, seconds, without_redis)
    assert "TimeoutError" in line
