"""Market list operations behind `marketdata markets`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from marketdata.domain import parse_symbol
from marketdata.errors import InputError
from marketdata.storage.markets import Market

if TYPE_CHECKING:
    from marketdata.context import AppContext

ASSET_CLASSES = ("crypto", "equity", "fx")


def parse_provider_symbols(values: list[str]) -> dict[str, str]:
    """NAME=ID pairs, with NAME a registered provider."""
    from marketdata.providers.registry import parse_chain

    mapping: dict[str, str] = {}
    for value in values:
        name, sep, theirs = value.partition("=")
        if not sep or not theirs.strip():
            raise InputError(f"--provider-symbol {value!r} is not NAME=ID (e.g. binance=BTCUSDT)")
        mapping[parse_chain([name])[0]] = theirs.strip()
    return mapping


def add_market(
    app: AppContext,
    raw_symbol: str,
    asset_class: str | None,
    provider_symbols: list[str],
    note: str | None,
    *,
    calendar: str | None = None,
    dry_run: bool = False,
) -> tuple[Market, bool]:
    """Add or update a market; returns it and whether it is new.

    `calendar` (24/7, 24/5 or an exchange code) is checked before anything is written; a
    market without one follows its asset class (see marketdata.calendars).
    """
    from marketdata.calendars import guess_asset_class, parse_calendar
    from marketdata.storage.engine import connect
    from marketdata.storage.markets import list_markets, upsert_market

    symbol = parse_symbol(raw_symbol)
    if asset_class is not None and asset_class not in ASSET_CLASSES:
        raise InputError(f"--asset-class must be one of {', '.join(ASSET_CLASSES)}")
    mapping = parse_provider_symbols(provider_symbols)
    chosen_calendar = parse_calendar(calendar) if calendar is not None else None
    with connect(app.engine(), app.target) as conn:
        existing = {m.symbol: m for m in list_markets(conn)}.get(symbol)
        merged = {**(existing.provider_symbols if existing else {}), **mapping}
        market = Market(
            symbol,
            enabled=existing.enabled if existing else True,
            asset_class=asset_class
            or (existing.asset_class if existing else guess_asset_class(symbol)),
            provider_symbols=merged,
            note=note if note is not None else (existing.note if existing else None),
            calendar=chosen_calendar or (existing.calendar if existing else None),
        )
        if dry_run:
            return market, existing is None
        new = upsert_market(conn, market, app.clock())
        conn.commit()
    return market, new


def set_market_enabled(app: AppContext, raw_symbol: str, enabled: bool) -> str:
    """Enable or disable a market; NoDataError when it is not in the list."""
    from marketdata.storage.engine import connect
    from marketdata.storage.markets import set_enabled

    symbol = parse_symbol(raw_symbol)
    with connect(app.engine(), app.target) as conn:
        set_enabled(conn, symbol, enabled, app.clock())
        conn.commit()
    return symbol
