"""The quarantine of rejected candles: one row per provider, pair, time and reason, counted
each time it is seen again; listed by `rejects`, purged by `rejects purge`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from marketdata.storage.schema import rejects as rejects_table
from marketdata.validation import Rejected

if TYPE_CHECKING:
    from sqlalchemy import Connection

# what makes a rejected candle the same one again (the unique index of migration 0010)
KEY = ("provider", "symbol", "interval", "ts", "reason")


def record_rejects(
    conn: Connection,
    run_id: int | None,
    symbol: str,
    interval: str,
    provider: str,
    rows: list[Rejected],
    now: datetime,
) -> None:
    """Store rejected rows with their raw values and reasons; one seen before is counted
    again, its values and run replaced by the latest (an idempotent upsert)."""
    if not rows:
        return
    seen = Counter((r.ts, r.reason) for r in rows)
    latest = {(r.ts, r.reason): r for r in rows}  # one row per key: an upsert touches it once
    values = [
        {
            "run_id": run_id,
            "symbol": symbol,
            "interval": interval,
            "provider": provider,
            "ts": r.ts,
            "open": _finite_or_none(r.open),
            "high": _finite_or_none(r.high),
            "low": _finite_or_none(r.low),
            "close": _finite_or_none(r.close),
            "volume": _finite_or_none(r.volume),
            "reason": r.reason,
            "rejected_at": now,
            "last_seen_at": now,
            "times_seen": seen[key],
        }
        for key, r in latest.items()
    ]
    insert = _insert(conn)
    new = insert.excluded
    c = rejects_table.c
    conn.execute(
        insert.on_conflict_do_update(
            index_elements=list(KEY),
            set_={
                "times_seen": c.times_seen + new.times_seen,
                "last_seen_at": new.last_seen_at,
                "run_id": new.run_id,
                **{name: new[name] for name in ("open", "high", "low", "close", "volume")},
            },
        ),
        values,
    )


def _insert(conn: Connection) -> Any:
    # both dialects speak INSERT ... ON CONFLICT DO UPDATE, each through its own construct
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    return insert(rejects_table)


def _finite_or_none(value: float) -> float | None:
    # NaN is what a null in the payload became; store it as NULL, not as a float NaN
    return value if value == value else None


@dataclass(frozen=True)
class RejectRow:
    """A stored rejected candle: its values as last seen, how often and when."""

    run_id: int | None
    symbol: str
    interval: str
    provider: str
    ts: int
    open: float | None
    high: float | None
    low: float | None
    close: float | None
    volume: float | None
    reason: str
    count: int
    first_seen: datetime
    last_seen: datetime


def list_rejects(
    conn: Connection,
    symbols: list[str] | None = None,
    *,
    limit: int = 100,
    since: datetime | None = None,
) -> list[RejectRow]:
    """Rejected candles, the most recently seen first; `since` keeps those seen since then."""
    from sqlalchemy import select

    c = rejects_table.c
    query = select(
        c.run_id,
        c.symbol,
        c.interval,
        c.provider,
        c.ts,
        c.open,
        c.high,
        c.low,
        c.close,
        c.volume,
        c.reason,
        c.times_seen.label("count"),
        c.rejected_at.label("first_seen"),
        c.last_seen_at.label("last_seen"),
    ).order_by(c.last_seen_at.desc(), c.id.desc())
    if symbols:
        query = query.where(c.symbol.in_(symbols))
    if since is not None:
        query = query.where(c.last_seen_at >= since)
    return [RejectRow(**row) for row in conn.execute(query.limit(limit)).mappings()]


def purge_rejects(
    conn: Connection, before: datetime, symbols: list[str] | None = None, *, dry_run: bool = False
) -> int:
    """Delete the rejects last seen before `before` (of some symbols only); how many."""
    from sqlalchemy import delete, func, select

    c = rejects_table.c
    where = [c.last_seen_at < before, *([c.symbol.in_(symbols)] if symbols else [])]
    if dry_run:
        query = select(func.count()).select_from(rejects_table).where(*where)
        return int(conn.execute(query).scalar_one())
    return int(conn.execute(delete(rejects_table).where(*where)).rowcount)
