"""Candle writes are idempotent and rewrite only what changed, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from marketdata.analytics.indicators import INDICATOR_NAMES
from marketdata.domain import Candles, Interval
from marketdata.storage.candles import (
    count_candles,
    last_ts,
    last_ts_many,
    read_candles,
    read_latest_many,
    stored_holes,
    stored_timestamps,
    stored_values,
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


def test_undefined_indicators_that_come_and_go_are_stored_row_by_row(app_factory):
    """Rows are copied in runs sharing their undefined (NULL) indicators: a run that comes
    back after another (an indicator undefined for a while mid-history, as a flat market's
    RSI is) keeps its own values and nulls."""
    rows = batch(10)
    flat = [3, 4, 8]  # rows where one indicator is undefined, between rows where it is not
    values = {k: np.arange(10, dtype=np.float64) + i for i, k in enumerate(INDICATOR_NAMES)}
    values[INDICATOR_NAMES[0]][flat] = np.nan
    app = app_factory()
    assert write(app, rows.with_indicators(values)).inserted == 10
    with connect(app.engine(), app.target) as conn:
        stored = read_candles(conn, "BTC-USD", Interval.M1, with_indicators=True)
    assert stored.indicators is not None
    for name in INDICATOR_NAMES:
        np.testing.assert_array_equal(stored.indicators[name], values[name], err_msg=name)


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


def hourly(symbol: str, start: int, closes: list[float]) -> Candles:
    """One hourly candle per close from `start`, each row's prices distinct from the others'."""
    n = len(closes)
    close = np.array(closes)
    return Candles.from_columns(
        symbol,
        Interval.H1,
        "coinbase",
        start + np.arange(n, dtype=np.int64) * 3600,
        close - 0.25,
        close + 1.0,
        close - 0.5,
        close,
        close * 10,
    )


def test_stored_values_are_those_of_the_batches_pairs_interval_and_time_span(app_factory):
    """What the pipeline compares a small fetched batch with to record it unchanged: the
    stored rows of that pair and interval, from its first to its last time inclusive, and
    no other rows (not another interval's row inside that span)."""
    app = app_factory()
    for minute in (0, 59, 61, 62):  # BTC-USD 1m; minute 60 is not stored
        write(app, batch(1, start=START + minute * 60))
    write(app, hourly("BTC-USD", START, [10.0, 11.0, 12.0, 13.0, 14.0]))
    write(app, hourly("ETH-USD", START, [20.0, 21.0, 22.0]))
    asked_1m = batch(3, start=START + 59 * 60)  # minutes 59 to 61
    asked_1h = hourly("BTC-USD", START + 3600, [0.0, 0.0])  # hours 1 and 2
    # batches without rows are skipped whatever their interval's place in the set
    nothing = [
        Candles.empty("BTC-USD", iv, "coinbase")
        for iv in (Interval.M5, Interval.M15, Interval.H6, Interval.D1)
    ]
    with connect(app.engine(), app.target) as conn:
        found = stored_values(conn, [*nothing, asked_1m, asked_1h])
        alone = stored_values(conn, nothing)
    minute = {("BTC-USD", "1m", START + m * 60): (1.0, 2.0, 0.5, 1.5, 0.0) for m in (59, 61)}
    hour = {
        ("BTC-USD", "1h", START + i * 3600): (c - 0.25, c + 1.0, c - 0.5, c, c * 10)
        for i, c in ((1, 11.0), (2, 12.0))
    }
    assert found == minute | hour
    assert alone == {}


def test_stored_timestamps_are_one_pairs_ascending(app_factory):
    app = app_factory()
    write(app, batch(3, start=START + 600))  # written before the earlier rows
    write(app, batch(3))
    write(app, batch(3, close=2.5))  # corrected: PostgreSQL stores new row versions last
    write(app, batch(2, symbol="ETH-USD"))
    write(app, hourly("BTC-USD", START, [1.0, 2.0]))
    with connect(app.engine(), app.target) as conn:
        stamps = stored_timestamps(conn, "BTC-USD", Interval.M1)
    expected = [START, START + 60, START + 120, START + 600, START + 660, START + 720]
    assert stamps.dtype == np.int64 and stamps.tolist() == expected


def test_stored_holes_are_one_pairs_gaps_of_more_than_a_bar_in_time_order(app_factory):
    """The gaps the backfill looks for: (before, after) of consecutive stored candles more
    than one bar apart, oldest first; another symbol's or interval's rows fill no hole."""
    app = app_factory()
    for minutes in ([10], [0, 1, 2], [5, 6]):  # the latest written first
        for m in minutes:
            write(app, batch(1, start=START + m * 60))
    write(app, batch(1, start=START + 3 * 60, symbol="ETH-USD"))
    write(app, hourly("BTC-USD", START + 7 * 60, [1.0]))  # off the hour grid, inside a hole
    write(app, batch(1, start=START + 6 * 60, close=2.5))  # corrected: a new row version
    with connect(app.engine(), app.target) as conn:
        before, after = stored_holes(conn, "BTC-USD", Interval.M1)
        none = stored_holes(conn, "ETH-USD", Interval.M1)
    assert before.tolist() == [START + 120, START + 360]
    assert after.tolist() == [START + 300, START + 600]
    assert before.dtype == after.dtype == np.int64
    assert [len(side) for side in none] == [0, 0]


@pytest.mark.parametrize("with_indicators", [False, True])
def test_the_newest_candles_of_many_pairs_equal_each_pairs_own_read(app_factory, with_indicators):
    """The cache refresher's read of many pairs at once: for each stored pair the same rows
    as reading that pair alone (a stale pair, whose newest rows are months old, included);
    pairs with nothing stored are absent."""
    app = app_factory()
    write(app, batch(5))
    write(app, batch(3, start=START - 100 * 86_400, symbol="ETH-USD"))  # stale
    write(app, hourly("BTC-USD", START - 7200, [10.0, 11.0]))
    pairs = [("BTC-USD", Interval.M1), ("ETH-USD", Interval.M1), ("BTC-USD", Interval.H1)]
    with connect(app.engine(), app.target) as conn:
        found = read_latest_many(
            conn,
            [*pairs, ("SOL-USD", Interval.M1)],
            3,
            now=START + 5 * 60,
            with_indicators=with_indicators,
        )
        alone = {
            (s, iv): read_candles(conn, s, iv, last=3, with_indicators=with_indicators)
            for s, iv in pairs
        }
    _assert_each_as_read_alone(found, alone, with_indicators)


def test_the_newest_candles_of_one_symbol_at_two_intervals_interleaved_in_time(app_factory):
    """Rows of BTC-USD 1h and 1m read together whose times interleave (an hourly candle
    between two minute ones, another at the same time as one): each pair gets its own rows,
    not the runs of a sort by time alone."""
    app = app_factory()
    write(app, hourly("BTC-USD", START, [10.0, 11.0, 12.0]))  # START, +1 h, +2 h
    write(app, batch(3, start=START + 7140))  # +1:59, +2:00, +2:01
    pairs = [("BTC-USD", Interval.M1), ("BTC-USD", Interval.H1)]
    with connect(app.engine(), app.target) as conn:
        found = read_latest_many(conn, pairs, 3, now=START + 7300)
        alone = {(s, iv): read_candles(conn, s, iv, last=3) for s, iv in pairs}
    _assert_each_as_read_alone(found, alone, with_indicators=False)
    assert found["BTC-USD", Interval.H1].ts.tolist() == [START, START + 3600, START + 7200]


def test_pairs_read_together_each_name_the_provider_of_their_newest_row(app_factory):
    """A pair whose newest row came from another provider than the rows before it, beside a
    pair of one row: each pair read together names its own newest row's provider."""
    from dataclasses import replace

    app = app_factory()
    write(app, batch(3))  # coinbase
    write(app, replace(batch(1, start=START + 180), provider="kraken"))
    write(app, replace(batch(1, symbol="ETH-USD"), provider="binance"))
    pairs = [("BTC-USD", Interval.M1), ("ETH-USD", Interval.M1)]
    with connect(app.engine(), app.target) as conn:
        found = read_latest_many(conn, pairs, 3, now=START + 240)
    assert {pair: candles.provider for pair, candles in found.items()} == {
        ("BTC-USD", Interval.M1): "kraken",
        ("ETH-USD", Interval.M1): "binance",
    }


def _assert_each_as_read_alone(found, alone, with_indicators):
    """A many-pair read found exactly the pairs read alone, each with the same rows,
    provider, and indicators only when asked for."""
    assert set(found) == set(alone)
    for pair, candles in alone.items():
        assert list(found[pair].rows()) == list(candles.rows()), pair
        assert found[pair].provider == candles.provider
        assert (found[pair].indicators is None) is (not with_indicators)


def test_the_newest_candles_of_more_pairs_than_one_statement_holds_are_all_read(app_factory):
    app = app_factory()
    symbols = [f"S{i:03d}-USD" for i in range(101)]  # one statement reads 100 pairs
    for i, symbol in enumerate(symbols):
        write(app, batch(1, start=START + i * 60, symbol=symbol))
    with connect(app.engine(), app.target) as conn:
        found = read_latest_many(conn, [(s, Interval.M1) for s in symbols], 2, now=START)
    assert sorted(s for s, _ in found) == symbols
    assert all(candles.indicators is None for candles in found.values())  # not asked for
    assert all(found[s, Interval.M1].ts.tolist() == [START + i * 60] for i, s in enumerate(symbols))


def daily(symbol: str, days: list[str]) -> Candles:
    """One daily candle per ISO date, each with its own close (1.0, 2.0, ...)."""
    ts = [int(datetime.fromisoformat(f"{d}T00:00:00+00:00").timestamp()) for d in days]
    rows = [(t, 1.0, 9.0, 0.5, float(i + 1), 1.0) for i, t in enumerate(ts)]
    return Candles.from_rows(symbol, Interval.D1, "coinbase", rows)


def test_the_candle_before_a_time_is_the_single_newest_before_it_wherever_it_lies(app_factory):
    """The report's previous close: the one newest candle strictly before the time, found
    in the time's own partition (a year of daily bars) or, when that has none before it, in
    an earlier one; never a candle at or after the time, and nothing when none is before."""
    from marketdata.storage.candles import candle_before

    app = app_factory()
    write(app, daily("BTC-USD", ["2023-11-01", "2023-12-01", "2023-12-05", "2024-03-01"]))
    write(app, daily("ETH-USD", ["2024-01-10", "2024-02-20", "2024-03-01", "2024-03-10"]))
    write(app, daily("SOL-USD", ["2024-03-01", "2024-03-02"]))
    march = int(datetime(2024, 3, 1, tzinfo=UTC).timestamp())
    with connect(app.engine(), app.target) as conn:
        earlier = candle_before(conn, "BTC-USD", Interval.D1, march)
        same_year = candle_before(conn, "ETH-USD", Interval.D1, march)
        none = candle_before(conn, "SOL-USD", Interval.D1, march)
    december_5 = int(datetime(2023, 12, 5, tzinfo=UTC).timestamp())
    assert (earlier.ts.tolist(), earlier.close.tolist()) == ([december_5], [3.0])
    february_20 = int(datetime(2024, 2, 20, tzinfo=UTC).timestamp())
    assert (same_year.ts.tolist(), same_year.close.tolist()) == ([february_20], [2.0])
    assert len(none) == 0


@pytest.mark.parametrize(
    ("before", "stored", "floor"),
    [
        # a partition's start: the one before it holds before - 1
        ("2024-01-01T00:00:00", "2023-12-31", "2023-01-01"),
        # a second past one: before - 1 is the start of its own partition
        ("2024-01-01T00:00:01", "2024-01-01", "2024-01-01"),
    ],
)
def test_the_candle_before_a_time_is_read_from_the_partition_of_the_second_before_it(
    app_factory, before, stored, floor
):
    """`candle_before` finds a candle in the partition holding `before - 1` with one read,
    bounded below by that partition's start (PostgreSQL plans that partition alone)."""
    from marketdata.storage.candles import candle_before

    app = app_factory()
    write(app, daily("BTC-USD", ["2022-06-01", stored]))
    at = int(datetime.fromisoformat(f"{before}+00:00").timestamp())
    lowest = datetime.fromisoformat(f"{floor}T00:00:00+00:00")
    engine = app.engine()
    with connect(engine, app.target) as conn, selects(engine) as seen:
        found = candle_before(conn, "BTC-USD", Interval.D1, at)
    assert found.ts.tolist() == [
        int(datetime.fromisoformat(f"{stored}T00:00:00+00:00").timestamp())
    ]
    assert _bounded(seen) == [True]
    assert _bound(lowest) & set(seen[0][1])


def _bound(moment: datetime) -> set[Any]:
    """A time as the driver gets it bound: a datetime (psycopg), or SQLite's text of it."""
    return {moment, moment.strftime("%Y-%m-%d %H:%M:%S.%f")}


def test_an_overlap_is_compared_with_the_stored_rows_of_its_span_alone(app_factory):
    """Rows 3 to 5 of ten stored ones written again with a new close: those three are
    updated. On SQLite the merge reads the stored rows from the overlap's first time to its
    last (bounded on both sides), not the pair's whole history; PostgreSQL's merge joins a
    staged copy instead."""
    from marketdata.domain import utc_from_epoch

    app = app_factory()
    write(app, batch(10))
    again = batch(10, close=1.75).take(slice(3, 6))
    engine = app.engine()
    with selects(engine) as seen:
        stats = write(app, again)
    assert (stats.inserted, stats.updated, stats.unchanged) == (0, 3, 0)
    if engine.dialect.name == "sqlite":
        spans = [set(bound) for statement, bound in seen if "ts >=" in statement]
        low, high = utc_from_epoch(int(again.ts[0])), utc_from_epoch(int(again.ts[-1]) + 1)
        assert any(_bound(low) & span and _bound(high) & span for span in spans)


def test_a_recompute_reads_only_the_stored_rows_it_may_update(app_factory):
    """`update_indicators` compares new values with the stored rows from its first time to
    its last (one read bounded on both sides), not with the pair's whole history."""
    from marketdata.domain import utc_from_epoch
    from marketdata.storage.candles import update_indicators

    app = app_factory()
    write(app, batch(10))
    ts = START + np.arange(3, 6, dtype=np.int64) * 60
    values = {name: np.full(3, 0.25) for name in INDICATOR_NAMES}
    engine = app.engine()
    with connect(engine, app.target) as conn, conn.begin(), selects(engine) as seen:
        assert update_indicators(conn, "BTC-USD", Interval.M1, ts, values) == 3
    assert len(seen) == 1
    statement, bound = seen[0]
    assert "ts >=" in statement and "ts <" in statement.replace("ts <=", "")
    assert _bound(utc_from_epoch(int(ts[0]))) & set(bound)
    assert _bound(utc_from_epoch(int(ts[-1]) + 1)) & set(bound)


def test_timestamps_and_holes_come_in_time_order_whatever_order_the_rows_were_written(app_factory):
    """A pair's rows written middle third first, then the oldest, then the newest, with
    statistics that make PostgreSQL read the whole pair by a sequential scan (in the order
    the rows lie on disk): the stored timestamps, and the holes found between consecutive
    ones, are still in time order, and no hole is seen where the rows are complete."""
    app = app_factory()
    n = 4500
    full = batch(n)
    keep = np.ones(n, dtype=bool)
    keep[[100, 101, 2500]] = False  # two holes: in the first and the middle third
    rows = full.take(keep)
    cuts = np.searchsorted(rows.ts, [START + 1500 * 60, START + 3000 * 60]).tolist()
    write(app, rows.take(slice(cuts[0], cuts[1])))
    write(app, rows.take(slice(0, cuts[0])))
    write(app, rows.take(slice(cuts[1], None)))
    with connect(app.engine(), app.target) as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("ANALYZE candles")
        stamps = stored_timestamps(conn, "BTC-USD", Interval.M1)
        before, after = stored_holes(conn, "BTC-USD", Interval.M1)
    assert stamps.tolist() == rows.ts.tolist()
    assert before.tolist() == [START + 99 * 60, START + 2499 * 60]
    assert after.tolist() == [START + 102 * 60, START + 2501 * 60]


@pytest.mark.parametrize("with_indicators", [False, True])
def test_every_candle_of_several_pairs_equals_each_pairs_own_read(app_factory, with_indicators):
    """The cache rebuild's read of whole pairs at once: each asked pair's rows as read alone,
    with derived values only when asked; a pair not asked for (the same symbol at another
    interval) is neither returned nor mixed into an asked one."""
    from marketdata.storage.candles import read_pairs

    app = app_factory()
    write(app, batch(5))
    write(app, batch(3, symbol="ETH-USD"))
    write(app, hourly("ETH-USD", START, [10.0, 11.0]))
    write(app, hourly("BTC-USD", START, [20.0, 21.0]))  # not asked for
    pairs = [("BTC-USD", Interval.M1), ("ETH-USD", Interval.M1), ("ETH-USD", Interval.H1)]
    with connect(app.engine(), app.target) as conn:
        found = read_pairs(
            conn, [*pairs, ("SOL-USD", Interval.M1)], with_indicators=with_indicators
        )
        alone = {
            (s, iv): read_candles(conn, s, iv, with_indicators=with_indicators) for s, iv in pairs
        }
    _assert_each_as_read_alone(found, alone, with_indicators)


def test_a_batch_from_the_newest_stored_candle_on_rewrites_it_and_adds_the_rest(app_factory):
    """An incremental run's usual batch: the newest stored candle fetched again (corrected,
    as a bar still forming at the last run is), then new ones."""
    app = app_factory()
    write(app, batch(10))
    again = batch(6, start=START + 9 * 60, close=1.75)  # from the newest stored on
    stats = write(app, again)
    assert (stats.inserted, stats.updated, stats.unchanged) == (5, 1, 0)
    with connect(app.engine(), app.target) as conn:
        stored = read_candles(conn, "BTC-USD", Interval.M1)
    assert stored.ts.tolist() == (START + np.arange(15) * 60).tolist()
    assert stored.close.tolist() == [1.5] * 9 + [1.75] * 6


def test_writes_and_corrections_across_several_time_partitions(app_factory):
    """Minute bars are kept in a partition per month on PostgreSQL: a batch whose first and
    last rows each fall in a month of their own is stored whole, and corrections of rows in
    two months, and in three, are written to each row."""

    def at(moment: str) -> int:
        return int(datetime.fromisoformat(f"{moment}+00:00").timestamp())

    def rows(closes: list[float]) -> Candles:
        stamps = [at("2023-12-31T23:59:00"), at("2024-01-15T12:00:00"), at("2024-02-01T00:00:00")]
        return Candles.from_rows(
            "BTC-USD",
            Interval.M1,
            "coinbase",
            [(t, c, c + 1, c - 1, c, 1.0) for t, c in zip(stamps, closes, strict=False)],
        )

    app = app_factory()
    assert write(app, rows([10.0, 20.0, 30.0])).inserted == 3
    assert write(app, rows([11.0, 21.0])).updated == 2  # a batch of December and January
    assert write(app, rows([12.0, 22.0, 32.0])).updated == 3
    with connect(app.engine(), app.target) as conn:
        stored = read_candles(conn, "BTC-USD", Interval.M1)
    assert stored.ts.tolist() == rows([0.0, 0.0, 0.0]).ts.tolist()
    assert stored.close.tolist() == [12.0, 22.0, 32.0]
    assert stored.high.tolist() == [13.0, 23.0, 33.0]


def test_the_newest_candles_of_a_pair_current_or_stale_are_the_last_n(app_factory):
    """`show`'s read: the newest N candles of a pair, ascending, whether its rows are recent
    (read from the newest partitions) or months old (read again without that bound), with
    derived values only when asked."""
    from marketdata.storage.candles import read_latest

    app = app_factory()
    write(app, batch(10))
    write(app, batch(8, start=START - 100 * 86_400, symbol="ETH-USD"))  # stale
    now = START + 10 * 60
    with connect(app.engine(), app.target) as conn:
        current = read_latest(conn, "BTC-USD", Interval.M1, 3, now=now)
        stale = read_latest(conn, "ETH-USD", Interval.M1, 3, now=now, with_indicators=True)
        expected = read_candles(conn, "ETH-USD", Interval.M1, last=3, with_indicators=True)
    assert current.ts.tolist() == [START + m * 60 for m in (7, 8, 9)]
    assert current.indicators is None
    assert list(stale.rows()) == list(expected.rows()) and len(stale) == 3
    assert stale.indicators is not None


def test_an_array_literal_binds_every_string_as_itself(pg_database):
    import psycopg

    from marketdata.storage.candles import array_text

    values = ["NULL", "null", "", " spaced ", 'a"b', "back\\slash", "x,y", "{z}", "BTC-USD", "é"]
    with psycopg.connect(pg_database.replace("postgresql+psycopg://", "postgresql://")) as conn:
        # a quote alone and a backslash alone must each be escaped
        for listed in (values, ['a"b', "c"], ["back\\slash"], values[-1:], []):
            row = conn.execute("SELECT CAST(%s AS text[])", [array_text(listed)]).fetchone()
            assert row is not None and row[0] == listed


def test_symbols_that_read_as_sql_words_are_found_by_the_batched_lookups(app_factory):
    from marketdata.analytics.roi import anchors
    from marketdata.storage.candles import anchor_closes_many

    app = app_factory()
    symbols = ["NULL", "^GSPC", "BRK.B"]
    for i, symbol in enumerate(symbols):
        write(app, batch(10, symbol=symbol, close=1.0 + i))
    newest = START + 9 * 60
    with connect(app.engine(), app.target) as conn:
        lasts = last_ts_many(conn, symbols, Interval.M1)
        latest = read_latest_many(conn, [(s, Interval.M1) for s in symbols], 2, now=newest + 60)
        closes = anchor_closes_many(conn, {(s, Interval.M1): anchors(newest) for s in symbols})
    assert lasts == dict.fromkeys(symbols, newest)
    assert {pair[0]: len(rows) for pair, rows in latest.items()} == dict.fromkeys(symbols, 2)
    assert {pair[0]: got["inception"] for pair, got in closes.items()} == {
        s: 1.0 + i for i, s in enumerate(symbols)
    }


@contextmanager
def selects(engine) -> Iterator[list[tuple[str, list[Any]]]]:
    """The SELECT statements run on `engine` within the block, each with its parameters."""
    from sqlalchemy import event

    seen: list[tuple[str, list[Any]]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT"):
            bound = parameters.values() if isinstance(parameters, Mapping) else parameters
            seen.append((statement, list(bound)))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _bounded(seen: list[tuple[str, list[Any]]]) -> list[bool]:
    """Per statement, whether it reads from a lower time bound on."""
    return ["ts >=" in statement for statement, _ in seen]


def test_the_newest_candles_of_a_pair_are_read_from_its_newest_partitions_first(app_factory):
    """On PostgreSQL `read_latest` reads from `recent_floor` on (planned over the newest
    partitions), and again without it only when that finds fewer rows than asked for;
    SQLite has no partitions: one read, unbounded."""
    from marketdata.domain import utc_from_epoch
    from marketdata.storage.candles import read_latest, recent_floor

    app = app_factory()
    write(app, batch(10))
    now = START + 10 * 60
    engine = app.engine()
    with connect(engine, app.target) as conn:
        postgresql = conn.dialect.name == "postgresql"
        with selects(engine) as exact:  # all ten rows lie after the floor: one read
            assert len(read_latest(conn, "BTC-USD", Interval.M1, 10, now=now)) == 10
        with selects(engine) as short:  # fewer than asked for: read again, unbounded
            assert len(read_latest(conn, "BTC-USD", Interval.M1, 11, now=now)) == 10
    if postgresql:
        assert _bounded(exact) == [True] and _bounded(short) == [True, False]
        assert utc_from_epoch(recent_floor(Interval.M1, now, 10)) in exact[0][1]
    else:
        assert _bounded(exact) == _bounded(short) == [False]


def test_the_newest_candles_of_many_pairs_are_one_statement_bounded_on_postgresql(app_factory):
    """`read_latest_many`: one statement for the pairs (on PostgreSQL a LATERAL read from
    `recent_floor` on), and one more, unbounded, for the pairs it found too few rows of."""
    from marketdata.domain import utc_from_epoch
    from marketdata.storage.candles import recent_floor

    app = app_factory()
    current = ["BTC-USD", "ETH-USD", "SOL-USD"]
    for symbol in current:
        write(app, batch(10, symbol=symbol))
    write(app, batch(10, start=START - 100 * 86_400, symbol="ADA-USD"))  # stale
    now = START + 10 * 60
    engine = app.engine()
    with connect(engine, app.target) as conn:
        postgresql = conn.dialect.name == "postgresql"
        with selects(engine) as fresh:
            found = read_latest_many(conn, [(s, Interval.M1) for s in current], 3, now=now)
        with selects(engine) as mixed:
            both = read_latest_many(
                conn, [(s, Interval.M1) for s in ("BTC-USD", "ADA-USD")], 3, now=now
            )
    assert {pair[0]: len(rows) for pair, rows in found.items()} == dict.fromkeys(current, 3)
    assert {pair[0]: len(rows) for pair, rows in both.items()} == {"BTC-USD": 3, "ADA-USD": 3}
    if postgresql:
        assert _bounded(fresh) == [True] and "LATERAL" in fresh[0][0]
        assert utc_from_epoch(recent_floor(Interval.M1, now, 3)) in fresh[0][1]
        assert _bounded(mixed) == [True, False]
    else:
        assert _bounded(fresh) == _bounded(mixed) == [False]


def test_the_roi_anchors_of_pairs_given_equal_mappings_made_apart_are_one_statement(app_factory):
    """`anchor_closes_many` looks the pairs with the same anchors up together on PostgreSQL
    whether they share one mapping or each has its own equal copy (a fold builds one a
    pair): as many statements either way, and the same closes. SQLite's lookups answer the
    same."""
    from marketdata.analytics.roi import anchors
    from marketdata.storage.candles import anchor_closes_many

    app = app_factory()
    symbols = [f"S{i:02d}-USD" for i in range(12)]
    for symbol in symbols:
        write(app, batch(10, symbol=symbol))
    shared = anchors(START + 9 * 60)
    engine = app.engine()
    with connect(engine, app.target) as conn:
        with selects(engine) as one:
            alike = anchor_closes_many(conn, {(s, Interval.M1): shared for s in symbols})
        with selects(engine) as apart:
            copies = anchor_closes_many(conn, {(s, Interval.M1): dict(shared) for s in symbols})
    assert copies == alike and len(alike) == len(symbols)
    assert len(apart) == len(one)
    if engine.dialect.name == "postgresql":
        assert len(one) < len(symbols)


def test_the_roi_anchors_of_more_pairs_than_one_statement_holds_are_all_answered(
    app_factory, monkeypatch
):
    """Pairs beyond one statement's rows (`_LATERAL_ROWS`, made 5 here) are looked up in
    the statements after it, also when the first found every anchor inside its window."""
    from marketdata.analytics.roi import Anchor
    from marketdata.storage import candles

    monkeypatch.setattr(candles, "_LATERAL_ROWS", 5)
    app = app_factory()
    symbols = [f"S{i:02d}-USD" for i in range(12)]
    for i, symbol in enumerate(symbols):
        write(app, batch(10, symbol=symbol, close=1.0 + i))
    marks = {"mid": Anchor(START + 5 * 60), "first": Anchor(None)}
    with connect(app.engine(), app.target) as conn:
        found = candles.anchor_closes_many(conn, {(s, Interval.M1): marks for s in symbols})
    assert found == {
        (s, Interval.M1): {"mid": 1.0 + i, "first": 1.0 + i} for i, s in enumerate(symbols)
    }


def test_an_incremental_look_back_reads_the_newest_partitions_first_and_never_scans_for_a_peak(
    app_factory,
):
    """`previous_closes` (the closes an incremental run's indicators continue from): on
    PostgreSQL one read from `recent_floor` on, the floor included (a market closed for
    weeks may leave its last rows right at it), again unbounded only when that finds fewer
    rows than asked for; SQLite has no partitions: one read, unbounded. The peak close
    comes from the newest row's stored drawdown: no statement scans the history for it."""
    from marketdata.analytics.indicators import INDICATOR_NAMES
    from marketdata.domain import utc_from_epoch
    from marketdata.storage.candles import previous_closes, recent_floor

    before = START + 10 * 60
    floor = recent_floor(Interval.M1, before, 3)
    stamps = np.array([floor - 60, floor, START + 480, START + 540], dtype=np.int64)
    closes = np.array([5.0, 4.0, 2.0, 2.5])
    drawdown = closes / np.maximum.accumulate(closes) - 1.0  # the last: 2.5 / 5 - 1
    undefined = np.full(len(stamps), np.nan)
    derived = {name: drawdown if name == "drawdown" else undefined for name in INDICATOR_NAMES}
    rows = Candles.from_columns(
        "BTC-USD",
        Interval.M1,
        "coinbase",
        stamps,
        closes,
        closes + 1,
        closes - 1,
        closes,
        np.ones(len(stamps)),
    ).with_indicators(derived)
    app = app_factory()
    write(app, rows)
    engine = app.engine()
    with connect(engine, app.target) as conn:
        postgresql = conn.dialect.name == "postgresql"
        with selects(engine) as exact:  # the third newest row lies at the floor: one read
            found = previous_closes(conn, "BTC-USD", Interval.M1, before, 3)
        with selects(engine) as short:  # fewer than asked for after the floor: read again
            every = previous_closes(conn, "BTC-USD", Interval.M1, before, 5)
    assert found.closes.tolist() == [4.0, 2.0, 2.5] and found.peak == 5.0
    assert every.closes.tolist() == [5.0, 4.0, 2.0, 2.5] and every.peak == 5.0
    if postgresql:
        assert _bounded(exact) == [True] and _bounded(short) == [True, False]
        assert utc_from_epoch(floor) in exact[0][1]
    else:
        assert _bounded(exact) == _bounded(short) == [False]
