"""Candle reads and idempotent writes: binary COPY + guarded UPDATE on PostgreSQL,
batched upserts on SQLite. Only rows that changed are ever rewritten."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from marketdata.domain import DAY, Candles, Interval, epoch_of, utc_from_epoch
from marketdata.storage.schema import INDICATOR_COLUMNS
from marketdata.storage.schema import candles as candles_table

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence

    from numpy.typing import NDArray
    from sqlalchemy import Connection

    from marketdata.analytics.roi import Anchor
    from marketdata.storage.partitions import Period

PRICE_COLUMNS = ("open", "high", "low", "close", "volume")
# How far before the span of N bars a bounded read of the newest rows starts: a market that
# trades only in sessions has its last N bars spread over more time (nights, weekends).
_K = TypeVar("_K")
_V = TypeVar("_V")

_SESSION_SLACK = 4 * DAY
# Derived values computed incrementally or in full agree to ~1e-12; closer than this is equal.
DERIVED_RTOL = 1e-9


@dataclass(frozen=True, slots=True)
class WriteStats:
    """What one write did."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0


def last_ts(
    conn: Connection, symbol: str, interval: Interval, *, since: int | None = None
) -> int | None:
    """Epoch seconds of the newest stored candle of a pair (an index-only lookup); with
    `since`, of the newest at or after it (None when there is none), which PostgreSQL plans
    over the time partitions from `since` on only."""
    from sqlalchemy import func, select

    c = candles_table.c
    query = select(func.max(c.ts)).where(c.symbol == symbol, c.interval == interval.value)
    if since is not None:
        query = query.where(c.ts >= utc_from_epoch(since))
    value = conn.execute(query).scalar()
    if value is None:
        return None
    return epoch_of(value)  # UTCDateTime makes it aware on both backends


def last_ts_many(conn: Connection, symbols: list[str], interval: Interval) -> dict[str, int | None]:
    """`last_ts` of many symbols at one interval. On PostgreSQL one statement: an index-only
    lookup per symbol, without a round trip each (a tick of 10,000 pairs plans in one query)."""
    if conn.dialect.name != "postgresql":
        return {symbol: last_ts(conn, symbol, interval) for symbol in symbols}
    from sqlalchemy import text

    rows = conn.execute(
        text(
            "SELECT s.symbol, (SELECT max(c.ts) FROM candles c "
            "WHERE c.symbol = s.symbol AND c.interval = :interval) "
            "FROM unnest(CAST(:symbols AS text[])) AS s(symbol)"
        ),
        {"symbols": array_text(symbols), "interval": interval.value},
    )
    return {symbol: None if value is None else epoch_of(value) for symbol, value in rows}


def stored_values(
    conn: Connection, batches: list[Candles], derived: Collection[Interval] = ()
) -> dict[tuple[str, str, int], tuple[float, float, float, float, float] | None]:
    """The stored (open, high, low, close, volume) at the times of small batches, keyed by
    (symbol, interval, ts): one query per interval over the time span they cover. For the
    `derived` intervals (ANALYTICS_INTERVALS) a row stored without its indicators maps to
    None: it is not stored as a write would store it."""
    from sqlalchemy import literal, select

    c = candles_table.c
    found: dict[tuple[str, str, int], tuple[float, float, float, float, float] | None] = {}
    for interval in {b.interval for b in batches if len(b)}:
        mine = [b for b in batches if b.interval == interval and len(b)]
        # drawdown is defined on every row once indicators are computed: null means none were
        underived = c.drawdown.is_(None) if interval in derived else literal(False)
        query = select(
            c.symbol,
            _epoch_seconds(conn, c.ts),
            c.open,
            c.high,
            c.low,
            c.close,
            c.volume,
            underived,
        ).where(
            c.interval == interval.value,
            c.symbol.in_(sorted({b.symbol for b in mine})),
            c.ts >= utc_from_epoch(min(int(b.ts[0]) for b in mine)),
            c.ts <= utc_from_epoch(max(int(b.ts[-1]) for b in mine)),
        )
        for symbol, ts, *values, missing in conn.execute(query):
            key = (symbol, interval.value, int(ts))
            found[key] = None if missing else tuple(float(v) for v in values)  # type: ignore[assignment]
    return found


def read_candles(
    conn: Connection,
    symbol: str,
    interval: Interval,
    start: int | None = None,
    end: int | None = None,
    *,
    last: int | None = None,
    with_indicators: bool = False,
) -> Candles:
    """Stored candles of a pair in [start, end), ascending; `last` keeps only the newest N.

    With `with_indicators` the derived columns come along (NaN where undefined).
    """
    from sqlalchemy import select

    c = candles_table.c
    derived = [c[name] for name in INDICATOR_COLUMNS.values()] if with_indicators else []
    query = select(
        _epoch_seconds(conn, c.ts), c.open, c.high, c.low, c.close, c.volume, c.provider, *derived
    ).where(c.symbol == symbol, c.interval == interval.value)
    if start is not None:
        query = query.where(c.ts >= utc_from_epoch(start))
    if end is not None:
        query = query.where(c.ts < utc_from_epoch(end))
    query = query.order_by(c.ts.desc()).limit(last) if last is not None else query.order_by(c.ts)
    rows = conn.execute(query).all()
    if not rows:
        empty = Candles.empty(symbol, interval, "")
        if not with_indicators:
            return empty
        return empty.with_indicators(
            {name: np.empty(0, dtype=np.float64) for name in INDICATOR_COLUMNS}
        )
    # one array per column, straight from the row tuples; numpy turns NULL into NaN
    order = slice(None, None, -1) if last is not None else slice(None)
    columns = list(zip(*rows[order], strict=True))
    provider = str(columns[6][-1])
    open_, high, low, close, volume = (np.array(columns[i], dtype=np.float64) for i in range(1, 6))
    batch = Candles(
        symbol,
        interval,
        provider,
        np.array(columns[0], dtype=np.int64),
        open_,
        high,
        low,
        close,
        volume,
    )
    if not with_indicators:
        return batch
    return batch.with_indicators(
        {
            public: np.array(columns[7 + i], dtype=np.float64)
            for i, public in enumerate(INDICATOR_COLUMNS)
        }
    )


