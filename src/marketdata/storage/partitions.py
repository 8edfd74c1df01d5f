"""Time partitions of `candles` on PostgreSQL: their names, spans, listing and creation.

The table is partitioned twice (migration 0011): by LIST on the interval, one partition per
interval (`candles_1m`), each of those by RANGE on `ts` into periods sized for its bar
length: a calendar month for 1m, 5m and 15m bars, a calendar year for 1h, 6h and 1d.
So that a minute partition and a daily one hold rows of the same order (about 43,200 and
365 per market), that retention per interval (RETENTION_1M) drops whole partitions of that
interval only, and that a read of one pair's recent bars touches one or two small indexes.

There is no DEFAULT partition: a row for a period without a partition fails loudly rather
than piling up where no retention reaches it. The partitions the next writes need are
created ahead: by the ingest before it writes (`prepare_windows`), by `marketdata db
maintain`, and, as the last guard, by `write_candles` for a batch that reaches further.
SQLite keeps one plain table; every function here is for PostgreSQL only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING

from marketdata.domain import Interval, epoch_of, utc_from_epoch

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sqlalchemy import Connection

TABLE = "candles"
_NAME = re.compile(r"^candles_(?P<interval>[0-9a-z]+)_p(?P<year>\d{4})(?:_(?P<month>\d{2}))?$")
# Serialises partition creation between writers (pg_advisory_xact_lock key: "candlePT").
_CREATE_LOCK = 0x63616E646C655054


class Span(Enum):
    """How much time one range partition covers."""

    MONTH = "month"
    YEAR = "year"


SPANS: dict[Interval, Span] = {
    Interval.M1: Span.MONTH,
    Interval.M5: Span.MONTH,
    Interval.M15: Span.MONTH,
    Interval.H1: Span.YEAR,
    Interval.H6: Span.YEAR,
    Interval.D1: Span.YEAR,
}
"""The period of one partition, per interval (see the module docstring for why)."""


@dataclass(frozen=True)
class Period:
    """One range partition: the rows of `interval` with start <= ts < end (epoch seconds)."""

    start: int
    end: int
    interval: Interval

    @property
    def name(self) -> str:
        """The partition's table name: candles_1m_p2026_12, candles_1d_p2026."""
        moment = utc_from_epoch(self.start)
        if SPANS[self.interval] is Span.YEAR:
            return f"{interval_table(self.interval)}_p{moment.year:04d}"
        return f"{interval_table(self.interval)}_p{moment.year:04d}_{moment.month:02d}"


def interval_table(interval: Interval) -> str:
    """The list partition holding one interval's rows (itself partitioned by time)."""
    return f"{TABLE}_{interval.value}"


def period_of(interval: Interval, epoch: int) -> Period:
    """The partition period that holds a candle starting at `epoch`."""
    moment = utc_from_epoch(epoch)
    if SPANS[interval] is Span.YEAR:
        start = datetime(moment.year, 1, 1, tzinfo=UTC)
        end = datetime(moment.year + 1, 1, 1, tzinfo=UTC)
    else:
        start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
        following = moment.month % 12 + 1
        end = datetime(moment.year + (moment.month == 12), following, 1, tzinfo=UTC)
    return Period(epoch_of(start), epoch_of(end), interval)


def periods(interval: Interval, first: int, last: int) -> list[Period]:
    """Every period holding some time in [first, last] (epoch seconds), ascending."""
    found = [period_of(interval, first)]
    while found[-1].end <= last:
        found.append(period_of(interval, found[-1].end))
    return found


def parse_name(name: str) -> Period | None:
    """The period a partition's table name stands for; None for any other name."""
    match = _NAME.match(name)
    if match is None:
        return None
    try:
        interval = Interval(match["interval"])
    except ValueError:
        return None
    month = match["month"]
    if (month is None) != (SPANS[interval] is Span.YEAR):
        return None
    start = datetime(int(match["year"]), int(month or 1), 1, tzinfo=UTC)
    return period_of(interval, epoch_of(start))


def is_partition(name: str) -> bool:
    """Whether a table name is one of candles' partitions (which the models do not list)."""
    return parse_name(name) is not None or name in {interval_table(i) for i in Interval}


def include_name(name: str | None, type_: str, parents: object) -> bool:
    """Alembic's include_name hook: leave candles' partitions (tables the models do not
    declare) out of drift checks and autogenerate."""
    return not (type_ == "table" and name is not None and is_partition(name))


def is_partitioned(conn: Connection) -> bool:
    """Whether `candles` is a partitioned table here (PostgreSQL after migration 0011)."""
    from sqlalchemy import text

    if conn.dialect.name != "postgresql":
        return False
    kind = conn.execute(
        text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:name)"), {"name": TABLE}
    ).scalar()
    return kind == "p"


def existing(conn: Connection, interval: Interval | None = None) -> list[Period]:
    """The range partitions that exist (of one interval, or all), ascending by interval
    then time."""
    from sqlalchemy import text

    rows = conn.execute(
        text(
            "SELECT child.relname FROM pg_inherits AS i "
            "JOIN pg_class AS child ON child.oid = i.inhrelid "
            "WHERE i.inhparent = ANY(SELECT to_regclass(p) "
            "FROM unnest(CAST(:parents AS text[])) AS p)"
        ),
        {"parents": [interval_table(i) for i in ([interval] if interval else list(Interval))]},
    ).scalars()
    found = [p for p in (parse_name(name) for name in rows) if p is not None]
    return sorted(found, key=_order)


