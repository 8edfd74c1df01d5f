"""Newest stored candle per market, by index lookups (never a scan of the candles table)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from marketdata.domain import Interval, epoch_of
from marketdata.storage.schema import candles

if TYPE_CHECKING:
    from sqlalchemy import Connection

_CHUNK = 500  # symbols per statement when they are listed


def newest_candles(
    conn: Connection,
    *,
    symbols: Sequence[str] | None = None,
    pairs: Iterable[tuple[str, str]] | None = None,
) -> list[tuple[str, str, int]]:
    """(symbol, interval, newest ts in epoch seconds) of every stored market, in order.

    With `symbols` or `pairs`, only those. Every stored symbol is found by walking the
    primary key's leading column (one index probe per symbol), and each market's newest
    candle by one probe per (symbol, interval).
    """
    wanted: set[tuple[str, str]] | None = None
    if pairs is not None:
        wanted = set(pairs)
        symbols = sorted({symbol for symbol, _ in wanted})
    found: list[tuple[str, str, int]] = []
    if symbols is None:
        found = _newest(conn, _every_symbol())
    else:
        listed = sorted(set(symbols))
        for first in range(0, len(listed), _CHUNK):
            found += _newest(conn, _listed(listed[first : first + _CHUNK]))
    if wanted is not None:
        found = [row for row in found if (row[0], row[1]) in wanted]
    return found


def _newest(conn: Connection, symbols: Any) -> list[tuple[str, str, int]]:
    from sqlalchemy import func, select

    probe = candles.alias("probe")
    columns = [
        select(func.max(probe.c.ts))
        .where(probe.c.symbol == symbols.c.symbol, probe.c.interval == interval.value)
        .scalar_subquery()
        .label(f"newest_{index}")
        for index, interval in enumerate(Interval)
    ]
    query = (
        select(symbols.c.symbol, *columns)
        .where(symbols.c.symbol.is_not(None))
        .order_by(symbols.c.symbol)
    )
    rows: list[tuple[str, str, int]] = []
    for row in conn.execute(query):
        for interval, newest in zip(Interval, row[1:], strict=True):
            if newest is not None:
                rows.append((row[0], interval.value, epoch_of(newest)))
    return rows


def _every_symbol() -> Any:
    """A recursive CTE yielding each distinct stored symbol (a loose index scan)."""
    from sqlalchemy import func, select

    walk = select(func.min(candles.c.symbol).label("symbol")).cte("symbols", recursive=True)
    step = candles.alias("step")
    following = (
        select(func.min(step.c.symbol)).where(step.c.symbol > walk.c.symbol).scalar_subquery()
    )
    return walk.union_all(select(following).where(walk.c.symbol.is_not(None)))


def _listed(symbols: Sequence[str]) -> Any:
    from sqlalchemy import String, literal, select, union_all

    parts = [select(literal(s, String()).label("symbol")) for s in symbols]
    if len(parts) == 1:
        return parts[0].subquery("symbols")
    return union_all(*parts).subquery("symbols")