def recent_floor(interval: Interval, before: int, bars: int) -> int:
    """A lower time bound that the newest `bars` candles before `before` of a current pair
    lie above: the start of the time partition holding a point twice their span (plus a
    few days of closed sessions) back. A read bounded by it is planned over one or two
    partitions instead of all of them; one that finds fewer rows reads again unbounded."""
    from marketdata.storage.partitions import period_of

    return period_of(interval, before - 2 * bars * interval.seconds - _SESSION_SLACK).start


def read_latest(
    conn: Connection,
    symbol: str,
    interval: Interval,
    last: int,
    *,
    now: int,
    with_indicators: bool = False,
) -> Candles:
    """The newest `last` candles of a pair, ascending (as `read_candles(..., last=last)`).

    On PostgreSQL it reads from `recent_floor(now)` first, so the query is planned over the
    newest partitions only (planning grew with the partitions: 2 to 4.5 ms at 37);
    only a pair with fewer rows since then (stale, or short) is read again without it.
    """
    if conn.dialect.name != "postgresql":
        return read_candles(conn, symbol, interval, last=last, with_indicators=with_indicators)
    floor = recent_floor(interval, now, last)
    found = read_candles(conn, symbol, interval, floor, last=last, with_indicators=with_indicators)
    if len(found) >= last:
        return found
    return read_candles(conn, symbol, interval, last=last, with_indicators=with_indicators)


def read_latest_many(
    conn: Connection,
    pairs: Sequence[tuple[str, Interval]],
    last: int,
    *,
    now: int,
    with_indicators: bool = False,
) -> dict[tuple[str, Interval], Candles]:
    """`read_latest` of several pairs, by (symbol, interval), in one statement per
    `_PAIRS_PER_STATEMENT` pairs (pairs with nothing stored are absent).

    Each pair's read is its own `ORDER BY ts DESC LIMIT last` (a member of a UNION ALL; on
    PostgreSQL a LATERAL read planned once for all), so it walks the primary key backwards
    and stops (the cost does not grow with history); on PostgreSQL each is bounded by
    `recent_floor(now)` (planned over the newest partitions only), and the pairs with fewer
    rows since then are read again, together, without it.
    """
    postgresql = conn.dialect.name == "postgresql"
    floors = {pair: recent_floor(pair[1], now, last) if postgresql else None for pair in pairs}
    found = _newest_rows(conn, floors, last, with_indicators)
    short = [p for p in pairs if floors[p] is not None and len(found.get(p, ())) < last]
    if short:
        found.update(_newest_rows(conn, dict.fromkeys(short), last, with_indicators))
    return found


_PAIRS_PER_STATEMENT = 100
"""Pairs read by one UNION ALL (SQLite allows 500 members by default)."""


def _newest_rows(
    conn: Connection,
    floors: Mapping[tuple[str, Interval], int | None],
    last: int,
    with_indicators: bool,
) -> dict[tuple[str, Interval], Candles]:
    # SQL text, one member per pair: SQLAlchemy compiling a construct of a new size (most
    # groups are) cost more than the reads themselves
    from sqlalchemy import text

    columns = ", ".join(
        [*_PAIR_COLUMNS[:2], f"{_epoch_sql(conn)} AS epoch", *_PAIR_COLUMNS[2:]]
        + (list(INDICATOR_COLUMNS.values()) if with_indicators else [])
    )
    if conn.dialect.name == "postgresql":
        return _newest_rows_lateral(conn, floors, last, columns, with_indicators)
    # SQLite: no partitions to plan over, so no floors (read_latest_many gives none)
    pairs = list(floors)
    found: dict[tuple[str, Interval], Candles] = {}
    for at in range(0, len(pairs), _PAIRS_PER_STATEMENT):
        part = pairs[at : at + _PAIRS_PER_STATEMENT]
        members: list[str] = []
        params: dict[str, Any] = {"last": last}
        for i, (symbol, interval) in enumerate(part):
            params |= {f"s{i}": symbol, f"v{i}": interval.value}
            members.append(
                f"SELECT * FROM (SELECT {columns} FROM candles WHERE symbol = :s{i} AND "
                f"interval = :v{i} ORDER BY ts DESC LIMIT :last) AS m{i}"
            )
        statement = _typed(text(" UNION ALL ".join(members)), params)
        rows = sorted(conn.execute(statement, params).all(), key=_pair_order)
        by_name = {(s, i.value): i for s, i in part}
        found |= _split_pairs(rows, by_name, len(INDICATOR_COLUMNS) if with_indicators else 0)
    return found