def oldest(conn: Connection, intervals: Iterable[Interval]) -> dict[Interval, Period]:
    """The oldest range partition of each of `intervals` that has one, in one statement.

    Partition names sort by time (candles_1m_p2025_12 < candles_1m_p2026_01), so each is one
    step along pg_class's index on names: ~0.15 ms a round trip, a third of what walking
    pg_inherits costs (`existing`), whatever the number of partitions.
    """
    from sqlalchemy import text

    wanted = list(intervals)
    if not wanted:
        return {}
    params: dict[str, str] = {}
    firsts = []
    for i, interval in enumerate(wanted):
        params |= {
            f"a{i}": f"{interval_table(interval)}_p",
            f"b{i}": f"{interval_table(interval)}_q",
        }
        firsts.append(
            f"(SELECT relname FROM pg_class WHERE relname > :a{i} AND relname < :b{i} "
            "AND relispartition AND relnamespace = CAST(current_schema() AS regnamespace) "
            "ORDER BY relname LIMIT 1)"
        )
    row = conn.execute(text("SELECT " + ", ".join(firsts)), params).one()
    found = (parse_name(name) for name in row if name is not None)
    return {p.interval: p for p in found if p is not None}


def _order(period: Period) -> tuple[int, int]:
    """Interval (in the enum's order, shortest first), then time."""
    return list(Interval).index(period.interval), period.start


def ensure(conn: Connection, wanted: Iterable[Period]) -> list[Period]:
    """Create the partitions among `wanted` that do not exist yet; the ones created.

    One catalog query when they all exist (the usual case, cheap enough for every write).
    Creation takes a transaction-scoped advisory lock, so two writers needing the same new
    partition create it once; creating a partition locks its parent briefly, which is why
    the ingest and `db maintain` create them ahead, in a transaction of their own.
    """
    return _ensure(conn, wanted)[1]


def _ensure(conn: Connection, wanted: Iterable[Period]) -> tuple[bool, list[Period]]:
    """`ensure`, and whether candles is partitioned here (learnt from the same query)."""
    from sqlalchemy import text

    needed = sorted(set(wanted), key=_order)
    if not needed or conn.dialect.name != "postgresql":
        return False, []
    names = [p.name for p in needed] + [interval_table(p.interval) for p in needed]
    kind, missing = conn.execute(
        text(
            "SELECT (SELECT relkind FROM pg_class WHERE oid = to_regclass(:table)), "
            "ARRAY(SELECT n FROM unnest(CAST(:names AS text[])) AS n "
            "WHERE to_regclass(n) IS NULL)"
        ),
        {"table": TABLE, "names": names},
    ).one()
    if kind != "p" or not missing:
        return kind == "p", []
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CREATE_LOCK})
    created = []
    for period in needed:
        if period.name not in missing and interval_table(period.interval) not in missing:
            continue
        if _create(conn, period):
            created.append(period)
    return True, created


def ensure_placed(conn: Connection, interval: Interval, first: int, last: int) -> list[Period]:
    """Before a write of candles starting from `first` to `last` (epoch seconds): create the
    partitions they need if missing, as `ensure` does, and return the periods they span,
    ascending (empty where candles is not partitioned). A write can then address each
    period's partition itself: no routing through the parent, nothing planned over it."""
    wanted = for_range(interval, first, last + 1)
    partitioned = _ensure(conn, wanted)[0]
    return wanted if partitioned else []


def _create(conn: Connection, period: Period) -> bool:
    """Create one range partition (and its interval's list partition if need be); False if
    another writer made it first."""
    from sqlalchemy import text

    parent = interval_table(period.interval)
    # names and bounds come from the Interval enum and integer epochs, never from input
    conn.execute(
        text(
            f"CREATE TABLE IF NOT EXISTS {parent} PARTITION OF {TABLE} "
            f"FOR VALUES IN ('{period.interval.value}') PARTITION BY RANGE (ts)"
        )
    )
    exists = conn.execute(text("SELECT to_regclass(:n)"), {"n": period.name}).scalar()
    if exists is not None:
        return False
    conn.execute(
        text(
            f"CREATE TABLE {period.name} PARTITION OF {parent} "
            f"FOR VALUES FROM ('{_literal(period.start)}') TO ('{_literal(period.end)}')"
        )
    )
    return True


def _literal(epoch: int) -> str:
    return utc_from_epoch(epoch).strftime("%Y-%m-%d %H:%M:%S+00")


def ahead(now: int, intervals: Iterable[Interval] = tuple(Interval)) -> list[Period]:
    """The periods writes at `now` and just after need: the current one and the next, per
    interval (so a write at a month's turn never waits on a CREATE)."""
    found = []
    for interval in intervals:
        current = period_of(interval, now)
        found += [current, period_of(interval, current.end)]
    return found


def for_range(interval: Interval, start: int, end: int) -> list[Period]:
    """The periods covering candles starting in [start, end) (empty for an empty range)."""
    if end <= start:
        return []
    return periods(interval, start, end - 1)


def prepare_windows(conn: Connection, spans: Iterable[tuple[Interval, int, int]], now: int) -> int:
    """Before an ingest writes: create the partitions its windows ([start, end) per
    interval) and the next period need, in the caller's short transaction; how many were
    made. A no-op off PostgreSQL or on an unpartitioned table."""
    if not is_partitioned(conn):
        return 0
    wanted: set[Period] = set()
    intervals: set[Interval] = set()
    for interval, start, end in spans:
        wanted.update(for_range(interval, start, end))
        intervals.add(interval)
    wanted.update(ahead(now, intervals))
    return len(ensure(conn, wanted))
