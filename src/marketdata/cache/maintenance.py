"""`cache rebuild`, `cache invalidate` and `cache stats`: the operator's side of the cache."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from marketdata.cache.base import CacheStats, glob_regex
from marketdata.cache.keys import (
    MARKET_PATTERN,
    count_kinds,
    latest_key,
    recent_key,
    roi_key,
    show_key,
)
from marketdata.domain import Interval, parse_symbols
from marketdata.errors import InputError

if TYPE_CHECKING:
    from marketdata.context import AppContext

REBUILD_CHUNK = 250
"""Pairs read in one query and written in one pipelined round trip."""


@dataclass(frozen=True)
class RebuildResult:
    """What `cache rebuild` did (or would do, in a dry run)."""

    backend: str
    pattern: str
    pairs: int
    deleted: int
    written: int
    dry_run: bool = False


def check_pattern(pattern: str) -> str:
    """A glob for the cache, or InputError (it is matched after CACHE_PREFIX, never outside)."""
    if not pattern or any(ch.isspace() for ch in pattern):
        raise InputError(
            f"cache pattern {pattern!r} is empty or holds spaces",
            hint="give a glob such as 'market:*' or 'market:BTC-USD:*'",
        )
    return pattern


def rebuild(
    app: AppContext,
    pattern: str = MARKET_PATTERN,
    symbols: Sequence[str] | None = None,
    *,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> RebuildResult:
    """Drop the market keys matching `pattern` (of `symbols` only, if given) and refill them
    from the database alone, a chunk of pairs per query and per round trip.

    Args:
        app: The application context.
        pattern: Which keys, a glob such as 'market:*'.
        symbols: Only these symbols' keys.
        dry_run: Count what would be deleted and refilled; change nothing.
        progress: Called with (pairs done, pairs in all) after each chunk.

    Raises:
        InputError: For a malformed pattern or symbol.
        NoDataError: When symbols are given and nothing is stored for them.
    """
    from marketdata.cache.market import refresh_pairs
    from marketdata.storage.candles import stored_pairs
    from marketdata.storage.engine import connect

    check_pattern(pattern)
    chosen = parse_symbols(symbols or [])
    cache = app.cache
    wanted = glob_regex(pattern)
    doomed = _keys(app, pattern, chosen)
    pairs: list[tuple[str, Interval]] = []
    if app.database_exists():
        with connect(app.engine(), app.target) as conn:
            stored = stored_pairs(conn, chosen or None)
            conn.rollback()
    else:
        stored = []
    if chosen and not stored:
        from marketdata.reports import nothing_stored

        raise nothing_stored(chosen, None)
    for symbol, name in stored:
        keys = (
            show_key(symbol, name),
            recent_key(symbol, name),
            latest_key(symbol, name),
            roi_key(symbol),
        )
        if any(wanted.match(k) for k in keys):
            pairs.append((symbol, Interval.parse(name)))
    if dry_run:
        return RebuildResult(cache.name, pattern, len(pairs), len(doomed), 0, dry_run=True)
    deleted = _delete(app, pattern, chosen, doomed)
    written = 0
    if pairs:
        with connect(app.engine(), app.target) as conn:
            now = app.clock()
            for first in range(0, len(pairs), REBUILD_CHUNK):
                chunk = pairs[first : first + REBUILD_CHUNK]
                written += refresh_pairs(cache, conn, app.settings, chunk, now)
                conn.rollback()
                if progress is not None:
                    progress(first + len(chunk), len(pairs))
    return RebuildResult(cache.name, pattern, len(pairs), deleted, written)


def _keys(app: AppContext, pattern: str, symbols: list[str]) -> list[str]:
    if not symbols:
        return app.cache.scan(pattern)
    wanted = glob_regex(pattern)
    return [
        key
        for symbol in symbols
        for key in app.cache.scan(f"market:{symbol}:*")
        if wanted.match(key)
    ]


def _delete(app: AppContext, pattern: str, symbols: list[str], keys: list[str]) -> int:
    if not symbols:
        return app.cache.delete_pattern(pattern)
    from marketdata.cache.base import DELETE_BATCH

    for first in range(0, len(keys), DELETE_BATCH):
        app.cache.set_many({}, drop=keys[first : first + DELETE_BATCH])
    return len(keys)


def invalidate(
    app: AppContext, patterns: Sequence[str], *, dry_run: bool = False
) -> dict[str, int]:
    """Delete the keys matching each pattern (SCAN + UNLINK in batches); count per pattern.

    Raises:
        InputError: For a malformed pattern.
    """
    counts: dict[str, int] = {}
    for pattern in patterns:
        check_pattern(pattern)
        counts[pattern] = app.cache.count(pattern) if dry_run else app.cache.delete_pattern(pattern)
    return counts


def stats(app: AppContext) -> CacheStats:
    """Backend, market keys by kind, hits, misses, fallbacks, memory or disk in use."""
    return app.cache.stats(count_kinds)