def _newest_rows_lateral(
    conn: Connection,
    floors: Mapping[tuple[str, Interval], int | None],
    last: int,
    columns: str,
    with_indicators: bool,
) -> dict[tuple[str, Interval], Candles]:
    """`_newest_rows` on PostgreSQL: one statement per (interval, floor), each pair's read
    a LATERAL member over an array of symbols. PostgreSQL plans the read once for all the
    pairs (a UNION ALL member each was planned each, most of a group's time), over the
    partitions of the interval from the floor on, all of them bound by constants. The
    symbols travel as one array parameter, so the statement's text is the same whatever
    their number: compiled once (a VALUES list of a parameter each was compiled afresh for
    each new size, and its text parsed again by the driver)."""
    from sqlalchemy import text

    groups: dict[tuple[Interval, int | None], list[str]] = {}
    for (symbol, interval), floor in floors.items():
        groups.setdefault((interval, floor), []).append(symbol)
    found: dict[tuple[str, Interval], Candles] = {}
    for (interval, floor), symbols in _chunked(groups):
        params: dict[str, Any] = {"last": last, "interval": interval.value}
        params["symbols"] = array_text(symbols)
        where = "symbol = v.s AND interval = :interval"
        if floor is not None:
            where += " AND ts >= :floor"
            params["floor"] = utc_from_epoch(floor)
        statement = text(
            "SELECT m.* FROM unnest(CAST(:symbols AS text[])) AS v(s) CROSS JOIN LATERAL "
            f"(SELECT {columns} FROM candles WHERE {where} ORDER BY ts DESC LIMIT :last) AS m"
        )
        rows = sorted(conn.execute(statement, params).all(), key=_pair_order)
        by_name = {(s, interval.value): interval for s in symbols}
        found |= _split_pairs(rows, by_name, len(INDICATOR_COLUMNS) if with_indicators else 0)
    return found


_LATERAL_ROWS = 1000
"""Pairs of one LATERAL statement (bounds the rows of one result)."""


def _chunked(groups: Mapping[_K, list[_V]]) -> Iterator[tuple[_K, list[_V]]]:
    """Each group's members, _LATERAL_ROWS at a time."""
    for key, members in groups.items():
        for at in range(0, len(members), _LATERAL_ROWS):
            yield key, members[at : at + _LATERAL_ROWS]


def array_text(values: Iterable[str]) -> str:
    """A PostgreSQL array literal of `values`, every element quoted (a symbol named NULL
    stays a string), to bind as one text parameter and CAST to an array: psycopg dumps a
    list element by element in Python (a regular expression each, ~2 us; the ROI anchors of
    an incremental run's 200 pairs bind ~3,200 elements)."""
    items = list(values)
    if not items:
        return "{}"
    if any('"' in v or "\\" in v for v in items):
        items = [v.replace("\\", "\\\\").replace('"', '\\"') for v in items]
    return '{"' + '","'.join(items) + '"}'


_PAIR_COLUMNS = ("symbol", "interval", "open", "high", "low", "close", "volume", "provider")


def _epoch_sql(conn: Connection) -> str:
    """`_epoch_seconds` of the ts column, as SQL text."""
    if conn.dialect.name == "postgresql":
        return "CAST(extract(epoch FROM ts) AS BIGINT)"
    return "CAST(strftime('%s', ts) AS BIGINT)"


def _typed(statement: Any, params: Mapping[str, Any]) -> Any:
    """A text statement whose datetime parameters bind as the ts column does (SQLite stores
    them as text of its own format)."""
    from sqlalchemy import bindparam

    moments = [name for name, value in params.items() if isinstance(value, datetime)]
    return statement.bindparams(*(bindparam(n, type_=candles_table.c.ts.type) for n in moments))


def _pair_order(row: Any) -> tuple[str, str, int]:
    return (row[0], row[1], row[2])


def _pair_columns(conn: Connection) -> list[Any]:
    """symbol, interval, epoch seconds, prices, provider: the columns `_split_pairs` reads."""
    c = candles_table.c
    ts = _epoch_seconds(conn, c.ts)
    return [c.symbol, c.interval, ts, c.open, c.high, c.low, c.close, c.volume, c.provider]


def candle_before(conn: Connection, symbol: str, interval: Interval, before: int) -> Candles:
    """The newest stored candle of a pair before `before` (empty when there is none).

    Looked for inside the time partition holding `before - 1` first (then PostgreSQL plans
    that partition, not every older one), and before that partition only if it has none.
    """
    from marketdata.storage.partitions import period_of

    floor = period_of(interval, before - 1).start
    found = read_candles(conn, symbol, interval, floor, before, last=1)
    if len(found):
        return found
    return read_candles(conn, symbol, interval, end=floor, last=1)


def read_pairs(
    conn: Connection, pairs: list[tuple[str, Interval]], *, with_indicators: bool
) -> dict[tuple[str, Interval], Candles]:
    """Every stored candle of several pairs in one query, ascending, by (symbol, interval).

    Pairs with nothing stored are absent from the result. Keep `pairs` to a few hundred:
    each one is two bound parameters.
    """
    from sqlalchemy import and_, or_, select

    if not pairs:
        return {}
    c = candles_table.c
    derived = [c[name] for name in INDICATOR_COLUMNS.values()] if with_indicators else []
    by_name = {(symbol, interval.value): interval for symbol, interval in pairs}
    query = (
        select(*_pair_columns(conn), *derived)
        .where(
            or_(
                *(
                    and_(c.interval == name, c.symbol.in_(group))
                    for name, group in _by_interval(by_name)
                )
            )
        )
        .order_by(c.symbol, c.interval, c.ts)
    )
    return _split_pairs(conn.execute(query).all(), by_name, len(derived))


