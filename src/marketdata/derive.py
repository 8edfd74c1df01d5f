"""Derived data kept beside the candles: computed for what is written, recomputed after it.

After an ingest only the tail the new candles can change is computed (the longest window
back plus the drawdown's running peak); a replay recomputes its window; `analytics rebuild`
recomputes everything. The results agree whichever path computed them.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from marketdata.analytics.indicators import (
    LOOKBACK,
    compute_indicators,
    compute_tail,
    periods_per_year,
)
from marketdata.domain import Candles, Interval, is_crypto
from marketdata.storage.candles import (
    WriteStats,
    count_in_range,
    previous_closes,
    read_candles,
    update_indicators,
    write_candles,
)

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from marketdata.config import Settings


def analytics_intervals(settings: Settings) -> set[Interval]:
    """The intervals whose derived data is stored (ANALYTICS_INTERVALS)."""
    return {Interval.parse(value) for value in settings.analytics_intervals}


def bars_per_year(symbol: str, interval: Interval) -> float:
    """Annualisation: 365 days a year for crypto, 252 for everything else."""
    return periods_per_year(interval.seconds, is_crypto(symbol))


def with_derived(conn: Connection, batch: Candles) -> Candles:
    """The batch carrying its indicators, computed from the stored closes before it."""
    if len(batch) == 0:
        return batch
    previous, peak = previous_closes(conn, batch.symbol, batch.interval, int(batch.ts[0]), LOOKBACK)
    derived = compute_tail(
        previous,
        batch.close,
        periods_per_year=bars_per_year(batch.symbol, batch.interval),
        prior_peak=peak,
    )
    return batch.with_indicators(derived.columns())


def refresh_after(conn: Connection, symbol: str, interval: Interval, after: int) -> int:
    """Recompute the stored rows after `after` (their earlier closes changed); rows updated."""
    stored = read_candles(conn, symbol, interval, after + 1)
    if len(stored) == 0:
        return 0
    derived = with_derived(conn, stored)
    assert derived.indicators is not None
    return update_indicators(conn, symbol, interval, stored.ts, dict(derived.indicators))


def rebuild(conn: Connection, symbol: str, interval: Interval) -> tuple[int, int]:
    """Recompute a whole pair from scratch; returns (rows, rows updated)."""
    stored = read_candles(conn, symbol, interval)
    derived = compute_indicators(stored.close, periods_per_year=bars_per_year(symbol, interval))
    updated = update_indicators(conn, symbol, interval, stored.ts, derived.columns())
    return len(stored), updated


def write_with_derived(
    conn: Connection, batch: Candles, now: datetime, *, derive: bool
) -> WriteStats:
    """Write a validated batch and keep derived data exact around it.

    The batch's own indicators are computed from the stored closes before it and written
    with it. If stored rows lie between its candles (the provider skipped a bar we have) or
    after it, and anything changed, those rows are recomputed too.
    """
    if not derive or len(batch) == 0:
        return write_candles(conn, batch, now)
    stats = write_candles(conn, with_derived(conn, batch), now)
    if stats.inserted + stats.updated == 0:
        return stats
    first, last = int(batch.ts[0]), int(batch.ts[-1])
    if count_in_range(conn, batch.symbol, batch.interval, first, last) > len(batch):
        refresh_after(conn, batch.symbol, batch.interval, first - 1)
    else:
        refresh_after(conn, batch.symbol, batch.interval, last)
    return stats
