"""The background refresher of committed pairs' keys: what it writes is what the database
holds; when it cannot read, or the run was stopped, it drops the keys rather than leave values
older than the database for readers to trust."""

from __future__ import annotations

import threading
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest

from marketdata.cache.keys import latest_key, show_key
from marketdata.cache.market import Committed
from marketdata.cache.refresher import Refresher
from marketdata.domain import Interval
from marketdata.pipeline import IngestRequest, run_ingest
from marketdata.storage.engine import connect
from tests.fakes.redis_server import spare_port

NOW = datetime(2024, 4, 10, 12, 0, tzinfo=UTC)
KEYS = [show_key("BTC-USD", "1d"), latest_key("BTC-USD", "1d")]


@pytest.fixture(params=["disk", "redis"])
def make_app(request, app_factory, tmp_path):
    overrides = {"cache_dir": str(tmp_path / "cache"), "cache_prefix": f"t:{uuid.uuid4().hex}:"}
    if request.param == "redis":
        overrides["redis_url"] = request.getfixturevalue("redis_url")

    built = []

    def build(**more):
        app = app_factory(**{**overrides, **more})
        app.clock = lambda: NOW
        built.append(app)
        return app

    yield build
    for app in built:  # closing flushes the hit and miss counters: before the cleaning
        app.close()
    cleaner = app_factory(**overrides)
    cleaner.cache.delete_pattern("*")
    cleaner.close()


def ingested(app):
    """BTC-USD stored, and its keys written by the run."""
    request = IngestRequest(symbols=["BTC-USD"], providers=["synthetic"], lookback_days=30)
    run_ingest(app, request)
    assert all(app.cache.get(key) is not None for key in KEYS)


def test_a_refresher_that_cannot_reach_the_database_drops_the_pairs_keys(make_app, caplog_warnings):
    app = make_app()
    ingested(app)
    down = make_app(database_url=f"postgresql://u@127.0.0.1:{spare_port()}/gone")
    refresher = Refresher(app.cache, lambda: connect(down.engine(), down.target), app.settings)
    refresher.submit(Committed("BTC-USD", Interval.D1, NOW))
    refresher.drain()
    assert [app.cache.get(key) for key in KEYS] == [None, None]
    assert len([w for w in caplog_warnings if "cache not refreshed for 1 pairs" in w]) == 1


def test_a_stopped_run_drops_the_keys_of_pairs_not_refreshed_yet(make_app):
    app = make_app()
    ingested(app)
    gate, entered = threading.Event(), threading.Event()

    @contextmanager
    def held_connection():
        entered.set()
        gate.wait(10)  # the refresher holds the pair while the run is stopped
        with connect(app.engine(), app.target) as conn:
            yield conn

    refresher = Refresher(app.cache, held_connection, app.settings)
    refresher.submit(Committed("BTC-USD", Interval.D1, NOW))
    assert entered.wait(10)
    stopping = threading.Thread(target=refresher.drain, kwargs={"abandon": True})
    stopping.start()
    while not refresher._abandon.is_set():  # the stop reached the refresher
        stopping.join(0.01)
    gate.set()
    stopping.join(10)
    assert not stopping.is_alive()
    assert [app.cache.get(key) for key in KEYS] == [None, None]


def test_a_refresh_writes_what_the_database_holds(make_app):
    app = make_app()
    ingested(app)
    app.cache.set_many({}, drop=KEYS)
    refresher = Refresher(app.cache, lambda: connect(app.engine(), app.target), app.settings)
    refresher.submit(Committed("BTC-USD", Interval.D1, NOW))
    refresher.drain()
    with connect(app.engine(), app.target) as conn:
        from marketdata.storage.candles import read_candles

        newest = read_candles(conn, "BTC-USD", Interval.D1, last=1)
    assert app.cache.get(latest_key("BTC-USD", "1d"))["ts"] == int(newest.ts[-1])
    assert app.cache.get(show_key("BTC-USD", "1d"))["newest"] == int(newest.ts[-1])


def test_pairs_are_written_in_full_groups_and_the_end_does_not_wait_out_the_window(
    make_app, monkeypatch
):
    import time

    from marketdata.cache import refresher as module

    monkeypatch.setattr(module, "GATHER_SECONDS", 60.0)  # only a full group or the end wakes it
    app = make_app()
    ingested(app)
    groups: list[int] = []

    @contextmanager
    def counted():  # one connection per group of pairs that need a read
        groups.append(1)
        with connect(app.engine(), app.target) as conn:
            yield conn

    refresher = Refresher(app.cache, counted, app.settings)
    started = time.monotonic()
    for _ in range(module.GATHER_PAIRS * 2 + 20):
        refresher.submit(Committed("BTC-USD", Interval.D1, NOW))
    refresher.drain()
    assert time.monotonic() - started < 30
    assert len(groups) == 3
    assert app.cache.get(latest_key("BTC-USD", "1d")) is not None