def _split_pairs(
    rows: Sequence[Any], by_name: Mapping[tuple[str, str], Interval], derived: int
) -> dict[tuple[str, Interval], Candles]:
    """Rows of `_pair_columns` (then `derived` indicator columns), ordered by symbol,
    interval and ts, as one Candles per pair."""
    if not rows:
        return {}
    columns = list(zip(*rows, strict=True))
    names = list(zip(columns[0], columns[1], strict=True))
    ts = np.array(columns[2], dtype=np.int64)
    prices = [np.array(columns[i], dtype=np.float64) for i in range(3, 8)]
    extra = [np.array(columns[9 + i], dtype=np.float64) for i in range(derived)]
    starts = [0, *(i for i in range(1, len(names)) if names[i] != names[i - 1]), len(names)]
    found: dict[tuple[str, Interval], Candles] = {}
    for a, b in pairwise(starts):
        symbol, name = names[a]
        interval = by_name[(symbol, name)]
        part = slice(a, b)
        open_, high, low, close, volume = (p[part] for p in prices)
        batch = Candles(
            symbol, interval, str(columns[8][b - 1]), ts[part], open_, high, low, close, volume
        )
        if derived:
            batch = batch.with_indicators(
                {public: extra[i][part] for i, public in enumerate(INDICATOR_COLUMNS)}
            )
        found[(symbol, interval)] = batch
    return found


def _by_interval(pairs: dict[tuple[str, str], Interval]) -> list[tuple[str, list[str]]]:
    """Symbols grouped by interval name: (interval = X AND symbol IN (...)) uses the index."""
    groups: dict[str, list[str]] = {}
    for symbol, name in pairs:
        groups.setdefault(name, []).append(symbol)
    return list(groups.items())


def _epoch_seconds(conn: Connection, column: Any) -> Any:
    """SQL for a timestamp column as integer epoch seconds: no datetime per row in Python."""
    from sqlalchemy import BigInteger, cast, func

    if conn.dialect.name == "postgresql":
        return cast(func.extract("epoch", column), BigInteger)
    return cast(func.strftime("%s", column), BigInteger)


@dataclass(frozen=True, slots=True)
class Previous:
    """What a batch's indicators follow from: the stored closes before it (oldest first),
    the peak close before it, and whether the newest of those rows has no indicators
    (stored while its interval was not in ANALYTICS_INTERVALS: its history needs them)."""

    closes: NDArray[np.float64]
    peak: float | None
    underived: bool = False
    newest: int | None = None  # the time of the newest of those rows (epoch seconds)


def previous_closes(
    conn: Connection, symbol: str, interval: Interval, before: int, count: int
) -> Previous:
    """The last `count` closes before `before`, oldest first, and the peak close before it.

    The peak comes from the newest row's stored drawdown (peak = close / (1 + drawdown)), so
    an incremental run never scans history; only when that row has no drawdown is the
    maximum read from the table. On PostgreSQL the closes are looked for in the newest
    partitions before `before` first (see read_latest).
    """
    from sqlalchemy import func, select

    c = candles_table.c
    query = (
        select(c.close, c.drawdown, _epoch_seconds(conn, c.ts))
        .where(c.symbol == symbol, c.interval == interval.value, c.ts < utc_from_epoch(before))
        .order_by(c.ts.desc())
        .limit(count)
    )
    rows: Sequence[Any] = []
    if conn.dialect.name == "postgresql":  # the newest partitions first (see read_latest)
        floor = recent_floor(interval, before, count)
        rows = conn.execute(query.where(c.ts >= utc_from_epoch(floor))).all()
    if len(rows) < count:
        rows = conn.execute(query).all()
    if not rows:
        return Previous(np.empty(0, dtype=np.float64), None)
    closes = np.array([r[0] for r in reversed(rows)], dtype=np.float64)
    close, drawdown, newest = rows[0]
    if drawdown is not None and np.isfinite(drawdown) and drawdown > -1.0:
        return Previous(closes, float(close) / (1.0 + float(drawdown)), newest=int(newest))
    peak = conn.execute(
        select(func.max(c.close)).where(
            c.symbol == symbol, c.interval == interval.value, c.ts < utc_from_epoch(before)
        )
    ).scalar()
    peak = None if peak is None else float(peak)
    return Previous(closes, peak, underived=drawdown is None, newest=int(newest))


def anchor_closes(
    conn: Connection, symbol: str, interval: Interval, marks: Mapping[str, Anchor]
) -> dict[str, float | None]:
    """The close at each anchor (see analytics.roi.anchors), usually in one round trip."""
    return anchor_closes_many(conn, {(symbol, interval): marks})[(symbol, interval)]


