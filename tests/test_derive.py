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
