"""The quarantine of rejected candles: written with their pair, listed by `rejects`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from marketdata.storage.schema import rejects as rejects_table
from marketdata.validation import Rejected

if TYPE_CHECKING:
    from sqlalchemy import Connection


def record_rejects(
    conn: Connection,
    run_id: int | None,
    symbol: str,
    interval: str,
    provider: str,
    rows: list[Rejected],
    now: datetime,
) -> None:
    """Store rejected rows with their raw values and reasons."""
    if not rows:
        return
    conn.execute(
        rejects_table.insert(),
        [
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
            }
            for r in rows
        ],
    )


def _finite_or_none(value: float) -> float | None:
    # NaN is what a null in the payload became; store it as NULL, not as a float NaN
    return value if value == value else None


@dataclass(frozen=True)
class RejectRow:
    """A stored rejected candle."""

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
    rejected_at: datetime


def list_rejects(
    conn: Connection, symbols: list[str] | None = None, *, limit: int = 100
) -> list[RejectRow]:
    """Rejected candles, newest first."""
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
        c.rejected_at,
    ).order_by(c.rejected_at.desc(), c.id.desc())
    if symbols:
        query = query.where(c.symbol.in_(symbols))
    return [RejectRow(**row) for row in conn.execute(query.limit(limit)).mappings()]