def anchor_closes_many(
    conn: Connection, marks: Mapping[tuple[str, Interval], Mapping[str, Anchor]]
) -> dict[tuple[str, Interval], dict[str, float | None]]:
    """`anchor_closes` of several pairs, by (symbol, interval), usually in one round trip.

    Each anchor is one scalar subquery that walks the primary key backwards from its bound
    and stops at the first row, so the cost does not grow with the history. It first looks
    only inside the time partition holding its bound (then PostgreSQL plans one partition,
    not all of them: planning grew ~0.2 ms a partition per subquery); the first candle of
    all (no bound) is looked for inside the interval's oldest partition first, so it too
    is planned over one partition, not the whole history. The few anchors with no row in
    their partition are looked up again, together, without that window.
    """
    oldest = _oldest_periods(conn, marks) if _any_unbounded(marks) else {}
    if conn.dialect.name == "postgresql":
        return _anchor_closes_pg(conn, marks, oldest)
    from marketdata.storage.partitions import period_of

    floors: dict[tuple[Interval, int], int] = {}  # the pairs of a run share their bounds
    wanted: list[_Lookup] = []
    for pair, pair_marks in marks.items():
        interval = pair[1]
        for key, mark in pair_marks.items():
            if mark.bound is None:
                wanted.append(_Lookup(pair, key, mark, None, oldest.get(interval)))
                continue
            floor = floors.get((interval, mark.bound))
            if floor is None:
                floor = floors[(interval, mark.bound)] = period_of(interval, mark.bound - 1).start
            wanted.append(_Lookup(pair, key, mark, floor))
    found: dict[tuple[str, Interval], dict[str, float | None]] = {pair: {} for pair in marks}
    again: list[_Lookup] = []
    for lookup, value in zip(wanted, _anchor_lookup(conn, wanted), strict=True):
        found[lookup.pair][lookup.key] = value
        if value is None and (lookup.floor is not None or lookup.ceiling is not None):
            again.append(_Lookup(lookup.pair, lookup.key, lookup.mark, None))
    for lookup, value in zip(again, _anchor_lookup(conn, again), strict=True):
        found[lookup.pair][lookup.key] = value
    return found


def _anchor_closes_pg(
    conn: Connection,
    marks: Mapping[tuple[str, Interval], Mapping[str, Anchor]],
    oldest: Mapping[Interval, int],
) -> dict[tuple[str, Interval], dict[str, float | None]]:
    """`anchor_closes_many` on PostgreSQL: the pairs that share their anchors (those of a
    run share its newest time) in one statement, a row per pair and a column per anchor,
    its bounds scalars. A lookup each (arrays of symbols and bounds, a statement per
    partition of a bound) cost 10.6M instructions a group of 50 daily pairs, this 2.5M.
    The anchors that no row answered inside their window are looked up again without it."""
    by_identity: dict[tuple[Interval, int], tuple[Mapping[str, Anchor], list[str]]] = {}
    for (symbol, interval), pair_marks in marks.items():
        # by the mapping's identity first (the pairs of a run usually share one): hashing
        # every pair's Anchors would cost more than the grouping saves
        by_identity.setdefault((interval, id(pair_marks)), (pair_marks, []))[1].append(symbol)
    # then equal mappings made apart (a fold's, one per pair) together, hashed once each
    groups: dict[tuple[Interval, tuple[Any, ...]], tuple[Mapping[str, Anchor], list[str]]] = {}
    for (interval, _), (pair_marks, members) in by_identity.items():
        key = (interval, tuple(pair_marks.items()))
        groups.setdefault(key, (pair_marks, []))[1].extend(members)
    found: dict[tuple[str, Interval], dict[str, float | None]] = {}
    for (interval, _), (pair_marks, members) in groups.items():
        keys, first = list(pair_marks), oldest.get(interval)
        for at in range(0, len(members), _LATERAL_ROWS):
            symbols = members[at : at + _LATERAL_ROWS]
            missed: list[str] = []  # symbols with an anchor not found in its window
            rows = _anchor_columns(conn, interval, symbols, pair_marks, keys, oldest=first)
            for symbol, row in zip(symbols, rows, strict=True):
                found[(symbol, interval)] = dict(zip(keys, row, strict=True))
                if None in row:
                    missed.append(symbol)
            if not missed:
                continue
            again = [k for k in keys if any(found[(s, interval)][k] is None for s in missed)]
            retried = _anchor_columns(conn, interval, missed, pair_marks, again, windowed=False)
            for symbol, row in zip(missed, retried, strict=True):
                found[(symbol, interval)] |= dict(zip(again, row, strict=True))
    return found


