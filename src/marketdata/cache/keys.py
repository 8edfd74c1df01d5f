"""The cache's key names: every market value lives under `market:` (CACHE_PREFIX in front)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from marketdata.domain import Interval

MARKET_PATTERN = "market:*"
KINDS = ("latest", "show", "recent", "roi", "other")


def latest_key(symbol: str, interval: str) -> str:
    """The newest stored candle of a pair, with its indicators and when it was stored."""
    return f"market:{symbol}:{interval}:latest"


def show_key(symbol: str, interval: str) -> str:
    """What `show` prints for a pair: its latest candles with indicators, and its ROI."""
    return f"market:{symbol}:{interval}:show"


def recent_key(symbol: str, interval: str) -> str:
    """The rows stored after a pair's `show` value (newest last) and the ROI as of the
    newest of them: an incremental run writes this small value, not the whole `show` one,
    and folds it into `show` now and then (see market.RECENT_BARS)."""
    return f"market:{symbol}:{interval}:recent"


def roi_key(symbol: str) -> str:
    """The ROI horizons of a symbol as of its latest daily close (`show SYMBOL`'s ROI line)."""
    return f"market:{symbol}:roi"


def pair_keys(symbol: str, interval: Interval) -> tuple[str, str, str]:
    """The keys a pair's refresh writes or, when it cannot, drops (`show`, `recent`,
    `latest`)."""
    name = interval.value
    return show_key(symbol, name), recent_key(symbol, name), latest_key(symbol, name)


def pair_pattern(symbol: str) -> str:
    """Every key of one symbol (its pairs and its ROI); symbols hold no glob characters."""
    return f"market:{symbol}:*"


def kind_of(key: str) -> str:
    """Which of KINDS a key is."""
    parts = key.split(":")
    if len(parts) == 4 and parts[0] == "market" and parts[3] in ("latest", "show", "recent"):
        return parts[3]
    if len(parts) == 3 and parts[0] == "market" and parts[2] == "roi":
        return "roi"
    return "other"


def count_kinds(keys: Iterable[str]) -> dict[str, int]:
    """Keys counted by kind, every kind present (zero when none)."""
    counts = dict.fromkeys(KINDS, 0)
    for key in keys:
        counts[kind_of(key)] += 1
    return counts


def is_everything(pattern: str) -> bool:
    """Whether a pattern reaches every market key (its literal start names no symbol)."""
    literal = pattern
    for index, char in enumerate(pattern):
        if char in "*?[\\":
            literal = pattern[:index]
            break
    return "market:".startswith(literal) or literal == "market:"
