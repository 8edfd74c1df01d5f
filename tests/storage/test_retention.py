"""Retention and `db stats` on both backends: prune at and around the cutoff (whole
partitions dropped on PostgreSQL, a DELETE only in the boundary one), nothing inside the
window touched, dry runs that write nothing, and stats that agree with count(*)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
import sqlalchemy as sa

from marketdata.domain import Candles, Interval, epoch_of
from marketdata.errors import InputError
from marketdata.maintenance import maintain, prune, retention_plan, stats
from marketdata.storage import partitions
from marketdata.storage.candles import write_candles
from marketdata.storage.engine import connect

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
OCT_1 = epoch_of(datetime(2026, 10, 1, tzinfo=UTC))
NOV_1 = epoch_of(datetime(2026, 11, 1, tzinfo=UTC))
DEC_1 = epoch_of(datetime(2026, 12, 1, tzinfo=UTC))
MINUTE_ROWS = np.arange(OCT_1, epoch_of(NOW), 3 * 3600, dtype=np.int64)  # every 3 h, 1m grid
DAYS = np.arange(OCT_1 - 400 * 86_400, DEC_1, 86_400, dtype=np.int64)
JAN_1 = epoch_of(datetime(2026, 1, 1, tzinfo=UTC))


def candles_at(symbol: str, interval: Interval, ts) -> Candles:
    ts = np.asarray(ts, dtype=np.int64)
    price = 100.0 + (ts - ts[0]) / 86_400
    return Candles(symbol, interval, "synthetic", ts, price, price + 1, price - 1, price, price)


@pytest.fixture
def app(app_factory):
    app = app_factory()
    app.clock = lambda: NOW
    with app.engine().begin() as conn:
        for symbol in ("BTC-USD", "ETH-USD"):
            write_candles(conn, candles_at(symbol, Interval.M1, MINUTE_ROWS), NOW)
        write_candles(conn, candles_at("BTC-USD", Interval.D1, DAYS), NOW)
    return app


def stored(app, interval: Interval) -> list[tuple[str, int]]:
    with connect(app.engine(), app.target) as conn:
        rows = conn.execute(
            sa.select(sa.text("symbol"), sa.text("ts"))
            .select_from(sa.text("candles"))
            .where(sa.text("interval = :i"))
            .order_by(sa.text("symbol"), sa.text("ts")),
            {"i": interval.value},
        ).all()
    return [(s, epoch_of(t if isinstance(t, datetime) else _parse(t))) for s, t in rows]


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# the cutoff at a partition's lower bound, on a stored candle, one second after one, and
# inside a partition between candles
CUTOFFS = [NOV_1, NOV_1 + 5 * 3 * 3600, NOV_1 + 5 * 3 * 3600 + 1, NOV_1 + 17 * 86_400 + 60]


@pytest.mark.parametrize("cutoff", CUTOFFS)
def test_prune_removes_exactly_the_candles_before_the_cutoff(app, cutoff):
    before = stored(app, Interval.M1)
    daily = stored(app, Interval.D1)
    age = epoch_of(NOW) - cutoff

    preview = prune(app, Interval.M1, age, dry_run=True)
    assert stored(app, Interval.M1) == before  # a dry run writes nothing
    [done] = prune(app, Interval.M1, age)

    kept = [(s, t) for s, t in before if t >= cutoff]
    assert stored(app, Interval.M1) == kept
    assert stored(app, Interval.D1) == daily  # another interval is never touched
    assert done.cutoff == cutoff and done.rows == len(before) - len(kept) > 0
    assert preview[0].rows == done.rows and preview[0].dropped == done.dropped
    if app.target.dialect == "postgresql":
        # October lies wholly before every cutoff here: dropped, not deleted row by row
        # (with any older, empty 1m partitions other tests of the session left behind)
        [october] = [d for d in done.dropped if d.rows]
        assert october.name == "candles_1m_p2026_10"
        assert october.rows == 2 * sum(1 for t in MINUTE_ROWS if t < NOV_1)
        assert all(partitions.parse_name(d.name).end <= NOV_1 for d in done.dropped)
        assert done.bytes_freed == sum(d.bytes for d in done.dropped) > 0
        assert done.rows_deleted == done.rows - october.rows
    else:
        assert done.rows_deleted == done.rows and done.bytes_freed >= 0
    # pruning again finds nothing more
    assert prune(app, Interval.M1, age)[0].rows == 0


def test_prune_follows_the_retention_settings_and_only_those(app_factory, app):
    configured = app_factory(retention_1m="30d")
    configured.clock = lambda: NOW
    daily = stored(app, Interval.D1)

    [done] = prune(configured)

    assert done.interval is Interval.M1 and done.cutoff == epoch_of(NOW) - 30 * 86_400
    assert min(t for _, t in stored(app, Interval.M1)) >= done.cutoff
    assert stored(app, Interval.D1) == daily
    unset = app_factory()
    assert retention_plan(unset, None, None) == [] and prune(unset) == []
    with pytest.raises(InputError, match="no retention is set for 1h"):
        prune(unset, Interval.H1)
    with pytest.raises(InputError, match="--older-than needs --interval"):
        prune(unset, None, 86_400)


def test_stats_agree_with_count_star_per_interval_and_table(app):
    result = stats(app)

    with connect(app.engine(), app.target) as conn:
        counted = dict(
            conn.execute(sa.text("SELECT interval, count(*) FROM candles GROUP BY interval")).all()
        )
        total = conn.execute(sa.text("SELECT count(*) FROM candles")).scalar_one()
    assert {t.name: t.rows for t in result.intervals} == counted
    assert sum(t.rows for t in result.tables) == result.total.rows == total
    by_name = {t.name: t for t in result.intervals}
    assert by_name["1m"].oldest == int(MINUTE_ROWS[0])
    assert by_name["1m"].newest == int(MINUTE_ROWS[-1])
    assert by_name["1d"].newest == DEC_1 - 86_400
    assert result.total.table_bytes and result.total.index_bytes
    assert 40 < (result.total.bytes_per_candle or 0) < 2_000
    if app.target.dialect == "postgresql":
        assert result.partitioned
        tables = {t.name: t.rows for t in result.tables if t.rows}
        assert tables == {
            "candles_1m_p2026_10": 2 * int(np.sum(MINUTE_ROWS < NOV_1)),
            "candles_1m_p2026_11": 2 * int(np.sum((MINUTE_ROWS >= NOV_1) & (MINUTE_ROWS < DEC_1))),
            "candles_1m_p2026_12": 2 * int(np.sum(MINUTE_ROWS >= DEC_1)),
            "candles_1d_p2025": int(np.sum(DAYS < JAN_1)),
            "candles_1d_p2026": int(np.sum(DAYS >= JAN_1)),
        }
        assert all(t.table_bytes is not None and t.start is not None for t in result.tables)
    else:
        assert result.source == "dbstat" and [t.name for t in result.tables] == ["candles"]


def test_maintain_creates_the_current_and_next_periods(app):
    app.clock = lambda: datetime(2031, 12, 31, 23, 59, tzinfo=UTC)

    done = maintain(app)

    if app.target.dialect == "postgresql":
        assert {"candles_1m_p2031_12", "candles_1m_p2032_01", "candles_1d_p2032"} <= set(
            done.created
        )
        assert maintain(app).created == ()  # nothing left to make
    else:
        assert not done.partitioned and done.created == done.vacuumed == ()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_maintain_vacuums_the_partition_a_prune_deleted_rows_from(app):
    with app.engine().begin() as conn:  # enough rows that the boundary DELETE matters
        dense = np.arange(NOV_1, NOV_1 + 4000 * 60, 60, dtype=np.int64)
        write_candles(conn, candles_at("SOL-USD", Interval.M1, dense), NOW)
    [done] = prune(app, Interval.M1, epoch_of(NOW) - (NOV_1 + 3000 * 60))
    assert done.rows_deleted >= 3000
    with app.engine().connect() as conn:
        conn.execute(sa.text("SELECT pg_stat_force_next_flush()"))

    assert "candles_1m_p2026_11" in maintain(app).vacuumed


def test_every_interval_has_a_retention_setting():
    from marketdata.config import RETENTION_SETTINGS, Settings

    assert tuple(f"retention_{i.value}" for i in Interval) == RETENTION_SETTINGS
    assert set(RETENTION_SETTINGS) <= set(Settings.model_fields)
