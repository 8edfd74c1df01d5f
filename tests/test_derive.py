"""Derived data stored with candles equals a full recompute, whichever path computed it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from marketdata.analytics.indicators import compute_indicators
from marketdata.derive import bars_per_year, rebuild
from marketdata.domain import Interval
from marketdata.pipeline import IngestRequest, Mode, run_ingest
from marketdata.storage.candles import read_candles
from marketdata.storage.engine import connect

START = datetime(2024, 1, 1, 12, tzinfo=UTC)


def stored(app, symbol="BTC-USD", interval=Interval.D1):
    with connect(app.engine(), app.target) as conn:
        return read_candles(conn, symbol, interval, with_indicators=True)


def assert_matches_full_recompute(candles):
    full = compute_indicators(
        candles.close, periods_per_year=bars_per_year(candles.symbol, candles.interval)
    )
    for name, expected in full.columns().items():
        np.testing.assert_allclose(
            candles.indicators[name], expected, rtol=1e-9, atol=1e-12, err_msg=name
        )


@pytest.fixture
def synthetic_app(app_factory):
    app = app_factory(ingestion_provider="synthetic", ingestion_lookback_days=250)
    app.clock = lambda: START
    return app


def test_many_small_ingests_equal_a_full_recompute(synthetic_app):
    app = synthetic_app
    run_ingest(app, IngestRequest(symbols=["BTC-USD"]))
    for day in range(1, 40):
        moment = START + timedelta(days=day)
        app.clock = lambda moment=moment: moment
        run_ingest(app, IngestRequest(symbols=["BTC-USD"]))
    candles = stored(app)
    assert len(candles) == 251 + 39
    assert np.isfinite(candles.indicators["sma_200"][-1])
    assert_matches_full_recompute(candles)


def test_intervals_outside_analytics_intervals_store_no_derived_data(synthetic_app):
    run_ingest(
        synthetic_app, IngestRequest(symbols=["BTC-USD"], intervals=[Interval.M5], lookback_days=1)
    )
    candles = stored(synthetic_app, interval=Interval.M5)
    assert len(candles) > 200
    assert all(np.isnan(v).all() for v in candles.indicators.values())


def test_backfilling_a_hole_recomputes_everything_after_it(synthetic_app):
    app = synthetic_app
    run_ingest(app, IngestRequest(symbols=["BTC-USD"]))
    before = stored(app)
    hole = before.ts[100:110]
    with connect(app.engine(), app.target) as conn, conn.begin():
        from sqlalchemy import delete

        from marketdata.storage.schema import candles

        conn.execute(
            delete(candles).where(
                candles.c.ts.in_([datetime.fromtimestamp(int(t), UTC) for t in hole])
            )
        )
    rebuild_app_after_hole = stored(app)
    assert len(rebuild_app_after_hole) == len(before) - 10
    result = run_ingest(app, IngestRequest(symbols=["BTC-USD"], mode=Mode.BACKFILL))
    assert result.rows_inserted == 10
    after = stored(app)
    assert after.ts.tolist() == before.ts.tolist()
    assert_matches_full_recompute(after)


def test_rebuild_recomputes_a_pair_from_scratch_and_is_idempotent(synthetic_app):
    app = synthetic_app
    run_ingest(app, IngestRequest(symbols=["BTC-USD"]))
    with connect(app.engine(), app.target) as conn, conn.begin():
        from sqlalchemy import update

        from marketdata.storage.schema import candles

        conn.execute(update(candles).values(sma_20=None, drawdown=None))
    with connect(app.engine(), app.target) as conn, conn.begin():
        rows, updated = rebuild(conn, "BTC-USD", Interval.D1)
    assert rows == 251 and updated == 251
    assert_matches_full_recompute(stored(app))
    with connect(app.engine(), app.target) as conn, conn.begin():
        assert rebuild(conn, "BTC-USD", Interval.D1) == (251, 0)


def test_refreshing_after_history_stored_without_indicators_measures_drawdown_from_its_peak(
    app_factory,
):
    """The rows before the refresh have no stored drawdown, so the peak comes from the
    table: the pair's own highest close before them, not another symbol's or interval's
    higher close nor a later one, and each refreshed row equals a full recomputation."""
    from marketdata.derive import refresh_after
    from marketdata.domain import DAY, Candles
    from marketdata.storage.candles import write_candles

    app = app_factory()
    first = 1_700_006_400  # a midnight
    n = 250
    rng = np.random.default_rng(5)
    close = 100.0 + rng.uniform(-5.0, 5.0, n)
    close[5] = 300.0  # the peak, far before the 201 closes the refresh reads
    close[247] = 400.0  # a later one, which the rows before it do not measure from
    ts = first + np.arange(n, dtype=np.int64) * DAY

    def pair(symbol, interval, times, closes):
        return Candles.from_columns(
            symbol, interval, "coinbase", times, closes, closes + 1, closes - 1, closes, closes
        )

    with connect(app.engine(), app.target) as conn, conn.begin():
        now = datetime(2024, 1, 1, tzinfo=UTC)
        write_candles(conn, pair("BTC-USD", Interval.D1, ts, close), now)
        write_candles(conn, pair("ETH-USD", Interval.D1, ts, np.full(n, 1000.0)), now)
        hours = first + np.arange(24, dtype=np.int64) * 3600
        write_candles(conn, pair("BTC-USD", Interval.H1, hours, np.full(24, 700.0)), now)
        assert refresh_after(conn, "BTC-USD", Interval.D1, int(ts[239])) == 10
        # after the newest row there is nothing to recompute, and nothing is counted
        assert refresh_after(conn, "BTC-USD", Interval.D1, int(ts[-1])) == 0
    candles = stored(app)
    full = compute_indicators(candles.close, periods_per_year=bars_per_year("BTC-USD", Interval.D1))
    peaks = np.r_[np.full(7, 300.0), np.full(3, 400.0)]
    np.testing.assert_allclose(candles.indicators["drawdown"][240:], close[240:] / peaks - 1.0)
    for name, expected in full.columns().items():
        np.testing.assert_allclose(
            candles.indicators[name][240:], expected[240:], rtol=1e-9, atol=1e-12, err_msg=name
        )
        assert np.isnan(candles.indicators[name][:240]).all(), name  # earlier rows left alone


def test_a_write_with_derived_values_equals_a_full_recompute_and_one_without_has_none(
    app_factory,
):
    """`write_with_derived`, as the CSV import and the partition tests use it: with `derive`
    the written rows, and after a correction every later row, carry a full recomputation's
    values; without it the candles alone are stored. Both record the write's time."""
    from sqlalchemy import select

    from marketdata.derive import write_with_derived
    from marketdata.domain import DAY, Candles
    from marketdata.storage.candles import WriteStats
    from marketdata.storage.schema import candles as table

    app = app_factory()
    now = datetime(2024, 1, 1, tzinfo=UTC)
    ts = 1_700_006_400 + np.arange(40, dtype=np.int64) * DAY
    first_ts = datetime.fromtimestamp(1_700_006_400, UTC)
    close = 100.0 + np.arange(40, dtype=np.float64) % 7

    def batch(symbol, closes):
        return Candles.from_columns(
            symbol, Interval.D1, "csv", ts, closes, closes + 1, closes - 1, closes, closes
        )

    corrected = close.copy()
    corrected[10] = 150.0  # a new peak: every later drawdown moves
    with connect(app.engine(), app.target) as conn, conn.begin():
        assert write_with_derived(conn, batch("BTC-USD", close), now, derive=True) == WriteStats(
            40, 0, 0
        )
        assert write_with_derived(conn, batch("ETH-USD", close), now, derive=False) == (
            WriteStats(40, 0, 0)
        )
        later = now + timedelta(hours=1)
        again = write_with_derived(conn, batch("BTC-USD", corrected), later, derive=True)
        assert again == WriteStats(0, 30, 10)  # the corrected row and the later drawdowns
        query = select(table.c.symbol, table.c.ingested_at).where(table.c.ts == first_ts)
        stamps = dict(conn.execute(query).all())
    btc = stored(app)
    assert btc.close.tolist() == corrected.tolist()
    assert_matches_full_recompute(btc)
    assert all(np.isnan(v).all() for v in stored(app, "ETH-USD").indicators.values())
    assert {s: v.replace(tzinfo=UTC) for s, v in stamps.items()} == {"BTC-USD": now, "ETH-USD": now}


