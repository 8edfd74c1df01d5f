"""Candle writes are idempotent and rewrite only what changed, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from marketdata.domain import Candles, Interval
from marketdata.storage.candles import (
    count_candles,
    last_ts,
    last_ts_many,
    read_candles,
    write_candles,
)
from marketdata.storage.engine import connect

NOW = datetime(2024, 6, 1, tzinfo=UTC)
START = 1_704_067_200


def batch(n: int, *, start: int = START, close: float = 1.5, symbol: str = "BTC-USD") -> Candles:
    ts = start + np.arange(n, dtype=np.int64) * 60
    return Candles.from_columns(
        symbol,
        Interval.M1,
        "coinbase",
        ts,
        np.full(n, 1.0),
        np.full(n, 2.0),
        np.full(n, 0.5),
        np.full(n, close),
        np.arange(n, dtype=np.float64),
    )


def write(app, candles):
    with connect(app.engine(), app.target) as conn, conn.begin():
        return write_candles(conn, candles, NOW)


def test_first_write_inserts_every_row(app_factory):
    app = app_factory()
    stats = write(app, batch(500))
    assert (stats.inserted, stats.updated, stats.unchanged) == (500, 0, 0)
    with connect(app.engine(), app.target) as conn:
        assert count_candles(conn) == 500
        assert last_ts(conn, "BTC-USD", Interval.M1) == START + 499 * 60


def test_rewriting_the_same_rows_changes_nothing(app_factory):
    app = app_factory()
    write(app, batch(300))
    stats = write(app, batch(300))
    assert (stats.inserted, stats.updated, stats.unchanged) == (0, 0, 300)
    with connect(app.engine(), app.target) as conn:
        assert count_candles(conn) == 300


def test_a_corrected_candle_overwrites_the_stored_one_without_duplicates(app_factory):
    app = app_factory()
    write(app, batch(100))
    corrected = batch(100)
    corrected.close[42] = 1.75
    stats = write(app, corrected)
    assert (stats.inserted, stats.updated, stats.unchanged) == (0, 1, 99)
    with connect(app.engine(), app.target) as conn:
        stored = read_candles(conn, "BTC-USD", Interval.M1)
    assert len(stored) == 100
    assert stored.close[42] == 1.75 and stored.close[41] == 1.5


def test_overlap_with_new_rows_and_a_filled_hole(app_factory):
    app = app_factory()
    first = batch(50)
    write(app, first.take(np.arange(50) != 10))  # leave a hole at row 10
    stats = write(app, batch(80))
    assert (stats.inserted, stats.updated, stats.unchanged) == (31, 0, 49)
    with connect(app.engine(), app.target) as conn:
        stored = read_candles(conn, "BTC-USD", Interval.M1)
    assert stored.ts.tolist() == (START + np.arange(80) * 60).tolist()


def test_read_last_n_returns_the_newest_in_ascending_order(app_factory):
    app = app_factory()
    write(app, batch(20))
    with connect(app.engine(), app.target) as conn:
        tail = read_candles(conn, "BTC-USD", Interval.M1, last=3)
    assert tail.ts.tolist() == [START + 17 * 60, START + 18 * 60, START + 19 * 60]
    assert tail.volume.tolist() == [17.0, 18.0, 19.0]


def test_a_failed_transaction_leaves_the_pair_untouched(app_factory):
    app = app_factory()
    write(app, batch(10))
    try:
        with connect(app.engine(), app.target) as conn, conn.begin():
            write_candles(conn, batch(20, close=1.9), NOW)
            raise RuntimeError("crash mid-pair")
    except RuntimeError:
        pass
    with connect(app.engine(), app.target) as conn:
        stored = read_candles(conn, "BTC-USD", Interval.M1)
    assert len(stored) == 10 and set(stored.close.tolist()) == {1.5}


def test_the_last_stored_candle_of_many_pairs_comes_from_one_lookup(app_factory):
    app = app_factory()
    write(app, batch(500))
    write(app, batch(20, start=START + 3600, symbol="ETH-USD"))
    with connect(app.engine(), app.target) as conn:
        lasts = last_ts_many(conn, ["BTC-USD", "ETH-USD", "SOL-USD"], Interval.M1)
        other = last_ts_many(conn, ["BTC-USD"], Interval.H1)
    assert lasts == {
        "BTC-USD": START + 499 * 60,
        "ETH-USD": START + 3600 + 19 * 60,
        "SOL-USD": None,
    }
    assert other == {"BTC-USD": None}