def _anchor_columns(
    conn: Connection,
    interval: Interval,
    symbols: list[str],
    marks: Mapping[str, Anchor],
    keys: list[str],
    *,
    windowed: bool = True,
    oldest: int | None = None,
) -> list[Sequence[float | None]]:
    """The closes at the anchors `keys` of `marks` of each symbol (a row each, in order).

    `windowed`: each bound's close is looked for in the time partition holding the bound
    (to the first instant of the next: an inclusive bound can be its end), and the first
    candle of all before `oldest` (the end of the interval's oldest partition) when known.
    """
    from marketdata.storage.partitions import period_of

    # instants bound as epoch seconds through to_timestamp, which is immutable, so the plan
    # prunes partitions by them (psycopg formats a datetime in Python, ~10 us each); the
    # driver's own statement: compiling a text() of 24 parameters cost more than the read
    params: dict[str, Any] = {"interval": interval.value, "symbols": array_text(symbols)}
    columns: list[str] = []
    for i, key in enumerate(keys):
        mark, where = marks[key], "symbol = v.s AND interval = %(interval)s"
        if mark.bound is None:  # the first candle of all
            if windowed and oldest is not None:
                where += f" AND ts < to_timestamp(%(c{i})s)"
                params[f"c{i}"] = oldest
            order = "ts"
        else:
            where += f" AND ts {'<=' if mark.inclusive else '<'} to_timestamp(%(b{i})s)"
            params[f"b{i}"] = mark.bound
            if windowed:
                floor = period_of(interval, mark.bound - 1).start
                where += f" AND ts >= to_timestamp(%(f{i})s) AND ts <= to_timestamp(%(c{i})s)"
                params[f"f{i}"], params[f"c{i}"] = floor, period_of(interval, floor).end
            order = "ts DESC"
        columns.append(f"(SELECT close FROM candles WHERE {where} ORDER BY {order} LIMIT 1)")
    statement = (
        f"SELECT {', '.join(columns)} "
        "FROM unnest(CAST(%(symbols)s AS text[])) WITH ORDINALITY AS v(s, i) ORDER BY v.i"
    )
    rows: list[Sequence[float | None]] = list(conn.exec_driver_sql(statement, params).all())
    return rows  # closes are double precision: floats already


@dataclass(frozen=True, slots=True)
class _Lookup:
    """One anchor of one pair, looked for at or after `floor` and before `ceiling` (epoch
    seconds) when they are set."""

    pair: tuple[str, Interval]
    key: str
    mark: Anchor
    floor: int | None
    ceiling: int | None = None


def _any_unbounded(marks: Mapping[tuple[str, Interval], Mapping[str, Anchor]]) -> bool:
    """Whether some anchor asks for the first candle of all (no bound)."""
    return any(mark.bound is None for pair_marks in marks.values() for mark in pair_marks.values())


def _oldest_periods(
    conn: Connection, marks: Mapping[tuple[str, Interval], Mapping[str, Anchor]]
) -> dict[Interval, int]:
    """The end (epoch seconds) of the oldest time partition of each interval in `marks`
    (PostgreSQL; empty on SQLite): where a pair's first candle usually is, since retention
    drops history from the oldest partition up. One catalog query."""
    from marketdata.storage.partitions import oldest

    if conn.dialect.name != "postgresql":
        return {}
    found = oldest(conn, {interval for _, interval in marks})
    return {interval: period.end for interval, period in found.items()}


_LOOKUPS_PER_STATEMENT = 800
"""Scalar subqueries in one SELECT (SQLite allows 2,000 result columns by default)."""


def _anchor_lookup(conn: Connection, wanted: Sequence[_Lookup]) -> list[float | None]:
    # SQL text, as in _newest_rows: compiling a construct of a new size cost more than the reads
    from sqlalchemy import text

    values: list[float | None] = []
    for at in range(0, len(wanted), _LOOKUPS_PER_STATEMENT):
        lookups: list[str] = []
        params: dict[str, Any] = {}
        for i, lookup in enumerate(wanted[at : at + _LOOKUPS_PER_STATEMENT]):
            symbol, interval = lookup.pair
            where = f"symbol = :s{i} AND interval = :v{i}"
            params |= {f"s{i}": symbol, f"v{i}": interval.value}
            mark, order = lookup.mark, "ts"
            if mark.bound is not None:
                where += f" AND ts {'<=' if mark.inclusive else '<'} :b{i}"
                params[f"b{i}"] = utc_from_epoch(mark.bound)
                if lookup.floor is not None:
                    where += f" AND ts >= :f{i}"
                    params[f"f{i}"] = utc_from_epoch(lookup.floor)
                order = "ts DESC"
            # no ceiling here: only PostgreSQL's oldest partition sets one (_oldest_periods)
            lookups.append(
                f"(SELECT close FROM candles WHERE {where} ORDER BY {order} LIMIT 1) AS close_{i}"
            )
        if lookups:
            statement = _typed(text("SELECT " + ", ".join(lookups)), params)
            row = conn.execute(statement, params).one()
            values += [None if value is None else float(value) for value in row]
    return values


def write_candles(conn: Connection, batch: Candles, now: datetime) -> WriteStats:
    """Upsert a validated batch inside the caller's transaction; idempotent.

    Rows newer than the newest stored candle go straight in; only the overlap is compared,
    and of it only the rows whose values differ are updated.
    """
    if len(batch) == 0:
        return WriteStats()
    # only the newest row at or after the batch's first matters to the split (fewer partitions)
    newest = last_ts(conn, batch.symbol, batch.interval, since=int(batch.ts[0]))
    split = 0 if newest is None else int(np.searchsorted(batch.ts, newest, side="right"))
    if conn.dialect.name == "postgresql":
        inserted, updated = _pg_write(conn, batch, split, now)
    else:
        inserted = _sqlite_insert(conn, batch.take(slice(split, None)), now)
        ins, updated = _sqlite_merge(conn, batch.take(slice(0, split)), now)
        inserted += ins
    return WriteStats(inserted, updated, len(batch) - inserted - updated)


