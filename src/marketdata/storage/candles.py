"""Candle reads and idempotent writes: binary COPY + guarded UPDATE on PostgreSQL,
batched upserts on SQLite. Only rows that changed are ever rewritten."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from marketdata.domain import Candles, Interval, epoch_of, utc_from_epoch
from marketdata.storage.schema import candles as candles_table

if TYPE_CHECKING:
    from sqlalchemy import Connection

PRICE_COLUMNS = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True, slots=True)
class WriteStats:
    """What one write did."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0


def last_ts(conn: Connection, symbol: str, interval: Interval) -> int | None:
    """Epoch seconds of the newest stored candle of a pair (an index-only lookup)."""
    from sqlalchemy import func, select

    c = candles_table.c
    value = conn.execute(
        select(func.max(c.ts)).where(c.symbol == symbol, c.interval == interval.value)
    ).scalar()
    if value is None:
        return None
    if isinstance(value, str):  # SQLite returns max() of text as text
        value = datetime.fromisoformat(value)
    return epoch_of(_aware(value))


def read_candles(
    conn: Connection,
    symbol: str,
    interval: Interval,
    start: int | None = None,
    end: int | None = None,
    *,
    last: int | None = None,
) -> Candles:
    """Stored candles of a pair in [start, end), ascending; `last` keeps only the newest N."""
    from sqlalchemy import select

    c = candles_table.c
    query = select(c.ts, c.open, c.high, c.low, c.close, c.volume, c.provider).where(
        c.symbol == symbol, c.interval == interval.value
    )
    if start is not None:
        query = query.where(c.ts >= utc_from_epoch(start))
    if end is not None:
        query = query.where(c.ts < utc_from_epoch(end))
    query = query.order_by(c.ts.desc()).limit(last) if last is not None else query.order_by(c.ts)
    rows = list(conn.execute(query).all())
    if last is not None:
        rows.reverse()
    provider = rows[-1][6] if rows else ""
    return Candles.from_rows(symbol, interval, provider, [(epoch_of(r[0]), *r[1:6]) for r in rows])


def write_candles(conn: Connection, batch: Candles, now: datetime) -> WriteStats:
    """Upsert a validated batch inside the caller's transaction; idempotent.

    Rows newer than the newest stored candle go straight in; only the overlap is compared,
    and of it only the rows whose values differ are updated.
    """
    if len(batch) == 0:
        return WriteStats()
    newest = last_ts(conn, batch.symbol, batch.interval)
    if newest is None:
        fresh, overlap = batch, batch.take(slice(0, 0))
    else:
        split = int(np.searchsorted(batch.ts, newest, side="right"))
        overlap, fresh = batch.take(slice(0, split)), batch.take(slice(split, None))
    if conn.dialect.name == "postgresql":
        from marketdata.storage import pg_copy

        inserted, updated = pg_copy.copy_insert(conn, fresh, now), 0
        if len(overlap):
            ins, updated = pg_copy.merge_overlap(conn, overlap, now)
            inserted += ins
    else:
        inserted = _sqlite_insert(conn, fresh, now)
        ins, updated = _sqlite_merge(conn, overlap, now)
        inserted += ins
    return WriteStats(inserted, updated, len(batch) - inserted - updated)


def _records(batch: Candles, now: datetime) -> list[dict[str, Any]]:
    return [
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


def _sqlite_insert(conn: Connection, batch: Candles, now: datetime) -> int:
    if len(batch) == 0:
        return 0
    conn.execute(candles_table.insert(), _records(batch, now))
    return len(batch)


def _sqlite_merge(conn: Connection, overlap: Candles, now: datetime) -> tuple[int, int]:
    """Compare the overlap with what is stored; insert the missing rows, update the changed."""
    if len(overlap) == 0:
        return 0, 0
    from sqlalchemy import bindparam

    stored = read_candles(
        conn, overlap.symbol, overlap.interval, int(overlap.ts[0]), int(overlap.ts[-1]) + 1
    )
    known = np.isin(overlap.ts, stored.ts)
    missing = overlap.take(~known)
    inserted = _sqlite_insert(conn, missing, now)
    present = overlap.take(known)
    index = np.searchsorted(stored.ts, present.ts)
    changed = np.zeros(len(present), dtype=bool)
    for name in PRICE_COLUMNS:
        changed |= getattr(present, name) != getattr(stored, name)[index]
    updates = present.take(changed)
    if len(updates):
        c = candles_table.c
        statement = (
            candles_table.update()
            .where(c.symbol == bindparam("b_symbol"))
            .where(c.interval == bindparam("b_interval"))
            .where(c.ts == bindparam("b_ts"))
            .values({name: bindparam(name) for name in (*PRICE_COLUMNS, "provider", "ingested_at")})
        )
        params = [
            {
                "b_symbol": r["symbol"],
                "b_interval": r["interval"],
                "b_ts": r["ts"],
                **{k: r[k] for k in (*PRICE_COLUMNS, "provider", "ingested_at")},
            }
            for r in _records(updates, now)
        ]
        conn.execute(statement, params)
    return inserted, len(updates)


def _aware(value: datetime) -> datetime:
    from datetime import UTC

    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def count_candles(conn: Connection, symbol: str | None = None) -> int:
    """How many candles are stored (for one symbol, or in all)."""
    from sqlalchemy import func, select

    query = select(func.count()).select_from(candles_table)
    if symbol is not None:
        query = query.where(candles_table.c.symbol == symbol)
    return int(conn.execute(query).scalar_one())


def stored_timestamps(conn: Connection, symbol: str, interval: Interval) -> np.ndarray:
    """Every stored timestamp of a pair, ascending, as int64 epoch seconds."""
    from sqlalchemy import select

    c = candles_table.c
    rows = conn.execute(
        select(c.ts).where(c.symbol == symbol, c.interval == interval.value).order_by(c.ts)
    ).scalars()
    return np.fromiter((epoch_of(_aware(v)) for v in rows), dtype=np.int64)
