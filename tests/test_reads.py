"""Reads that cost what they show: show, compare, gaps and backfills read a bounded number of
rows, and their answers equal the computation over the whole stored history."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from sqlalchemy import delete, event, text

from marketdata.analytics.comparisons import compare
from marketdata.analytics.indicators import INDICATOR_NAMES, LOOKBACK, compute_indicators
from marketdata.analytics.roi import ROI_KEYS, roi
from marketdata.derive import bars_per_year
from marketdata.domain import Candles, Interval
from marketdata.gaps import gaps_in, market_calendar, stored_gaps
from marketdata.pipeline import IngestRequest, Mode, run_ingest
from marketdata.reports import aggregate_records, aggregates, comparison, show
from marketdata.storage.candles import read_candles, stored_timestamps
from marketdata.storage.engine import connect
from marketdata.storage.schema import candles

NOW = datetime(2024, 6, 17, 12, tzinfo=UTC)


@pytest.fixture
def app(app_factory):
    app = app_factory(
        ingestion_provider="synthetic", ingestion_lookback_days=500, analytics_intervals="1d"
    )
    app.clock = lambda: NOW
    result = run_ingest(app, IngestRequest(symbols=["BTC-USD", "ETH-USD", "AAPL"]))
    assert result.status.value == "success"
    return app


def history(app, symbol: str, interval: Interval = Interval.D1) -> Candles:
    with connect(app.engine(), app.target) as conn:
        return read_candles(conn, symbol, interval)


def drop(app, symbol: str, interval: Interval, timestamps) -> None:
    c = candles.c
    with connect(app.engine(), app.target) as conn, conn.begin():
        for ts in timestamps:
            conn.execute(
                delete(candles).where(
                    c.symbol == symbol,
                    c.interval == interval.value,
                    c.ts == datetime.fromtimestamp(int(ts), UTC),
                )
            )
    # rows deleted behind the tool's back: drop the pair's cached values too, as an operator
    # would (`marketdata cache invalidate`), so the reads under test are the database's
    app.cache.delete_pattern(f"market:{symbol}:*")


def full_roi(app, symbol, interval=Interval.D1):
    whole = history(app, symbol, interval)
    return roi(whole.ts, whole.close)


def same(left: dict, right: dict) -> bool:
    return left.keys() == right.keys() and all(
        (left[k] is None and right[k] is None)
        or (left[k] is not None and right[k] is not None and np.isclose(left[k], right[k]))
        for k in left
    )


@pytest.mark.parametrize("holes", [[], [1, 2, 3], [-2, -31, -32, -33, -366, -367]])
def test_show_roi_from_indexed_lookups_equals_roi_over_the_whole_history(app, holes):
    whole = history(app, "BTC-USD")
    # holes where the anchors fall (a day, a month, a year back) move them to earlier rows
    drop(app, "BTC-USD", Interval.D1, [whole.ts[i] for i in holes])

    report = show(app, "BTC-USD", Interval.D1, 5)

    assert list(report.roi) == list(ROI_KEYS)
    assert same(report.roi, full_roi(app, "BTC-USD"))
    assert report.roi["365d"] is not None and report.roi["ytd"] is not None


@pytest.mark.parametrize("last", [1, 7, 250])
def test_show_indicators_from_a_warm_up_window_equal_a_full_computation(app_factory, last):
    # 5m is outside ANALYTICS_INTERVALS: show computes the indicators from stored closes
    app = app_factory(ingestion_provider="synthetic", ingestion_lookback_days=3)
    app.clock = lambda: NOW
    run_ingest(app, IngestRequest(symbols=["ETH-USD"], intervals=[Interval.M5]))
    whole = history(app, "ETH-USD", Interval.M5)
    assert len(whole) > 600

    report = show(app, "ETH-USD", Interval.M5, last)

    assert report.computed
    expected = compute_indicators(
        whole.close, periods_per_year=bars_per_year("ETH-USD", Interval.M5)
    ).columns()
    assert report.candles.indicators is not None
    for name in INDICATOR_NAMES:
        np.testing.assert_allclose(
            report.candles.indicators[name], expected[name][-last:], rtol=1e-9, equal_nan=True
        )
    assert same(report.roi, roi(whole.ts, whole.close))


def test_show_of_a_pair_that_stopped_long_ago_reads_back_past_the_recent_partitions(
    app_factory,
):
    # the newest 5m bars are from months before the clock, and a 40-day hole lies inside
    # the 201 closes before them: the reads bounded to the recent partitions find too few
    # rows and read again without the bound; the answer equals the whole history's
    app = app_factory(ingestion_provider="synthetic", ingestion_lookback_days=50)
    app.clock = lambda: datetime(2024, 3, 1, tzinfo=UTC)
    run_ingest(app, IngestRequest(symbols=["ETH-USD"], intervals=[Interval.M5]))
    stored = history(app, "ETH-USD", Interval.M5)
    drop(app, "ETH-USD", Interval.M5, stored.ts[100:-150])
    app.clock = lambda: NOW  # June: more than three months later
    whole = history(app, "ETH-USD", Interval.M5)
    assert len(whole) == 250

    report = show(app, "ETH-USD", Interval.M5, 20)

    assert report.candles.ts.tolist() == whole.ts[-20:].tolist()
    expected = compute_indicators(
        whole.close, periods_per_year=bars_per_year("ETH-USD", Interval.M5)
    ).columns()
    assert report.candles.indicators is not None
    for name in INDICATOR_NAMES:
        np.testing.assert_allclose(
            report.candles.indicators[name], expected[name][-20:], rtol=1e-9, equal_nan=True
        )
    assert same(report.roi, roi(whole.ts, whole.close))


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_show_reads_the_rows_it_shows_not_the_history(app, database_url):
    rows_read = []
    engine = app.engine()

    def count(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT") and cursor.rowcount > 0:
            rows_read.append((cursor.rowcount, statement[:150]))

    event.listen(engine, "after_cursor_execute", count)
    try:
        show(app, "BTC-USD", Interval.D1, 5)
    finally:
        event.remove(engine, "after_cursor_execute", count)
    assert len(history(app, "BTC-USD")) > 400
    assert sum(n for n, _ in rows_read) < 20  # 5 candles, one row of ROI closes, a few catalog rows


@pytest.mark.parametrize("window", [2, 30, 200])
def test_compare_from_the_latest_rows_equals_compare_over_whole_histories(app, window):
    # AAPL trades on weekdays only, and ETH loses a few days: the common days are fewer
    # than the rows read first, so the read has to go further back
    eth = history(app, "ETH-USD")
    drop(app, "ETH-USD", Interval.D1, eth.ts[-40:-10])
    symbols = ["BTC-USD", "ETH-USD", "AAPL"]

    result = comparison(app, symbols, window)

    whole = {s: history(app, s) for s in symbols}
    expected = compare(
        {s: (c.ts, c.close) for s, c in whole.items()},
        window=window,
        periods_per_year={s: bars_per_year(s, Interval.D1) for s in symbols},
    )
    assert result.returns_used == expected.returns_used == window
    for field in ("roi", "volatility", "beta", "relative_performance"):
        assert same(getattr(result, field), getattr(expected, field)), field


def test_compare_with_a_short_history_reads_back_only_as_far_as_it_reaches(app_factory):
    app = app_factory(ingestion_provider="synthetic", ingestion_lookback_days=400)
    app.clock = lambda: NOW
    run_ingest(app, IngestRequest(symbols=["BTC-USD"]))
    run_ingest(app, IngestRequest(symbols=["SOL-USD"], lookback_days=10))

    result = comparison(app, ["BTC-USD", "SOL-USD"], 30)

    sol = history(app, "SOL-USD")
    assert result.returns_used == len(sol) - 1 < 30  # every common day, and no more
    whole = {s: history(app, s) for s in ("BTC-USD", "SOL-USD")}
    expected = compare(
        {s: (c.ts, c.close) for s, c in whole.items()},
        window=30,
        periods_per_year={s: bars_per_year(s, Interval.D1) for s in whole},
    )
    assert same(result.roi, expected.roi) and same(result.beta, expected.beta)


def months_between(first: datetime, last: datetime) -> list[int]:
    """Epoch seconds of every day from the 1st of `first`'s month to the end of `last`'s."""
    start = int(datetime(first.year, first.month, 1, tzinfo=UTC).timestamp())
    end = int(last.timestamp())
    return list(range(start, end, 86_400))


@pytest.mark.parametrize("period", ["month", "week"])
@pytest.mark.parametrize("last", [1, 2, 3, 5, 12, 70, 1_000])
def test_aggregates_of_the_latest_periods_equal_those_of_the_whole_history(app, period, last):
    # BTC loses March and most of April 2024 (empty months, five empty weeks), and the
    # last day before May: reading from `last` periods back finds fewer periods than asked,
    # and the period before the first shown one is further back than the one before it
    march = months_between(datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 4, 28, tzinfo=UTC))
    drop(app, "BTC-USD", Interval.D1, [*march, 1_714_435_200])  # and 2024-04-30
    app.cache.delete_pattern("market:BTC-USD:*")
    full = aggregate_records(aggregates(app, "BTC-USD", period))

    latest = aggregate_records(aggregates(app, "BTC-USD", period, last=last))

    assert len(full) > 12
    assert nan_free(latest) == nan_free(full[-last:])


def nan_free(records: list[dict]) -> list[dict]:
    """Records with NaN as None (NaN is unequal to itself)."""
    return [{k: None if v != v else v for k, v in r.items()} for r in records]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_aggregates_read_the_periods_they_show_not_the_history(app, database_url):
    rows_read = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT") and cursor.rowcount > 0:
            rows_read.append(cursor.rowcount)

    event.listen(app.engine(), "after_cursor_execute", count)
    try:
        bars = aggregates(app, "BTC-USD", "month", last=3)
    finally:
        event.remove(app.engine(), "after_cursor_execute", count)
    assert len(bars) == 3 and len(history(app, "BTC-USD")) > 400
    # April 1 .. June 17 (78 days), the newest row, the day before April, a catalog row
    assert sum(rows_read) <= 78 + 5, rows_read


def test_gaps_found_from_holes_in_sql_equal_gaps_from_every_timestamp(app):
    whole = history(app, "AAPL")
    drop(app, "AAPL", Interval.D1, [whole.ts[i] for i in (0, 5, 6, 7, 100, -1)])
    drop(app, "BTC-USD", Interval.D1, history(app, "BTC-USD").ts[200:203])

    with connect(app.engine(), app.target) as conn:
        for symbol in ("AAPL", "BTC-USD"):
            expected = gaps_in(
                stored_timestamps(conn, symbol, Interval.D1),
                Interval.D1,
                market_calendar(conn, symbol),
            )
            found = stored_gaps(conn, symbol, Interval.D1)
            assert found == expected and found, symbol


def test_pages_are_joined_once_and_equal_page_by_page_joining():
    pages = [
        Candles.from_rows("BTC-USD", Interval.M1, "x", [(i * 60, 1.0, 2.0, 0.5, 1.5, float(i))])
        for i in range(50)
    ]
    step_by_step = Candles.empty("BTC-USD", Interval.M1, "x")
    for page in pages:
        step_by_step = step_by_step.concat(page)

    joined = Candles.joined("BTC-USD", Interval.M1, "x", pages)

    for name in ("ts", "open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(getattr(joined, name), getattr(step_by_step, name))
    assert len(Candles.joined("BTC-USD", Interval.M1, "x", [])) == 0


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_backfill_of_many_gaps_reads_the_history_after_them_once(app, database_url):
    whole = history(app, "BTC-USD")
    holes = [20, 60, 100, 140, 180, 220, 260, 300]
    drop(app, "BTC-USD", Interval.D1, [whole.ts[i] for i in holes])
    rows_read = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT") and cursor.rowcount > 0:
            rows_read.append((cursor.rowcount, statement[:150]))

    engine = app.engine()
    event.listen(engine, "after_cursor_execute", count)
    try:
        result = run_ingest(app, IngestRequest(symbols=["BTC-USD"], mode=Mode.BACKFILL))
    finally:
        event.remove(engine, "after_cursor_execute", count)

    assert result.rows_inserted == len(holes)
    after_first_gap = len(whole) - holes[0]
    # the rows after the first gap twice (recomputed, and compared before the update), and a
    # bounded warm-up (LOOKBACK closes) per batch; recomputing after each gap would read the
    # rows after every gap twice: about 2 * (8 * 501 - 1300) = 5,400 rows here
    bound = 2 * after_first_gap + (len(holes) + 2) * (LOOKBACK + 1) + 50
    assert sum(n for n, _ in rows_read) < bound < 2 * sum(len(whole) - h for h in holes)
    from tests.test_derive import assert_matches_full_recompute

    with connect(app.engine(), app.target) as conn:
        stored = read_candles(conn, "BTC-USD", Interval.D1, with_indicators=True)
    assert_matches_full_recompute(stored)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_roi_lookups_and_the_latest_rows_use_the_primary_key(app, database_url):
    anchor = datetime(2024, 3, 1, tzinfo=UTC)
    with connect(app.engine(), app.target) as conn:
        conn.execute(text("SET enable_seqscan = off"))  # a small table: ask what it could use
        plan = "\n".join(
            conn.execute(
                text(
                    "EXPLAIN SELECT close FROM candles WHERE symbol = 'BTC-USD' AND interval = '1d'"
                    " AND ts <= :t ORDER BY ts DESC LIMIT 1"
                ),
                {"t": anchor},
            ).scalars()
        )
    assert "Index Scan Backward" in plan, plan
    assert "Sort" not in plan, plan


def test_roi_anchor_with_no_candle_in_its_partition_falls_back_to_an_earlier_one(app_factory):
    # 1m bars in October and December only: the 30d anchor falls in an empty November, so
    # the lookup inside its partition finds nothing and the one without a floor finds
    # October's last bar
    from marketdata.storage.candles import write_candles

    app = app_factory()
    oct_ = np.arange(1_790_812_800, 1_790_812_800 + 20 * 86_400, 3_600, dtype=np.int64)
    dec = np.arange(1_796_083_200, 1_796_083_200 + 3 * 86_400, 3_600, dtype=np.int64)
    stamps = np.concatenate([oct_, dec])
    close = 100.0 + np.arange(len(stamps), dtype=np.float64)
    with app.engine().begin() as conn:
        write_candles(
            conn,
            Candles("BTC-USD", Interval.M1, "x", stamps, close, close, close, close, close),
            NOW,
        )

    report = show(app, "BTC-USD", Interval.M1, 3)

    assert same(report.roi, roi(stamps, close))
    assert report.roi["30d"] == close[-1] / close[len(oct_) - 1] - 1.0


def test_roi_anchors_of_pairs_with_anchors_of_their_own_and_holes_equal_their_histories(
    app_factory,
):
    """Pairs looked up together, two sharing one set of anchors and two with their own (their
    newest times differ), some without a row in the partition that holds a bound (looked up
    again without that window: found earlier, or not at all): each close is the last at or
    before the anchor's bound in the pair's whole history, the first for inception."""
    from marketdata.analytics.roi import anchors
    from marketdata.storage.candles import anchor_closes_many, write_candles

    app = app_factory()
    start, day = 1_672_531_200, 86_400  # 2023-01-01; daily partitions are years
    days = {
        "A-USD": np.arange(0, 700),  # every day to 2024-11-30
        "B-USD": np.r_[0:100, 600:690],  # no row of 2024 before late August
        "C-USD": np.arange(400, 650),  # from February 2024 only
        "D-USD": np.arange(0, 700, 9),  # every ninth day
    }
    history = {
        symbol: (start + numbers.astype(np.int64) * day, 10.0 + i + np.arange(len(numbers)) / 7)
        for i, (symbol, numbers) in enumerate(days.items())
    }
    with app.engine().begin() as conn:
        for symbol, (stamps, close) in history.items():
            batch = Candles(symbol, Interval.D1, "x", stamps, close, close, close, close, close)
            write_candles(conn, batch, NOW)
    shared = anchors(start + 699 * day)
    marks = {("A-USD", Interval.D1): shared, ("D-USD", Interval.D1): shared}
    marks |= {(s, Interval.D1): anchors(int(history[s][0][-1])) for s in ("B-USD", "C-USD")}

    with connect(app.engine(), app.target) as conn:
        found = anchor_closes_many(conn, marks)

    assert found.keys() == marks.keys()
    for (symbol, _), wanted in marks.items():
        stamps, close = history[symbol]
        expected: dict[str, float | None] = {}
        for key, mark in wanted.items():
            at = 1
            if mark.bound is not None:
                side = "right" if mark.inclusive else "left"
                at = int(np.searchsorted(stamps, mark.bound, side=side))
            expected[key] = float(close[at - 1]) if at else None
        assert found[(symbol, Interval.D1)] == expected, symbol
    # the holes were met: B's 180 days back lie in 2024 before its first row of that year,
    # C's 365 days back before its first row of all
    assert found[("B-USD", Interval.D1)]["180d"] == float(history["B-USD"][1][99])
    assert found[("C-USD", Interval.D1)]["365d"] is None


def test_roi_anchors_of_more_pairs_than_one_statement_holds_equal_each_pairs_own(app_factory):
    """The cache's ROI lookups of many pairs at once (one SQLite statement holds 800
    anchors, 100 pairs' worth): every pair's closes at its anchors, as looked up for
    that pair alone, and the ROI over its whole history."""
    from marketdata.analytics.roi import anchors
    from marketdata.storage.candles import anchor_closes, anchor_closes_many, write_candles

    app = app_factory()
    start = 1_704_067_200  # 2024-01-01
    pairs = [(f"S{i:03d}-USD", Interval.D1) for i in range(110)]
    stamps = start + np.arange(0, 160, 8, dtype=np.int64) * 86_400
    with app.engine().begin() as conn:
        for i, (symbol, interval) in enumerate(pairs):
            close = 10.0 + i + np.arange(len(stamps), dtype=np.float64)
            write_candles(
                conn, Candles(symbol, interval, "x", stamps, close, close, close, close, close), NOW
            )
    marks = anchors(int(stamps[-1]))
    with connect(app.engine(), app.target) as conn:
        found = anchor_closes_many(conn, dict.fromkeys(pairs, marks))
        alone = {pair: anchor_closes(conn, *pair, marks) for pair in pairs}
    assert len(pairs) * len(marks) > 800
    assert found == alone
    for i, pair in enumerate(pairs):
        close = 10.0 + i + np.arange(len(stamps), dtype=np.float64)
        ours = {key: close[-1] / then - 1.0 for key, then in found[pair].items() if then}
        assert same(ours, {k: v for k, v in roi(stamps, close).items() if v is not None}), pair
