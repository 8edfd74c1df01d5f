"""The market list: which symbols are ingested, their asset class and provider symbols."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from marketdata.errors import NoDataError
from marketdata.storage.schema import markets

if TYPE_CHECKING:
    from sqlalchemy import Connection


@dataclass(frozen=True)
class Market:
    """One row of the markets table."""

    symbol: str
    enabled: bool = True
    asset_class: str = "crypto"
    provider_symbols: dict[str, str] = field(default_factory=dict)
    note: str | None = None
    calendar: str | None = None  # None: follows the asset class

    @property
    def trading_calendar(self) -> str:
        """The calendar this market follows: the stored one, else its asset class's."""
        from marketdata.calendars import default_calendar

        return self.calendar or default_calendar(self.symbol, self.asset_class)


def list_markets(conn: Connection, *, enabled_only: bool = False) -> list[Market]:
    """Markets in symbol order."""
    return _markets(conn, None, enabled_only=enabled_only)


def _markets(conn: Connection, symbol: str | None, *, enabled_only: bool = False) -> list[Market]:
    from sqlalchemy import select

    c = markets.c
    query = select(
        c.symbol, c.enabled, c.asset_class, c.provider_symbols, c.note, c.calendar
    ).order_by(c.symbol)
    if enabled_only:
        query = query.where(c.enabled.is_(True))
    if symbol is not None:
        query = query.where(c.symbol == symbol)
    return [
        Market(
            r.symbol,
            bool(r.enabled),
            r.asset_class,
            dict(r.provider_symbols or {}),
            r.note,
            r.calendar,
        )
        for r in conn.execute(query)
    ]


def get_market(conn: Connection, symbol: str) -> Market | None:
    """One market of the list, or None when the symbol is not in it."""
    return next((m for m in _markets(conn, symbol)), None)


def trading_calendars(conn: Connection) -> dict[str, str]:
    """symbol -> the calendar it follows, for every market in the list."""
    return {m.symbol: m.trading_calendar for m in list_markets(conn)}


def upsert_market(conn: Connection, market: Market, now: datetime) -> bool:
    """Add a market or update its settings; True when it was new."""
    from sqlalchemy import select

    c = markets.c
    exists = conn.execute(select(c.symbol).where(c.symbol == market.symbol)).first()
    values = {
        "enabled": market.enabled,
        "asset_class": market.asset_class,
        "provider_symbols": market.provider_symbols,
        "note": market.note,
        "calendar": market.calendar,
        "updated_at": now,
    }
    if exists:
        conn.execute(markets.update().where(c.symbol == market.symbol).values(**values))
        return False
    conn.execute(markets.insert().values(symbol=market.symbol, created_at=now, **values))
    return True


def set_enabled(conn: Connection, symbol: str, enabled: bool, now: datetime) -> None:
    """Enable or disable a known market; NoDataError for an unknown one."""
    c = markets.c
    result = conn.execute(
        markets.update().where(c.symbol == symbol).values(enabled=enabled, updated_at=now)
    )
    if result.rowcount == 0:
        raise NoDataError(
            f"no market {symbol} in the market list",
            hint=f"add it with `marketdata markets add {symbol}`",
        )


def symbol_overrides(conn: Connection) -> dict[str, dict[str, str]]:
    """provider -> canonical symbol -> provider symbol, from every market's overrides."""
    overrides: dict[str, dict[str, str]] = {}
    for market in list_markets(conn):
        for provider, theirs in market.provider_symbols.items():
            overrides.setdefault(provider, {})[market.symbol] = theirs
    return overrides
