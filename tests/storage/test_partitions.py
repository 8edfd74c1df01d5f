"""Candles partitioned by interval and time on real PostgreSQL: the migration both ways with
data, writes landing in the right partitions, partitions made ahead and on demand, and the
read paths' plans touching only the partitions they need."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pytest
import sqlalchemy as sa

from marketdata.config import load_settings
from marketdata.domain import Candles, Interval, epoch_of
from marketdata.storage import migrate, partitions
from marketdata.storage.candles import read_candles, write_candles
from marketdata.storage.engine import create_engine, resolve_target
from tests.conftest import service_missing

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
DEC_1 = epoch_of(datetime(2026, 12, 1, tzinfo=UTC))
COLUMNS = "symbol, interval, ts, open, high, low, close, volume, provider, sma_20::text, drawdown"


@pytest.fixture
def database_url(pg_database: str) -> str:
    """PostgreSQL only (partitions are PostgreSQL's; SQLite keeps one table), emptied."""
    from tests.conftest import _truncate

    _truncate(pg_database)
    return pg_database


@pytest.fixture
def fresh(pg_server_url: str) -> Iterator[tuple[sa.Engine, object]]:
    """An empty PostgreSQL database of this test's own, dropped afterwards."""
    from sqlalchemy.engine import make_url

    server = make_url(pg_server_url).set(drivername="postgresql+psycopg")
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    name = f"marketdata_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        service_missing("PostgreSQL (TEST_DATABASE_URL)", str(exc.orig).splitlines()[0])
    url = server.set(database=name).render_as_string(hide_password=False)
    settings = load_settings({"database_url": url}, environ={}).settings
    target = resolve_target(settings)
    engine = create_engine(settings, target)
    yield engine, target
    engine.dispose()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def batch(symbol: str, interval: Interval, first: int, count: int, price: float = 100.0):
    ts = first + np.arange(count, dtype=np.int64) * interval.seconds
    close = price + np.arange(count, dtype=np.float64)
    return Candles(symbol, interval, "synthetic", ts, close, close + 1, close - 1, close, close)


def contents(conn: sa.Connection) -> list[tuple]:
    return [
        tuple(r) for r in conn.execute(sa.text(f"SELECT {COLUMNS} FROM candles ORDER BY 1, 2, 3"))
    ]


def placement(conn: sa.Connection) -> dict[str, int]:
    """Rows per physical table."""
    rows = conn.execute(
        sa.text("SELECT tableoid::regclass::text, count(*) FROM candles GROUP BY 1")
    ).all()
    return {str(name): int(count) for name, count in rows}


BEFORE_PARTITIONS = "0010"  # the revision migration 0011 (partitioned candles) follows


def test_migration_partitions_a_table_with_data_and_downgrade_restores_it(fresh):
    engine, target = fresh
    migrate.upgrade(engine, target, BEFORE_PARTITIONS)
    with engine.begin() as conn:
        write_candles(conn, batch("BTC-USD", Interval.M1, DEC_1 - 600, 20), NOW)  # Nov -> Dec
        write_candles(conn, batch("BTC-USD", Interval.D1, DEC_1 - 400 * 86_400, 400), NOW)
        write_candles(conn, batch("AAPL", Interval.H1, DEC_1 - 10 * 3600, 5), NOW)
        conn.execute(sa.text("UPDATE candles SET sma_20 = close / 2, drawdown = -0.25"))
        conn.execute(sa.text("UPDATE candles SET sma_20 = NULL WHERE interval = '1h'"))
        before = contents(conn)
        assert not partitions.is_partitioned(conn)

    from loguru import logger

    said: list[str] = []
    sink = logger.add(said.append, format="{message}")
    try:
        migrate.upgrade(engine, target)
    finally:
        logger.remove(sink)

    # how long it should take, said before it starts (a warning above a million rows)
    assert said[0].startswith("partitioning candles: about 425 rows"), said
    assert "expect about 0 s" in said[0] and "425 rows in" in said[-1]
    with engine.connect() as conn:
        assert partitions.is_partitioned(conn)
        assert contents(conn) == before
        assert placement(conn) == {
            "candles_1m_p2026_11": 10,
            "candles_1m_p2026_12": 10,
            "candles_1d_p2025": 400 - 334,
            "candles_1d_p2026": 334,
            "candles_1h_p2026": 5,
        }
        assert migrate.drift(conn) == []
        # the next periods exist before anything is written in them
        names = {p.name for p in partitions.existing(conn)}
        assert {"candles_1m_p2027_01", "candles_1d_p2027"} <= names or NOW.month != 12

    migrate.downgrade(engine, target, BEFORE_PARTITIONS)

    with engine.connect() as conn:
        assert not partitions.is_partitioned(conn)
        assert contents(conn) == before
        assert placement(conn) == {"candles": len(before)}
        tables = set(sa.inspect(conn).get_table_names())
        assert not any(partitions.is_partition(t) for t in tables)
        assert sa.inspect(conn).get_pk_constraint("candles")["name"] == "pk_candles"
    migrate.upgrade(engine, target)
    with engine.connect() as conn:
        assert contents(conn) == before


def test_writes_across_a_month_boundary_land_in_each_months_partition(app_factory):
    app = app_factory()
    with app.engine().begin() as conn:
        stats = write_candles(conn, batch("ETH-USD", Interval.M1, DEC_1 - 180, 6), NOW)
        # again, shifted: one new row, four changed ones merged through the staging table
        again = write_candles(conn, batch("ETH-USD", Interval.M1, DEC_1 - 60, 5, 50.0), NOW)
    assert (stats.inserted, again.inserted, again.updated) == (6, 1, 4)
    with app.engine().connect() as conn:
        assert placement(conn) == {"candles_1m_p2026_11": 3, "candles_1m_p2026_12": 4}
        stored = read_candles(conn, "ETH-USD", Interval.M1)
    assert stored.ts.tolist() == [DEC_1 - 180 + 60 * i for i in range(7)]
    assert stored.close.tolist()[-5:] == [50.0, 51.0, 52.0, 53.0, 54.0]


def test_new_rows_across_a_month_boundary_are_copied_into_each_months_partition(app_factory):
    # a first write across the boundary names each month's table: the parent routes nothing
    # (a COPY into the parent would hold its row lock until the commit)
    app = app_factory()
    with app.engine().begin() as conn:
        stats = write_candles(conn, batch("ETH-USD", Interval.M1, DEC_1 - 180, 6), NOW)
        locked = set(
            conn.execute(
                sa.text(
                    "SELECT relation::regclass::text FROM pg_locks WHERE pid = pg_backend_pid() "
                    "AND mode = 'RowExclusiveLock' AND relation IS NOT NULL"
                )
            ).scalars()
        )
    assert stats.inserted == 6
    assert {"candles_1m_p2026_11", "candles_1m_p2026_12"} <= locked, locked
    assert not locked & {"candles", "candles_1m"}, locked
    with app.engine().connect() as conn:
        assert placement(conn) == {"candles_1m_p2026_11": 3, "candles_1m_p2026_12": 3}


def test_a_merge_across_a_month_boundary_fills_holes_in_both_months(app_factory):
    # holes on both sides of the boundary and one changed close, in one merge through the
    # parent table
    app = app_factory()
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith(("UPDATE", "INSERT")):
            statements.append(statement)

    with app.engine().begin() as conn:
        write_candles(conn, batch("ETH-USD", Interval.M1, DEC_1 - 180, 6), NOW)
        conn.execute(
            sa.text("DELETE FROM candles WHERE ts IN (:a, :b)"),
            {
                "a": datetime(2026, 11, 30, 23, 58, tzinfo=UTC),
                "b": datetime(2026, 12, 1, 0, 1, tzinfo=UTC),
            },
        )
    again = batch("ETH-USD", Interval.M1, DEC_1 - 180, 6)
    again.close[0] = 7.0
    sa.event.listen(app.engine(), "before_cursor_execute", record)
    try:
        with app.engine().begin() as conn:
            stats = write_candles(conn, again, NOW)
    finally:
        sa.event.remove(app.engine(), "before_cursor_execute", record)

    assert (stats.inserted, stats.updated, stats.unchanged) == (2, 1, 3)
    with app.engine().connect() as conn:
        assert placement(conn) == {"candles_1m_p2026_11": 3, "candles_1m_p2026_12": 3}
        stored = read_candles(conn, "ETH-USD", Interval.M1)
    assert stored.close.tolist() == [7.0, *again.close[1:].tolist()]
    targets = {re.match(r"(UPDATE|INSERT INTO) (\w+)", s).group(2) for s in statements}
    assert targets == {"candles"}, statements  # one set of statements for both months


def test_a_merge_inside_one_month_addresses_that_months_partition(app_factory):
    app = app_factory()
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith(("UPDATE", "INSERT")):
            statements.append(statement)

    with app.engine().begin() as conn:
        write_candles(conn, batch("ETH-USD", Interval.M1, DEC_1, 5), NOW)
    again = batch("ETH-USD", Interval.M1, DEC_1 + 120, 5, price=50.0)  # 3 changed, 2 new
    sa.event.listen(app.engine(), "before_cursor_execute", record)
    try:
        with app.engine().begin() as conn:
            stats = write_candles(conn, again, NOW)
    finally:
        sa.event.remove(app.engine(), "before_cursor_execute", record)

    assert (stats.inserted, stats.updated) == (2, 3)
    with app.engine().connect() as conn:
        assert placement(conn) == {"candles_1m_p2026_12": 7}
        assert read_candles(conn, "ETH-USD", Interval.M1).close.tolist() == [
            100.0,
            101.0,
            *again.close.tolist(),
        ]
    targets = {re.match(r"(UPDATE|INSERT INTO) (\w+)", s).group(2) for s in statements}
    assert targets == {"candles_1m_p2026_12"}, statements


@pytest.mark.parametrize(
    ("interval", "when", "partition"),
    [
        (Interval.D1, datetime(1987, 10, 19, tzinfo=UTC), "candles_1d_p1987"),
        (Interval.M1, datetime(2041, 2, 28, 23, 59, tzinfo=UTC), "candles_1m_p2041_02"),
        (Interval.M15, datetime(2003, 12, 31, 23, 45, tzinfo=UTC), "candles_15m_p2003_12"),
    ],
)
def test_a_write_far_in_the_past_or_future_creates_its_partition(
    app_factory, interval, when, partition
):
    app = app_factory()
    with app.engine().begin() as conn:
        write_candles(conn, batch("BTC-USD", interval, epoch_of(when), 1), NOW)
    with app.engine().connect() as conn:
        assert placement(conn) == {partition: 1}
        assert partition in {p.name for p in partitions.existing(conn, interval)}


def test_an_ingest_creates_the_partitions_of_its_windows_and_the_next_period(app_factory):
    app = app_factory(ingestion_provider="synthetic", ingestion_lookback_days=2)
    from marketdata.pipeline import IngestRequest, run_ingest

    app.clock = lambda: datetime(2030, 7, 1, 0, 30, tzinfo=UTC)
    run_ingest(app, IngestRequest(symbols=["BTC-USD"], intervals=[Interval.M5]))
    with app.engine().connect() as conn:
        names = [p.name for p in partitions.existing(conn, Interval.M5)]
        placed = placement(conn)
    assert {"candles_5m_p2030_06", "candles_5m_p2030_07", "candles_5m_p2030_08"} <= set(names)
    assert set(placed) == {"candles_5m_p2030_06", "candles_5m_p2030_07"}


def test_partition_periods_and_names_round_trip():
    for interval in Interval:
        for when in (datetime(2024, 2, 29, 12, tzinfo=UTC), datetime(2026, 12, 31, tzinfo=UTC)):
            period = partitions.period_of(interval, epoch_of(when))
            assert period.start <= epoch_of(when) < period.end
            assert partitions.parse_name(period.name) == period
            assert partitions.period_of(interval, period.end).start == period.end
    assert partitions.parse_name("candles_1m_p2026") is None  # 1m partitions are monthly
    assert partitions.parse_name("candles_1d_p2026_01") is None
    assert partitions.parse_name("candles_stage") is None
    spanned = partitions.for_range(Interval.M1, DEC_1 - 60, DEC_1 + 60)
    assert [p.name for p in spanned] == ["candles_1m_p2026_11", "candles_1m_p2026_12"]


def explain(conn: sa.Connection, sql: str, **params) -> str:
    conn.execute(sa.text("SET enable_seqscan = off"))  # small tables: ask what it could use
    return "\n".join(conn.execute(sa.text(f"EXPLAIN {sql}"), params).scalars())


def touched(plan: str) -> set[str]:
    """The partitions a plan scans."""
    return {n for n in re.findall(r" on (candles_[0-9a-z_]+)", plan) if not n.endswith("_pkey")}


def test_read_paths_touch_only_the_partitions_they_need(app_factory):
    app = app_factory()
    with app.engine().begin() as conn:
        for month in range(1, 13):
            first = epoch_of(datetime(2025, month, 1, tzinfo=UTC))
            write_candles(conn, batch("BTC-USD", Interval.M1, first, 30), NOW)
        write_candles(conn, batch("BTC-USD", Interval.D1, DEC_1 - 300 * 86_400, 300), NOW)
    pair = "symbol = 'BTC-USD' AND interval = '1m'"
    with app.engine().connect() as conn:
        # verify's window, and a lookup of the close at a ROI anchor
        window = explain(
            conn,
            f"SELECT * FROM candles WHERE {pair} AND ts >= :a AND ts < :b ORDER BY ts",
            a=datetime(2025, 3, 2, tzinfo=UTC),
            b=datetime(2025, 3, 9, tzinfo=UTC),
        )
        anchor = explain(
            conn,
            f"SELECT close FROM candles WHERE {pair} AND ts <= :t ORDER BY ts DESC LIMIT 1",
            t=datetime(2025, 6, 15, tzinfo=UTC),
        )
        latest = explain(conn, f"SELECT * FROM candles WHERE {pair} ORDER BY ts DESC LIMIT 20")
    assert touched(window) == {"candles_1m_p2025_03"}, window
    assert "candles_1d" not in window + anchor + latest
    # ordered partitions: the newest first, and the LIMIT stops in the first one with a row
    assert touched(anchor) == {f"candles_1m_p2025_{m:02d}" for m in range(1, 7)}, anchor
    assert "Index Scan Backward" in anchor and "Sort" not in anchor, anchor
    assert "Merge Append" not in latest and "Sort" not in latest, latest
    assert "Index Scan Backward" in latest, latest


def planned_reads(app, work) -> list[str]:
    """The plans of every SELECT on candles that `work` runs, explained with the very
    statement and parameters it sent."""
    statements = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT") and "FROM candles" in statement:
            statements.append((statement, parameters))

    sa.event.listen(app.engine(), "before_cursor_execute", record)
    try:
        work()
    finally:
        sa.event.remove(app.engine(), "before_cursor_execute", record)
    with app.engine().connect() as conn:
        conn.execute(sa.text("SET enable_seqscan = off"))
        return [
            "\n".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {sql}", params))
            for sql, params in statements
        ]


def lookups(plan: str) -> list[str]:
    """A plan cut into its scalar subqueries (ROI's anchors are one each), or itself."""
    return [part for part in re.split(r"(?:InitPlan|SubPlan) \d+", plan) if " on candles_" in part]


def test_show_and_the_indicator_tail_plan_only_the_partitions_they_read(app_factory):
    # two years of monthly 1m partitions, each with a few bars, and the hours before NOW:
    # every read of `show` and of the write of one new candle (its warm-up closes, the
    # newest stored row, the ROI anchors) must be planned over the partitions it reads, not
    # all 25; the ROI since inception over the oldest partition only
    from marketdata.derive import write_with_derived
    from marketdata.reports import show

    app = app_factory(analytics_intervals="1m")
    app.clock = lambda: NOW
    now = epoch_of(NOW)
    with app.engine().begin() as conn:
        # other tests' 1m partitions (far in the future) would be planned too: start bare
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {partitions.interval_table(Interval.M1)}"))
        for month in range(24):
            first = epoch_of(datetime(2025 + month // 12, month % 12 + 1, 1, tzinfo=UTC))
            write_with_derived(conn, batch("BTC-USD", Interval.M1, first, 5), NOW, derive=True)
        recent = batch("BTC-USD", Interval.M1, now - 600 * 60, 600, price=200.0)
        write_with_derived(conn, recent, NOW, derive=True)
        partitions.ensure(conn, partitions.ahead(now, [Interval.M1]))
        assert len(partitions.existing(conn, Interval.M1)) == 25

    def tail() -> None:
        with app.engine().connect() as conn:
            transaction = conn.begin()
            write_with_derived(conn, batch("BTC-USD", Interval.M1, now, 1, 300.0), NOW, derive=True)
            transaction.rollback()

    def refresh() -> None:  # the cache refresher's reads of a group of committed pairs
        from marketdata.analytics.roi import anchors
        from marketdata.storage.candles import anchor_closes_many, read_latest_many

        pair = ("BTC-USD", Interval.M1)
        with app.engine().connect() as conn:
            newest = read_latest_many(conn, [pair], 101, now=now, with_indicators=True)[pair]
            anchor_closes_many(conn, {pair: anchors(int(newest.ts[-1]))})

    reads = planned_reads(app, lambda: show(app, "BTC-USD", Interval.M1, 20))
    reads += planned_reads(app, refresh)
    writes = planned_reads(app, tail)

    assert len(reads) >= 2 and len(writes) >= 2, (reads, writes)
    parts = [part for plan in reads + writes for part in lookups(plan)]
    since_inception = [p for p in parts if "candles_1m_p2025_01" in p]
    assert len(since_inception) == 2, since_inception  # show's and the refresher's
    for part in since_inception:
        assert touched(part) == {"candles_1m_p2025_01"}, part
        assert "Index Scan using" in part and "Backward" not in part, part
    for part in parts:
        assert len(touched(part)) <= 3, part


def test_roi_since_inception_is_the_first_candle_after_prunes_and_for_younger_pairs(
    app_factory,
):
    # the first candle is looked for in the oldest partition first: a pair that starts
    # later is found by the second look, and a prune (rows deleted inside the oldest
    # partition, then that partition dropped) moves the answer with it
    from marketdata.analytics.roi import Anchor
    from marketdata.storage.candles import anchor_closes_many
    from marketdata.storage.retention import prune

    app = app_factory()
    first = {"inception": Anchor(None)}
    btc, eth, btc_1d = ("BTC-USD", Interval.M1), ("ETH-USD", Interval.M1), ("BTC-USD", Interval.D1)
    jan, feb, mar = (epoch_of(datetime(2025, m, 1, tzinfo=UTC)) for m in (1, 2, 3))
    with app.engine().begin() as conn:
        # other tests' 1m partitions (far in the past) would be the oldest: start bare
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {partitions.interval_table(Interval.M1)}"))
        for month, start in enumerate((jan, feb, mar)):
            write_candles(conn, batch("BTC-USD", Interval.M1, start, 5, 100.0 * (month + 1)), NOW)
        write_candles(conn, batch("ETH-USD", Interval.M1, mar + 120, 5, 7.0), NOW)
        write_candles(conn, batch("BTC-USD", Interval.D1, DEC_1 - 3 * 86_400, 3, 50.0), NOW)

    def inception() -> dict[tuple[str, Interval], float | None]:
        with app.engine().connect() as conn:
            found = anchor_closes_many(conn, {btc: first, eth: first, btc_1d: first})
        return {pair: closes["inception"] for pair, closes in found.items()}

    assert inception() == {btc: 100.0, eth: 7.0, btc_1d: 50.0}
    with app.engine().begin() as conn:
        prune(conn, Interval.M1, jan + 120)  # the first two bars of January
    assert inception() == {btc: 102.0, eth: 7.0, btc_1d: 50.0}
    with app.engine().begin() as conn:
        assert prune(conn, Interval.M1, feb).rows == 3  # January's partition dropped
        assert partitions.existing(conn, Interval.M1)[0].name == "candles_1m_p2025_02"
    assert inception() == {btc: 200.0, eth: 7.0, btc_1d: 50.0}


@pytest.mark.parametrize("period", ["month", "week"])
def test_aggregates_of_the_latest_periods_plan_only_the_newest_years(app_factory, period):
    # seven years of daily bars in seven yearly partitions: `show --aggregate` of the last
    # three periods reads this year's partition (its rows, the newest, and the day before
    # them), never the older years
    from marketdata.reports import aggregates

    app = app_factory()
    app.clock = lambda: NOW
    first = epoch_of(datetime(2020, 1, 1, tzinfo=UTC))
    with app.engine().begin() as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {partitions.interval_table(Interval.D1)}"))
        days = (epoch_of(NOW) - first) // 86_400
        write_candles(conn, batch("BTC-USD", Interval.D1, first, days), NOW)
        assert len(partitions.existing(conn, Interval.D1)) == 7

    plans = planned_reads(app, lambda: aggregates(app, "BTC-USD", period, last=3))

    assert len(plans) >= 3, plans
    for plan in plans:
        assert touched(plan) == {"candles_1d_p2026"}, plan
