"""Shell completion of option values: intervals, providers and the symbols stored.

Typer calls these while the shell asks for candidates; a comma list completes its last item.
"""

from __future__ import annotations

from collections.abc import Iterable


def intervals(incomplete: str) -> list[str]:
    """Interval names, e.g. `-i 1h,` offers `1h,1d` ..."""
    from marketdata.domain import Interval

    return _matching((i.value for i in Interval), incomplete)


def providers(incomplete: str) -> list[str]:
    """Registered provider names (a fallback chain completes its last link)."""
    from marketdata.providers.registry import PROVIDERS

    return _matching(PROVIDERS, incomplete)


def stored_symbols(incomplete: str) -> list[str]:
    """Symbols of the market list and of the stored candles, from the configured database."""
    from marketdata.cli.state import OPTIONS
    from marketdata.context import AppContext
    from marketdata.errors import MarketdataError
    from marketdata.storage.candles import stored_pairs
    from marketdata.storage.engine import connect
    from marketdata.storage.markets import list_markets

    try:
        app = AppContext.from_settings(OPTIONS.flags, env_file=OPTIONS.env_file)
        if not app.database_exists():  # completing must never create the database
            return []
        with connect(app.engine(migrate=False), app.target) as conn:
            names = {m.symbol for m in list_markets(conn)} | {s for s, _ in stored_pairs(conn)}
    except MarketdataError:
        return []  # no database (yet): nothing to offer; an error would garble the shell line
    return _matching(sorted(names), incomplete)


def _matching(candidates: Iterable[str], incomplete: str) -> list[str]:
    done, _, last = incomplete.rpartition(",")
    prefix = f"{done}," if done else ""
    return [prefix + c for c in candidates if c.lower().startswith(last.lower())]