def test_what_a_pair_writer_knows_of_the_pair_s_history_after_its_writes(app_factory):
    """The cache is written from a PairWriter's rows without reading them back: `whole`
    only when they are the pair's whole history (a first write), `appended` only when they
    follow every stored row (an incremental run's), neither when stored rows lie among
    them or several batches changed rows. Another symbol's rows, and the same symbol's at
    another interval, stored over the same days are not among them."""
    from marketdata.derive import PairWriter
    from marketdata.domain import DAY, Candles
    from marketdata.storage.candles import write_candles

    app = app_factory()
    now = datetime(2024, 1, 1, tzinfo=UTC)
    stamps = 1_700_006_400 + np.arange(20, dtype=np.int64) * DAY
    close = 100.0 + np.sin(np.arange(20, dtype=np.float64)) * 5

    def rows(index, factor=1.0):
        c = close[index] * factor
        return Candles.from_columns("BTC-USD", Interval.D1, "x", stamps[index], c, c, c, c, c)

    def written(*batches):
        with connect(app.engine(), app.target) as conn, conn.begin():
            writer = PairWriter(conn, now, derive=True)
            for one in batches:
                writer.write(one)
            writer.finish()
        return writer

    with connect(app.engine(), app.target) as conn, conn.begin():
        for symbol, interval, ts in [
            ("ETH-USD", Interval.D1, stamps[:10]),
            ("BTC-USD", Interval.H1, stamps[0] + np.arange(200, dtype=np.int64) * 3_600),
        ]:
            c = np.full(len(ts), 50.0)
            write_candles(conn, Candles.from_columns(symbol, interval, "x", ts, c, c, c, c, c), now)
    first = written(rows(np.arange(10)))
    assert first.appended is None and first.whole is not None
    assert first.whole.ts.tolist() == stamps[:10].tolist()
    full = compute_indicators(close[:10], periods_per_year=bars_per_year("BTC-USD", Interval.D1))
    for name, values in full.columns().items():
        np.testing.assert_allclose(first.whole.indicators[name], values, err_msg=name)
    after = written(rows(np.arange(10, 15)))
    assert after.whole is None and after.appended is not None
    assert after.appended.after == stamps[9]
    assert after.appended.rows.ts.tolist() == stamps[10:15].tolist()
    among = written(rows(np.array([12, 16]), 1.01))  # 13 and 14 stored between them
    assert (among.whole, among.appended) == (None, None)
    several = written(rows(np.array([15])), rows(np.array([17])))
    assert (several.whole, several.appended) == (None, None)
    assert_matches_full_recompute(stored(app))


def test_history_stored_without_indicators_gets_them_with_the_next_derived_write(app_factory):
    """Rows stored while their interval was not analysed: the next write with derived data
    recomputes the pair's whole history, not only its own rows."""
    from marketdata.derive import write_with_derived
    from marketdata.domain import DAY, Candles

    app = app_factory()
    now = datetime(2024, 1, 1, tzinfo=UTC)
    stamps = 1_700_006_400 + np.arange(40, dtype=np.int64) * DAY
    close = 100.0 + np.cos(np.arange(40, dtype=np.float64)) * 5

    def rows(part):
        c = close[part]
        return Candles.from_columns("BTC-USD", Interval.D1, "x", stamps[part], c, c, c, c, c)

    with connect(app.engine(), app.target) as conn, conn.begin():
        write_with_derived(conn, rows(slice(0, 38)), now, derive=False)
        write_with_derived(conn, rows(slice(38, 40)), now, derive=True)
    candles = stored(app)
    assert len(candles) == 40 and not np.isnan(candles.indicators["drawdown"]).any()
    assert_matches_full_recompute(candles)
