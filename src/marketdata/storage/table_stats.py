"""How big the candles are: rows, oldest and newest candle, table and index bytes, per
interval and per partition, from the database's own catalog.

PostgreSQL: each time partition counted and sized (pg_table_size, pg_indexes_size); an
unpartitioned table is sized as one. SQLite: the `dbstat` table where the library has it,
else the file's page count (then the index share is unknown and reported as None).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from marketdata.domain import Interval, epoch_of
from marketdata.storage import partitions

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy import Connection


@dataclass(frozen=True)
class TableStats:
    """One interval, or one physical table (a partition, or the whole unpartitioned table).

    Attributes:
        name: The interval ('1m') or the table's name.
        interval: The interval its rows have; None for a table holding several.
        rows: Candles in it (counted, not estimated).
        oldest: Start of its oldest candle (epoch seconds); None when empty.
        newest: Start of its newest candle.
        table_bytes: Bytes of its rows on disk; None where the catalog cannot say.
        index_bytes: Bytes of its indexes (the primary key); None where unknown.
        start: A time partition's lower bound (epoch seconds), else None.
        end: Its upper bound (exclusive).
    """

    name: str
    interval: str | None
    rows: int
    oldest: int | None
    newest: int | None
    table_bytes: int | None
    index_bytes: int | None
    start: int | None = None
    end: int | None = None

    @property
    def bytes_per_candle(self) -> float | None:
        """Table and index bytes per row; None when empty or unknown."""
        if not self.rows or self.table_bytes is None or self.index_bytes is None:
            return None
        return (self.table_bytes + self.index_bytes) / self.rows


@dataclass
class CandleStats:
    """Candles per interval and per physical table, and how the sizes were measured."""

    backend: str
    partitioned: bool
    source: str  # pg_catalog | dbstat | page_count
    intervals: list[TableStats] = field(default_factory=list)
    tables: list[TableStats] = field(default_factory=list)

    @property
    def total(self) -> TableStats:
        """Every candle together."""
        return _combined("all", None, self.tables)


def candle_stats(conn: Connection) -> CandleStats:
    """Counts and sizes of the candles (reads every row once to count it exactly)."""
    if partitions.is_partitioned(conn):
        return _partitioned(conn)
    if conn.dialect.name == "sqlite":
        return _sqlite(conn)
    return _plain_postgresql(conn)


def _partitioned(conn: Connection) -> CandleStats:
    from sqlalchemy import text

    stats = CandleStats("postgresql", partitioned=True, source="pg_catalog")
    for period in partitions.existing(conn):
        rows, oldest, newest, table, index = conn.execute(
            text(
                "SELECT count(*), min(ts), max(ts), pg_table_size(to_regclass(:n)), "
                f"pg_indexes_size(to_regclass(:n)) FROM {period.name}"
            ),
            {"n": period.name},
        ).one()
        stats.tables.append(
            TableStats(
                period.name,
                period.interval.value,
                int(rows),
                _epoch(oldest),
                _epoch(newest),
                int(table),
                int(index),
                period.start,
                period.end,
            )
        )
    for interval in Interval:
        mine = [t for t in stats.tables if t.interval == interval.value]
        if any(t.rows for t in mine):
            stats.intervals.append(_combined(interval.value, interval.value, mine))
    return stats


def _plain_postgresql(conn: Connection) -> CandleStats:
    from sqlalchemy import text

    stats = CandleStats("postgresql", partitioned=False, source="pg_catalog")
    stats.intervals = _per_interval(conn)
    table, index = conn.execute(
        text("SELECT pg_table_size('candles'), pg_indexes_size('candles')")
    ).one()
    stats.tables = [_whole(stats.intervals, int(table), int(index))]
    return stats


def _sqlite(conn: Connection) -> CandleStats:
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    intervals = _per_interval(conn)
    indexes = [row[1] for row in conn.execute(text("PRAGMA index_list(candles)"))]
    try:
        rows = conn.execute(text("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name")).all()
        sizes: dict[str, int] = {str(name): int(size) for name, size in rows}
    except OperationalError:  # a SQLite built without the dbstat table
        pages = conn.execute(text("PRAGMA page_count")).scalar_one()
        size = conn.execute(text("PRAGMA page_size")).scalar_one()
        stats = CandleStats("sqlite", partitioned=False, source="page_count")
        stats.intervals = intervals
        stats.tables = [_whole(intervals, int(pages) * int(size), None)]
        return stats
    stats = CandleStats("sqlite", partitioned=False, source="dbstat")
    stats.intervals = intervals
    table = sizes.get("candles", 0)
    index = sum(sizes.get(str(name), 0) for name in indexes)
    stats.tables = [_whole(intervals, table, index)]
    return stats


def _per_interval(conn: Connection) -> list[TableStats]:
    """Rows, oldest and newest per interval of one plain table (sizes unknown per interval)."""
    from sqlalchemy import func, select

    from marketdata.storage.schema import candles

    c = candles.c
    rows = conn.execute(
        select(c.interval, func.count(), func.min(c.ts), func.max(c.ts)).group_by(c.interval)
    ).all()
    order = [i.value for i in Interval]
    found = [
        TableStats(name, name, int(n), _epoch(low), _epoch(high), None, None)
        for name, n, low, high in rows
    ]
    return sorted(found, key=lambda t: order.index(t.name) if t.name in order else len(order))


def _whole(intervals: list[TableStats], table: int | None, index: int | None) -> TableStats:
    combined = _combined("candles", None, intervals)
    return TableStats(
        "candles", None, combined.rows, combined.oldest, combined.newest, table, index
    )


def _combined(name: str, interval: str | None, parts: list[TableStats]) -> TableStats:
    """Several tables' figures as one (sizes None if any part's is unknown)."""
    oldest = [t.oldest for t in parts if t.oldest is not None]
    newest = [t.newest for t in parts if t.newest is not None]
    tables = [t.table_bytes for t in parts]
    indexes = [t.index_bytes for t in parts]
    return TableStats(
        name,
        interval,
        sum(t.rows for t in parts),
        min(oldest) if oldest else None,
        max(newest) if newest else None,
        None if None in tables else sum(t for t in tables if t is not None),
        None if None in indexes else sum(t for t in indexes if t is not None),
    )


def _epoch(value: datetime | None) -> int | None:
    """A min()/max() of ts as epoch seconds (aware on both backends: PostgreSQL's timestamptz,
    UTCDateTime's result on SQLite)."""
    return None if value is None else epoch_of(value)
