"""Retention: removing candles older than a cutoff, by dropping whole partitions where it can.

On partitioned PostgreSQL every time partition of the interval that ends at or before the
cutoff is dropped (no row-by-row delete, no WAL per row, its space back to the system at
once); only the one partition the cutoff falls inside loses rows by DELETE, and only those
strictly older than the cutoff. On SQLite (and an unpartitioned table) it is one DELETE.
A candle at or after the cutoff is never touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from marketdata.domain import Interval, utc_from_epoch
from marketdata.storage import partitions

if TYPE_CHECKING:
    from sqlalchemy import Connection


@dataclass(frozen=True)
class DroppedPartition:
    """A whole partition removed (or that a dry run would remove)."""

    name: str
    rows: int
    bytes: int


@dataclass
class Pruned:
    """What pruning one interval did (or, in a dry run, would do).

    Attributes:
        interval: The interval pruned.
        cutoff: Candles starting before this (epoch seconds) are removed.
        dropped: Whole partitions removed, with their rows and total bytes.
        rows_deleted: Rows removed by DELETE (the boundary partition, or SQLite's table).
        bytes_freed: Bytes given back: dropped partitions' size on PostgreSQL (a DELETE's
            space is reused after VACUUM, not counted); pages the DELETE put on SQLite's
            free list.
        dry_run: Nothing was written.
    """

    interval: Interval
    cutoff: int
    dropped: list[DroppedPartition] = field(default_factory=list)
    rows_deleted: int = 0
    bytes_freed: int = 0
    dry_run: bool = False

    @property
    def rows(self) -> int:
        """Every row removed: in dropped partitions and by DELETE."""
        return self.rows_deleted + sum(p.rows for p in self.dropped)


def prune(conn: Connection, interval: Interval, cutoff: int, *, dry_run: bool = False) -> Pruned:
    """Remove the candles of `interval` that start before `cutoff`, in the caller's
    transaction (a dry run counts, and writes nothing).

    Args:
        conn: A connection; the caller commits.
        interval: Which candles.
        cutoff: Epoch seconds; candles at or after it are kept.
        dry_run: Count what would go; remove nothing.
    """
    result = Pruned(interval, cutoff, dry_run=dry_run)
    if partitions.is_partitioned(conn):
        _prune_partitions(conn, result)
    elif conn.dialect.name == "sqlite":
        _prune_sqlite(conn, result)
    else:
        result.rows_deleted = _delete(conn, "candles", interval, cutoff, dry_run=dry_run)
    return result


def _prune_partitions(conn: Connection, result: Pruned) -> None:
    from sqlalchemy import text

    cutoff = result.cutoff
    for period in partitions.existing(conn, result.interval):
        if period.start >= cutoff:
            break
        if period.end > cutoff:  # the boundary: only its rows before the cutoff go
            result.rows_deleted += _delete(
                conn, period.name, result.interval, cutoff, dry_run=result.dry_run
            )
            continue
        rows, size = conn.execute(
            text(f"SELECT count(*), pg_total_relation_size(to_regclass(:n)) FROM {period.name}"),
            {"n": period.name},
        ).one()
        result.dropped.append(DroppedPartition(period.name, int(rows), int(size)))
        if not result.dry_run:
            conn.execute(text(f"DROP TABLE {period.name}"))
    result.bytes_freed = sum(p.bytes for p in result.dropped)


def _delete(conn: Connection, table: str, interval: Interval, cutoff: int, *, dry_run: bool) -> int:
    """Delete (or count) the rows of `interval` in `table` starting before `cutoff`."""
    from sqlalchemy import text

    where = "WHERE interval = :interval AND ts < :cutoff"
    params = {"interval": interval.value, "cutoff": _bound(conn, cutoff)}
    if dry_run:
        return int(conn.execute(text(f"SELECT count(*) FROM {table} {where}"), params).scalar_one())
    return int(conn.execute(text(f"DELETE FROM {table} {where}"), params).rowcount)


def _prune_sqlite(conn: Connection, result: Pruned) -> None:
    """One DELETE; the bytes are the pages it put on the free list. A dry run deletes in
    the transaction and rolls it back, so its figures are the real ones."""
    from sqlalchemy import text

    def free_pages() -> int:
        return int(conn.execute(text("PRAGMA freelist_count")).scalar_one())

    page_size = int(conn.execute(text("PRAGMA page_size")).scalar_one())
    savepoint = conn.begin_nested()
    before = free_pages()
    result.rows_deleted = _delete(conn, "candles", result.interval, result.cutoff, dry_run=False)
    result.bytes_freed = (free_pages() - before) * page_size
    if result.dry_run:
        savepoint.rollback()
    else:
        savepoint.commit()


def _bound(conn: Connection, cutoff: int) -> object:
    """The cutoff as the backend stores timestamps (SQLite: the text form candles.py writes)."""
    moment = utc_from_epoch(cutoff)
    if conn.dialect.name == "sqlite":
        return moment.strftime("%Y-%m-%d %H:%M:%S.%f")
    return moment
