"""Freshness: how old each market's newest candle is, and whether it is stale.

A market's *staleness* is the time since a bar its calendar expects after the newest stored
one closed while it is still missing (0 until then); the market is *stale* when that is longer
than ALERT_STALE_AFTER. `metrics`, `status` and the alerts after each run all read this one
computation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from marketdata.domain import DAY, Interval, epoch_of, format_duration, utc_from_epoch
from marketdata.errors import MarketdataError

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from marketdata.context import AppContext
    from marketdata.storage.run_history import LastOutcome


def next_expected_bar(symbol: str, interval: Interval, ts: int) -> int:
    """The start of the next bar the market's calendar expects after the bar at `ts`.

    The symbol's trading calendar (calendars.py, as `gaps` uses it): every bar for crypto,
    weekdays for FX, an exchange's sessions for equities (no nights, weekends or holidays).
    """
    from marketdata.calendars import calendar, default_calendar

    following = ts + interval.seconds
    upcoming = calendar(default_calendar(symbol)).bars(following, following + 14 * DAY, interval)
    return int(upcoming[0]) if upcoming.shape[0] else following


@dataclass(frozen=True, slots=True)
class Freshness:
    """How fresh one market is at `now`.

    Attributes:
        symbol: Canonical symbol.
        interval: Bar interval.
        newest: Start of the newest stored candle.
        age_seconds: Seconds from `newest` to now.
        due: When the next expected bar closed (or will close).
        staleness_seconds: Seconds since `due` (0 while it is not due yet).
        stale: `staleness_seconds` above ALERT_STALE_AFTER.
        enabled: False for a disabled market (never counted as stale).
    """

    symbol: str
    interval: str
    newest: datetime
    age_seconds: int
    due: datetime
    staleness_seconds: int
    stale: bool
    enabled: bool = True

    @property
    def state(self) -> str:
        """'stale', 'fresh' or 'disabled', as tables show it."""
        if not self.enabled:
            return "disabled"
        return "stale" if self.stale else "fresh"

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form with stable keys."""
        return {
            "symbol": self.symbol,
            "interval": self.interval,
            "newest": self.newest,
            "age_seconds": self.age_seconds,
            "due": self.due,
            "staleness_seconds": self.staleness_seconds,
            "stale": self.stale,
            "state": self.state,
            "enabled": self.enabled,
        }


def freshness_of(
    symbol: str,
    interval: Interval,
    newest: int,
    now: int,
    stale_after: int,
    *,
    enabled: bool = True,
) -> Freshness:
    """Freshness of one market whose newest stored candle starts at `newest` (epoch s)."""
    nxt = next_expected_bar(symbol, interval, newest)
    due = nxt + interval.seconds
    staleness = max(0, now - due)
    return Freshness(
        symbol,
        interval.value,
        utc_from_epoch(newest),
        max(0, now - newest),
        utc_from_epoch(due),
        staleness,
        enabled and staleness > stale_after,
        enabled,
    )


def market_freshness(
    conn: Connection,
    now: datetime,
    stale_after: int,
    *,
    symbols: Sequence[str] | None = None,
    pairs: Iterable[tuple[str, str]] | None = None,
    disabled: Iterable[str] = (),
) -> list[Freshness]:
    """Freshness of every stored market, of some symbols, or of the given pairs only.

    Costs an index lookup per market shown, never a scan of stored candles.
    """
    from marketdata.storage.freshness import newest_candles

    off = set(disabled)
    at = epoch_of(now)
    return [
        freshness_of(symbol, Interval(interval), newest, at, stale_after, enabled=symbol not in off)
        for symbol, interval, newest in newest_candles(conn, symbols=symbols, pairs=pairs)
    ]


def disabled_symbols(conn: Connection, configured: Iterable[str]) -> set[str]:
    """Symbols disabled in the markets table or by INGESTION_DISABLED_SYMBOLS."""
    from marketdata.storage.markets import list_markets

    return set(configured) | {m.symbol for m in list_markets(conn) if not m.enabled}


class StaleMarketsError(MarketdataError):
    """Some enabled markets are stale (raised after `status` has shown them: exit 1)."""


@dataclass(frozen=True, slots=True)
class MarketStatus:
    """One market as `status` shows it: its freshness and its latest recorded outcome."""

    freshness: Freshness
    last: LastOutcome | None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form: the freshness keys plus the last outcome's."""
        last = self.last
        return {
            **self.freshness.as_dict(),
            "last_run_id": last.run_id if last else None,
            "last_outcome": last.status if last else None,
            "last_run_status": last.run_status if last else None,
            "last_run_finished_at": last.finished_at if last else None,
            "last_error": last.error if last else None,
        }


def market_status(app: AppContext, symbols: Sequence[str] | None = None) -> list[MarketStatus]:
    """Every stored market (or those of `symbols`): freshness and latest outcome."""
    from marketdata.storage.engine import connect
    from marketdata.storage.run_history import last_outcomes

    with connect(app.engine(), app.target) as conn:
        fresh = market_freshness(
            conn,
            app.clock(),
            app.settings.stale_after_seconds,
            symbols=symbols or None,
            disabled=disabled_symbols(conn, app.settings.ingestion_disabled_symbols),
        )
        last = last_outcomes(conn, [(f.symbol, f.interval) for f in fresh])
    return [MarketStatus(f, last.get((f.symbol, f.interval))) for f in fresh]


def raise_if_stale(statuses: Sequence[MarketStatus], stale_after: int) -> None:
    """StaleMarketsError naming the stale markets, if there are any."""
    stale = [s.freshness for s in statuses if s.freshness.stale]
    if not stale:
        return
    named = ", ".join(f"{f.symbol} {f.interval}" for f in stale[:5])
    more = f" and {len(stale) - 5} more" if len(stale) > 5 else ""
    raise StaleMarketsError(
        f"{len(stale)} of {len(statuses)} markets are stale beyond ALERT_STALE_AFTER "
        f"({format_duration(stale_after)}): {named}{more}",
        hint="see RUNBOOK.md, 'A market is stale'",
    )
