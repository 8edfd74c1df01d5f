"""Derived data kept beside the candles: computed for what is written, recomputed after it.

After an ingest only the tail the new candles can change is computed (the longest window
back plus the drawdown's running peak); a replay recomputes its window; `analytics rebuild`
recomputes everything. The results agree whichever path computed them.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    Previous,
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
    return _derived(conn, batch)[0]


def _derived(conn: Connection, batch: Candles) -> tuple[Candles, Previous | None]:
    """`with_derived`, and what it found stored before the batch (None for an empty one)."""
    if len(batch) == 0:
        return batch, None
    previous = previous_closes(conn, batch.symbol, batch.interval, int(batch.ts[0]), LOOKBACK)
    derived = compute_tail(
        previous.closes,
        batch.close,
        periods_per_year=bars_per_year(batch.symbol, batch.interval),
        prior_peak=previous.peak,
    )
    return batch.with_indicators(derived.columns()), previous


def refresh_after(conn: Connection, symbol: str, interval: Interval, after: int) -> int:
    """Recompute the stored rows after `after` (their earlier closes changed); rows updated."""
    return _refresh_after(conn, symbol, interval, after)[1]


def _refresh_after(
    conn: Connection, symbol: str, interval: Interval, after: int
) -> tuple[int, int]:
    """`refresh_after`, and how many stored rows it found after `after`."""
    stored = read_candles(conn, symbol, interval, after + 1)
    if len(stored) == 0:
        return 0, 0
    derived = with_derived(conn, stored)
    assert derived.indicators is not None
    updated = update_indicators(conn, symbol, interval, stored.ts, dict(derived.indicators))
    return len(stored), updated


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
    writer = PairWriter(conn, now, derive=derive)
    stats = writer.write(batch)
    writer.finish()
    return stats


@dataclass(frozen=True, slots=True)
class Appended:
    """Rows a transaction wrote (with their indicators) after the pair's stored rows, the
    newest of which was at `after`, changing none of them: the pair's stored history is
    now what it was up to `after`, then `rows`."""

    rows: Candles
    after: int


class PairWriter:
    """Writes the batches of one pair (gaps, then the recent window) inside the caller's
    transaction, and recomputes the stored rows after them once, when all are written.

    Recomputing after each batch would read every later row again per batch: a backfill of
    many gaps would cost (gaps x history) instead of one pass after the earliest gap.

    After `finish`, `whole` holds the written rows with their indicators when they are known
    to be the pair's whole stored history (one batch changed rows, none stored before, among
    or after its own); the cache is then written from them without reading them back.
    `appended` holds them when stored rows lie only before them (an incremental run's): the
    cache can then extend its previous value of the pair by them.
    """

    def __init__(self, conn: Connection, now: datetime, *, derive: bool) -> None:
        self._conn = conn
        self._now = now
        self._derive = derive
        self._changed: list[tuple[int, int]] = []  # (first, last) of each batch that changed
        self._refresh_from: int | None = None  # for one batch: the row after which to refresh
        self._pair: tuple[str, Interval] | None = None
        self._alone: Candles | None = None  # the one changed batch, with nothing before it
        self._rebuild = False  # rows before a batch have no indicators: recompute them all
        self._after: Appended | None = None  # the one changed batch, after stored rows
        self.whole: Candles | None = None
        self.appended: Appended | None = None

    def write(self, batch: Candles) -> WriteStats:
        """Write one validated batch with its indicators; what it did."""
        if not self._derive or len(batch) == 0:
            return write_candles(self._conn, batch, self._now)
        conn = self._conn
        derived, previous = _derived(conn, batch)
        stats = write_candles(conn, derived, self._now)
        if stats.inserted + stats.updated == 0:
            return stats
        first, last = int(batch.ts[0]), int(batch.ts[-1])
        # stored rows between the batch's own: they follow changed closes, recompute them too
        interleaved = count_in_range(conn, batch.symbol, batch.interval, first, last) > len(batch)
        before = 0 if previous is None else len(previous.closes)
        alone = before == 0 and not interleaved and not self._changed
        # history stored before the interval was analysed gets its indicators now, once
        self._rebuild = self._rebuild or (previous is not None and previous.underived)
        self._alone = derived if alone else None
        newest = None if previous is None else previous.newest
        first_change = not interleaved and not self._changed
        self._after = Appended(derived, newest) if first_change and newest is not None else None
        self._changed.append((first, last))
        self._refresh_from = first - 1 if interleaved else last
        self._pair = (batch.symbol, batch.interval)
        return stats

    def finish(self) -> int:
        """Recompute the stored rows the written batches affect, once; rows updated.

        After one batch that is the rows after it (or after its first row, if stored rows
        lie between its own); after several, every row from the earliest batch on, since
        each batch was derived before the others were all in place. When the rows before a
        batch have no indicators (stored while the interval was not analysed), all of the
        pair's are recomputed, as `analytics rebuild` does.
        """
        self.whole = self.appended = None
        if not self._changed:
            return 0
        assert self._pair is not None
        symbol, interval = self._pair
        if len(self._changed) == 1:
            assert self._refresh_from is not None
            after = self._refresh_from
        else:
            after = min(first for first, _ in self._changed) - 1
        alone, self._alone = (self._alone if len(self._changed) == 1 else None), None
        appended, self._after = (self._after if len(self._changed) == 1 else None), None
        self._changed.clear()
        if self._rebuild:
            self._rebuild = False
            return rebuild(self._conn, symbol, interval)[1]
        later, updated = _refresh_after(self._conn, symbol, interval, after)
        if later == 0:
            self.whole, self.appended = alone, appended
        return updated
