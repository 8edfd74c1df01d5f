"""Undefined indicators are NULL on both backends, so the same SQL gives the same answer;
migration 0009 turns the NaN that PostgreSQL's COPY used to store into NULL."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import sqlalchemy as sa

from marketdata.derive import write_with_derived
from marketdata.domain import Candles, Interval
from marketdata.storage import migrate
from marketdata.storage.candles import update_indicators
from marketdata.storage.engine import connect
from marketdata.storage.schema import INDICATOR_COLUMNS

NOW = datetime(2024, 12, 1, tzinfo=UTC)
START = 1_704_067_200
ROWS = 260  # past sma_200's warm-up


def daily(rows: int = ROWS, start: int = START) -> Candles:
    ts = start + np.arange(rows, dtype=np.int64) * 86_400
    close = 100.0 + 10 * np.sin(np.arange(rows) / 7.0) + np.arange(rows) * 0.1
    return Candles.from_columns(
        "ETH-USD", Interval.D1, "synthetic", ts, close, close + 1, close - 1, close, close * 10
    )


def answers(conn) -> tuple:
    """Plain SQL any user would write over the table; one row of numbers."""
    return tuple(
        conn.execute(
            sa.text(
                "SELECT count(*), count(sma_200), count(volatility_30), "
                "sum(CASE WHEN sma_200 IS NULL THEN 1 ELSE 0 END), "
                "avg(sma_200), min(simple_return), max(volatility_30) "
                "FROM candles WHERE symbol = 'ETH-USD'"
            )
        ).one()
    )


def test_sql_over_stored_indicators_gives_the_same_answer_on_both_backends(app_factory):
    app = app_factory()
    with connect(app.engine(), app.target) as conn, conn.begin():
        write_with_derived(conn, daily(200), NOW, derive=True)  # the COPY path (new rows)
        write_with_derived(conn, daily(), NOW + timedelta(hours=1), derive=True)  # the merge
    with connect(app.engine(), app.target) as conn:
        got = answers(conn)
    # 260 rows; sma_200 defined from the 200th; volatility_30 from the 31st (30 returns)
    assert got[:4] == (ROWS, ROWS - 199, ROWS - 30, 199)
    # a stored NaN would make these NaN on PostgreSQL (it sorts above every number)
    assert all(value is not None and math.isfinite(value) for value in got[4:])


def test_clearing_an_indicator_stores_null_on_both_backends(app_factory):
    app = app_factory()
    with connect(app.engine(), app.target) as conn, conn.begin():
        write_with_derived(conn, daily(), NOW, derive=True)
        ts = daily().ts[-3:]
        cleared = {name: np.full(3, np.nan) for name in INDICATOR_COLUMNS}
        update_indicators(conn, "ETH-USD", Interval.D1, ts, cleared)
    with connect(app.engine(), app.target) as conn:
        nulls = conn.execute(sa.text("SELECT count(*) FROM candles WHERE sma_20 IS NULL")).scalar()
    assert nulls == 19 + 3


def test_migration_0009_turns_stored_nan_into_null(pg_database):
    from marketdata.config import load_settings
    from marketdata.storage.engine import create_engine, resolve_target

    settings = load_settings({"database_url": pg_database}, environ={}).settings
    target = resolve_target(settings)
    engine = create_engine(settings, target)
    try:
        migrate.downgrade(engine, target, "0008")
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM candles"))
            conn.execute(
                sa.text(
                    "INSERT INTO candles (symbol, interval, ts, open, high, low, close, volume, "
                    "provider, ingested_at, sma_200, drawdown) VALUES "
                    "('NAN-USD', '1d', now(), 1, 1, 1, 1, 1, 'x', now(), 'NaN', 0.5)"
                )
            )
        migrate.upgrade(engine, target)
        with engine.connect() as conn:
            row = conn.execute(
                sa.text("SELECT sma_200 IS NULL, drawdown FROM candles WHERE symbol = 'NAN-USD'")
            ).one()
        assert tuple(row) == (True, 0.5)
    finally:
        migrate.upgrade(engine, target)
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM candles"))
        engine.dispose()