def _pg_write(conn: Connection, batch: Candles, split: int, now: datetime) -> tuple[int, int]:
    """COPY the rows from `split` on, merge the ones before; (inserted, updated).

    The new rows are copied into each time partition they fall in, directly: routing every
    row through the parent cost a quarter more server CPU than the unpartitioned table's
    COPY (2.30 s against 1.86 s for 1,000,000 rows), naming the partitions half as much
    more (2.06 s). The merge of a batch
    inside one partition addresses it as well; one across several goes through the parent, in
    one set of statements (per partition, under load, their extra round trips cost more than
    the routing saves).
    """
    from marketdata.storage import partitions, pg_copy

    # the ingest made the partitions ahead; this guards a batch reaching further
    spanned = partitions.ensure_placed(conn, batch.interval, int(batch.ts[0]), int(batch.ts[-1]))
    inserted, updated = 0, 0
    for table, part in _by_period(batch.take(slice(split, None)), spanned):
        inserted += pg_copy.copy_insert(conn, part, now, table)
    if split:
        table = spanned[0].name if len(spanned) == 1 else "candles"
        ins, updated = pg_copy.merge_overlap(conn, batch.take(slice(0, split)), now, table)
        inserted += ins
    return inserted, updated


def _by_period(batch: Candles, spanned: Sequence[Period]) -> list[tuple[str, Candles]]:
    """The rows of `batch` (ascending) cut at the ends of the `spanned` periods, each with
    its partition's name; all of it for candles where there are no periods."""
    if not spanned:
        return [("candles", batch)]
    cuts = np.searchsorted(batch.ts, [p.end for p in spanned[:-1]]).tolist()
    bounds = [0, *cuts, len(batch)]
    return [
        (period.name, batch.take(slice(a, b)))
        for period, (a, b) in zip(spanned, pairwise(bounds), strict=True)
        if b > a
    ]


def _records(batch: Candles, now: datetime) -> list[dict[str, Any]]:
    derived: list[tuple[str, list[float | None]]] = []
    if batch.indicators is not None:
        derived = [
            (column, [None if v != v else v for v in batch.indicators[public].tolist()])
            for public, column in INDICATOR_COLUMNS.items()
        ]
    records: list[dict[str, Any]] = [
        {
            "symbol": batch.symbol,
            "interval": batch.interval.value,
            "ts": utc_from_epoch(ts),
            "open": o,
            "high": h,
            "low": lo,
            "close": c,
            "volume": v,
            "provider": batch.provider,
            "ingested_at": now,
        }
        for ts, o, h, lo, c, v in batch.rows()
    ]
    for column, values in derived:
        for record, value in zip(records, values, strict=True):
            record[column] = value
    return records


def _sqlite_insert(conn: Connection, batch: Candles, now: datetime) -> int:
    """Insert new rows with one executemany on the driver connection.

    Timestamps are formatted with numpy in the text form SQLAlchemy's SQLite DateTime uses
    ('YYYY-MM-DD HH:MM:SS.ffffff'), so reads and range queries see the same values; going
    through SQLAlchemy would convert every row's datetime in Python (about 4x slower).
    """
    if len(batch) == 0:
        return 0
    names = ["symbol", "interval", "ts", *PRICE_COLUMNS, "provider", "ingested_at"]
    columns: list[Any] = [
        _sqlite_timestamps(batch.ts).tolist(),
        *(getattr(batch, name).tolist() for name in PRICE_COLUMNS),
    ]
    if batch.indicators is not None:
        names += list(INDICATOR_COLUMNS.values())
        # sqlite3 stores a float NaN as NULL, as the schema means "undefined"
        columns += [batch.indicators[public].tolist() for public in INDICATOR_COLUMNS]
    stamp = now.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    head = (batch.symbol, batch.interval.value)
    rows = [
        (*head, ts, o, h, lo, c, v, batch.provider, stamp, *rest)
        for ts, o, h, lo, c, v, *rest in zip(*columns, strict=True)
    ]
    placeholders = ", ".join("?" for _ in names)
    raw = conn.connection.driver_connection
    assert raw is not None
    raw.executemany(
        f"INSERT INTO candles ({', '.join(names)}) VALUES ({placeholders})",
        rows,
    )
    return len(batch)


def _sqlite_timestamps(ts: NDArray[np.int64]) -> NDArray[np.str_]:
    text = np.datetime_as_string(ts.astype("datetime64[s]"), unit="s")
    return np.char.add(np.char.replace(text, "T", " "), ".000000")


def _sqlite_merge(conn: Connection, overlap: Candles, now: datetime) -> tuple[int, int]:
    """Compare the overlap with what is stored; insert the missing rows, update the changed."""
    if len(overlap) == 0:
        return 0, 0
    stored = read_candles(
        conn,
        overlap.symbol,
        overlap.interval,
        int(overlap.ts[0]),
        int(overlap.ts[-1]) + 1,
        with_indicators=overlap.indicators is not None,
    )
    known = np.isin(overlap.ts, stored.ts)
    inserted = _sqlite_insert(conn, overlap.take(~known), now)
    present = overlap.take(known)
    index = np.searchsorted(stored.ts, present.ts)
    changed = np.zeros(len(present), dtype=bool)
    for name in PRICE_COLUMNS:
        changed |= getattr(present, name) != getattr(stored, name)[index]
    if present.indicators is not None and stored.indicators is not None:
        for public, values in present.indicators.items():
            old = stored.indicators[public][index]
            changed |= ~np.isclose(values, old, rtol=DERIVED_RTOL, atol=0.0, equal_nan=True)
    updates = present.take(changed)
    if len(updates):
        _sqlite_update(conn, updates, now)
    return inserted, len(updates)


def _sqlite_update(conn: Connection, updates: Candles, now: datetime) -> None:
    from sqlalchemy import bindparam

    c = candles_table.c
    assigned = [*PRICE_COLUMNS, "provider", "ingested_at"]
    if updates.indicators is not None:
        assigned += list(INDICATOR_COLUMNS.values())
    statement = (
        candles_table.update()
        .where(c.symbol == bindparam("b_symbol"))
        .where(c.interval == bindparam("b_interval"))
        .where(c.ts == bindparam("b_ts"))
        .values({name: bindparam(name) for name in assigned})
    )
    params = [
        {
            "b_symbol": r["symbol"],
            "b_interval": r["interval"],
            "b_ts": r["ts"],
            **{k: r[k] for k in assigned},
        }
        for r in _records(updates, now)
    ]
    conn.execute(statement, params)


def count_candles(conn: Connection, symbol: str | None = None) -> int:
    """How many candles are stored (for one symbol, or in all)."""
    from sqlalchemy import func, select

    query = select(func.count()).select_from(candles_table)
    if symbol is not None:
        query = query.where(candles_table.c.symbol == symbol)
    return int(conn.execute(query).scalar_one())


def stored_timestamps(conn: Connection, symbol: str, interval: Interval) -> NDArray[np.int64]:
    """Every stored timestamp of a pair, ascending, as int64 epoch seconds."""
    from sqlalchemy import select

    c = candles_table.c
    rows = conn.execute(
        select(_epoch_seconds(conn, c.ts))
        .where(c.symbol == symbol, c.interval == interval.value)
        .order_by(c.ts)
    ).scalars()
    return np.fromiter(rows, dtype=np.int64)


def stored_holes(
    conn: Connection, symbol: str, interval: Interval
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Each pair of consecutive stored candles more than one bar apart: (before, after),
    ascending epoch seconds. The database finds them with a window function over the
    primary key, so only the holes are sent, not the history."""
    from sqlalchemy import func, select

    c = candles_table.c
    epoch = _epoch_seconds(conn, c.ts)
    steps = (
        select(epoch.label("after"), func.lag(epoch).over(order_by=c.ts).label("before"))
        .where(c.symbol == symbol, c.interval == interval.value)
        .subquery()
    )
    rows = conn.execute(
        select(steps.c.before, steps.c.after)
        .where(steps.c.after - steps.c.before > interval.seconds)
        .order_by(steps.c.after)
    ).all()
    if not rows:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty.copy()
    before, after = (np.array(column, dtype=np.int64) for column in zip(*rows, strict=True))
    return before, after


def stored_pairs(conn: Connection, symbols: list[str] | None = None) -> list[tuple[str, str]]:
    """Every (symbol, interval) with stored candles, optionally for some symbols only."""
    from sqlalchemy import select

    c = candles_table.c
    query = select(c.symbol, c.interval).distinct().order_by(c.symbol, c.interval)
    if symbols:
        query = query.where(c.symbol.in_(symbols))
    return [(r[0], r[1]) for r in conn.execute(query)]


def update_indicators(
    conn: Connection,
    symbol: str,
    interval: Interval,
    ts: NDArray[np.int64],
    columns: dict[str, NDArray[np.float64]],
) -> int:
    """Set derived columns of stored rows (ascending `ts`), touching only rows that differ.

    Prices and provenance are left alone: this is how a recompute after a mid-history write,
    or `analytics rebuild`, reaches rows that were not themselves re-fetched.
    """
    if ts.shape[0] == 0:
        return 0
    from sqlalchemy import bindparam

    stored = read_candles(conn, symbol, interval, int(ts[0]), int(ts[-1]) + 1, with_indicators=True)
    assert stored.indicators is not None
    index = np.searchsorted(stored.ts, ts)
    changed = np.zeros(ts.shape[0], dtype=bool)
    for public, values in columns.items():
        old = stored.indicators[public][index]
        changed |= ~np.isclose(values, old, rtol=DERIVED_RTOL, atol=0.0, equal_nan=True)
    rows = np.flatnonzero(changed)
    if rows.shape[0] == 0:
        return 0
    c = candles_table.c
    statement = (
        candles_table.update()
        .where(c.symbol == symbol, c.interval == interval.value, c.ts == bindparam("b_ts"))
        .values({column: bindparam(column) for column in INDICATOR_COLUMNS.values()})
    )
    params = []
    for i in rows.tolist():
        record: dict[str, Any] = {"b_ts": utc_from_epoch(int(ts[i]))}
        for public, column in INDICATOR_COLUMNS.items():
            value = float(columns[public][i])
            record[column] = None if value != value else value  # undefined is NULL on both
        params.append(record)
    conn.execute(statement, params)
    return int(rows.shape[0])


def count_in_range(conn: Connection, symbol: str, interval: Interval, start: int, end: int) -> int:
    """How many candles of a pair are stored in [start, end] (an index-only count)."""
    from sqlalchemy import func, select

    c = candles_table.c
    query = (
        select(func.count())
        .select_from(candles_table)
        .where(
            c.symbol == symbol,
            c.interval == interval.value,
            c.ts >= utc_from_epoch(start),
            c.ts <= utc_from_epoch(end),
        )
    )
    return int(conn.execute(query).scalar_one())
