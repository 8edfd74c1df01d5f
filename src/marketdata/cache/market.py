"""What is cached about the markets, as JSON other programs can read, and how it is refreshed.

Per (symbol, interval) pair:
- `market:{symbol}:{interval}:latest`: the newest stored candle with its indicators (null
  outside ANALYTICS_INTERVALS, where none are stored) and `stored_at`;
- `market:{symbol}:{interval}:show`: what `show` prints, the newest CACHE_BARS candles (a
  setting) as columns with their indicators, and the ROI horizons;
- `market:{symbol}:{interval}:recent`: the rows stored after the `show` value's newest
  (`after`), row by row, and the ROI as of the newest of them. Readers see the two as one
  `show` value (`combined`). An incremental run extends only this small value, and in place:
  it reads its fields but not its rows, and writes the rows it committed after them (see
  `_spliced`), so that its cache cost follows the rows it wrote, not the rows kept; every
  RECENT_BARS rows (or when the `show` value is half its TTL old) it folds them into a new
  `show` value instead;
and per symbol `market:{symbol}:roi`: the ROI horizons as of the latest daily close.

Every value carries `database`, the id of the database it was read from (see
`fallback.database_id`). Writers (the pipeline after each pair's commit, `analytics rebuild`,
`cache rebuild`) keep them current; readers trust a `show` value only when it is their own
database's, of the shape this version writes (see `checks`), and ends at the `latest` candle.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from operator import attrgetter
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import orjson
from loguru import logger

from marketdata.analytics.indicators import INDICATOR_NAMES
from marketdata.cache.checks import (
    COLUMNS,
    PRICE_KEYS,
    RECENT_FIELDS,
    VALUE_COLUMNS,
    Problem,
    latest_problem,
    recent_header_problem,
    recent_problem,
    show_problem,
    usable,
)
from marketdata.cache.keys import latest_key, pair_keys, recent_key, roi_key, show_key
from marketdata.domain import DAY, Candles, Interval, epoch_of, utc_from_epoch

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from marketdata.analytics.roi import Anchor
    from marketdata.cache.fallback import FallbackCache
    from marketdata.config import Settings
    from marketdata.context import AppContext
    from marketdata.derive import Appended
    from marketdata.errors import MarketdataError
    from marketdata.reports import ShowReport

MARKET_TTL = 7 * DAY
"""Market keys expire unless a writer refreshes them (bounds staleness after an outage)."""
RECENT_BARS = 24
"""Rows a `recent` value holds at most: an incremental run that would make it longer (or
finds the `show` value older than half MARKET_TTL) writes a new `show` value instead. A
`show` value is decoded and encoded once every RECENT_BARS runs, not every run (~0.5 ms a
pair, more than the rest of the run's cache work for it)."""


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@lru_cache(maxsize=256)
def _iso_epoch(ts: int) -> str:
    """`_iso` of a candle's time: the pairs of a run share their newest one."""
    return _iso(utc_from_epoch(ts))


# ------------------------------------------------------------------------------ values


def pair_values(
    report: ShowReport, *, complete: bool, stored_at: str, database: str
) -> dict[str, Any]:
    """The keys of one pair (and its symbol's ROI for the daily interval) from its report.

    Args:
        report: `show`'s report holding up to CACHE_BARS candles.
        complete: Whether those candles are the pair's whole history.
        stored_at: When the values were read from the database (ISO 8601).
        database: The id of the database they were read from.
    """
    candles = report.candles
    assert candles.indicators is not None
    interval = report.interval.value
    # numpy columns as they are: the encoder writes them (NaN as null) at C speed, where
    # lists of Python floats were most of a `cache rebuild`'s own time
    columns: dict[str, Any] = {"ts": candles.ts}
    columns |= {k: getattr(candles, k) for k in PRICE_KEYS}
    columns |= {k: candles.indicators[k] for k in INDICATOR_NAMES}
    newest = int(candles.ts[-1])
    values: dict[str, Any] = {
        show_key(report.symbol, interval): {
            "symbol": report.symbol,
            "interval": interval,
            "newest": newest,
            "complete": complete,
            "computed": report.computed,
            "provider": candles.provider,
            "stored_at": stored_at,
            "database": database,
            "columns": columns,
            "roi": report.roi,
        },
        # nothing after it yet (a `recent` value left from before would not follow it)
        recent_key(report.symbol, interval): _recent(
            report, interval, newest, newest, stored_at, stored_at, database
        )
        | {"rows": []},
    }
    newest_row = {k: v[-1] for k, v in columns.items()}
    values |= _newest_values(report, interval, newest_row, stored_at, database)
    return values


def _recent(
    report: ShowReport,
    interval: str,
    after: int,
    newest: int,
    stored_at: str,
    base_stored_at: str,
    database: str,
) -> dict[str, Any]:
    """A `recent` value's fields but its `rows`, which follow them (last: see `_spliced`):
    the rows after the `show` value ending at `after` (stored at `base_stored_at`) end at
    `newest`; the report's ROI (`interval` is the report's, as text: an Enum's `.value`
    costs a Python call, and the callers have it)."""
    return {
        "symbol": report.symbol,
        "interval": interval,
        "after": after,
        "newest": newest,
        "provider": report.candles.provider,
        "stored_at": stored_at,
        "base_stored_at": base_stored_at,
        "database": database,
        "roi": report.roi,
        "fields": RECENT_FIELDS,
    }


def _newest_values(
    report: ShowReport, interval: str, row: dict[str, Any], stored_at: str, database: str
) -> dict[str, Any]:
    """The pair's `latest` value from its newest row (with indicators), and its symbol's
    `roi` value for the daily interval (`interval` as in `_recent`)."""
    values = {
        latest_key(report.symbol, interval): latest_value(
            report.symbol, interval, row, stored_at, database, with_indicators=True
        )
    }
    if report.interval is Interval.D1:
        values[roi_key(report.symbol)] = {
            "symbol": report.symbol,
            "interval": interval,
            "as_of": _iso_epoch(int(row["ts"])),
            "roi": report.roi,
            "stored_at": stored_at,
            "database": database,
        }
    return values


def latest_value(
    symbol: str,
    interval: str,
    row: dict[str, Any],
    stored_at: str,
    database: str,
    *,
    with_indicators: bool,
) -> dict[str, Any]:
    """`market:{symbol}:{interval}:latest` from one row (keys ts, prices, indicators)."""
    ts = int(row["ts"])
    return {
        "symbol": symbol,
        "interval": interval,
        "ts": ts,
        "time": _iso_epoch(ts),
        **{k: row[k] for k in PRICE_KEYS},
        "indicators": {k: row[k] for k in INDICATOR_NAMES} if with_indicators else None,
        "stored_at": stored_at,
        "database": database,
    }


def report_of(value: dict[str, Any], last: int | None) -> ShowReport | None:
    """The ShowReport a `show` value holds, or None when it has fewer than `last` candles
    and is not the whole history."""
    from marketdata.reports import ShowReport

    columns = value["columns"]
    if last is not None and len(columns["ts"]) < last and not value["complete"]:
        return None
    keep = slice(-last, None) if last is not None else slice(None)
    open_, high, low, close, volume = (_floats(columns[k])[keep] for k in PRICE_KEYS)
    candles = Candles(
        value["symbol"],
        Interval.parse(value["interval"]),
        value["provider"],
        np.array(columns["ts"], dtype=np.int64)[keep],
        open_,
        high,
        low,
        close,
        volume,
    ).with_indicators({k: _floats(columns[k])[keep] for k in INDICATOR_NAMES})
    return ShowReport(
        value["symbol"],
        candles.interval,
        candles,
        dict(value["roi"]),
        bool(value["computed"]),
        source="cache",
        stored_at=value["stored_at"],
    )


def _floats(values: list[Any]) -> np.ndarray[Any, np.dtype[np.float64]]:
    # numpy reads null (None) as NaN; the values were checked numbers or nulls (`checks`)
    return np.array(values, dtype=np.float64)


# ------------------------------------------------------------------------------ reading


@dataclass(frozen=True)
class CachedShow:
    """A cached `show` answer: `fresh` when current, else `stale` (for a database outage)."""

    fresh: ShowReport | None = None
    stale: ShowReport | None = None


def read_show(
    cache: FallbackCache, symbol: str, interval: Interval, last: int, bars: int
) -> CachedShow:
    """The pair's cached report of its newest `last` candles (one round trip; its value
    seen as of `bars`, CACHE_BARS), counting a hit or a miss; a value that is not this
    database's, or not of the shape written here, is a miss."""
    found = cache.get_many(_read_keys(symbol, interval.value))
    value = _show_value(cache, found, symbol, interval.value, bars)
    report = None if value is None else report_of(value, last)
    if value is None or report is None:
        cache.count_read(False)
        return CachedShow()
    if _is_current(cache, value, found):
        cache.count_read(True)
        return CachedShow(fresh=report)
    cache.count_read(False)
    return CachedShow(stale=report)


def _read_keys(symbol: str, interval: str) -> list[str]:
    """The keys a reader of a pair's `show` value fetches together."""
    return [show_key(symbol, interval), recent_key(symbol, interval), latest_key(symbol, interval)]


def _show_value(
    cache: FallbackCache, found: dict[str, Any], symbol: str, interval: str, bars: int
) -> dict[str, Any] | None:
    """The pair's `show` value followed by its `recent` rows (see `combined`); None when
    either is there but cannot be trusted."""
    key, more = show_key(symbol, interval), recent_key(symbol, interval)
    show = usable(cache, key, found.get(key), show_problem(symbol, interval))
    if show is None:
        return None
    recent = usable(cache, more, found.get(more), recent_problem(symbol, interval))
    if recent is None and found.get(more) is not None:
        return None  # a `recent` value it cannot use (said once): the database answers
    return combined(show, recent, bars)


def combined(show: dict[str, Any], recent: dict[str, Any] | None, bars: int) -> dict[str, Any]:
    """A `show` value followed by the `recent` one that follows it (its `after` is the `show`
    value's newest; its rows replace any from their first on), as one `show` value of the
    newest `bars` rows (CACHE_BARS) and the `recent` one's ROI. Any other `recent` value
    (none, one left from before the `show` value was written) is ignored: the `show` value
    alone is then current only if it reaches the `latest` candle."""
    if recent is None or recent["after"] != show["newest"]:
        return show
    base, rows = show["columns"], recent["rows"]
    cut = bisect_left(base["ts"], rows[0][0]) if rows else len(base["ts"])
    total = cut + len(rows)
    keep = max(0, total - bars)
    more = zip(*rows, strict=True) if rows else [()] * len(COLUMNS)
    columns = {k: (base[k][:cut] + list(new))[keep:] for k, new in zip(COLUMNS, more, strict=True)}
    return show | {
        "newest": recent["newest"],
        "complete": bool(show["complete"]) and total <= bars,
        "provider": recent["provider"],
        "stored_at": recent["stored_at"],
        "columns": columns,
        "roi": recent["roi"],
    }


def _is_current(cache: FallbackCache, show: dict[str, Any], found: dict[str, Any]) -> bool:
    """A `show` value is current unless a writer stored a newer latest candle since, or the
    `latest` value beside it cannot be trusted (then only a database outage shows it)."""
    key = latest_key(show["symbol"], show["interval"])
    if found.get(key) is None:
        return True
    latest = usable(cache, key, found[key], latest_problem)
    return latest is not None and int(show["newest"]) >= int(latest["ts"])


@dataclass(frozen=True)
class CachedCloses:
    """Cached daily (ts, close) per symbol: `fresh` when current and long enough."""

    fresh: dict[str, tuple[Any, Any]] | None = None
    stale: dict[str, tuple[Any, Any]] | None = None
    stored_at: str | None = None


def read_closes(
    cache: FallbackCache, symbols: Sequence[str], window: int, bars: int
) -> CachedCloses:
    """Daily closes of every symbol from the cache (one round trip), when they give the same
    comparison as the database: every value current and, unless all of them hold their
    whole history, at least `window` + 1 common days (the newest common days of the cached
    tails are the newest common days of the whole histories)."""
    daily = Interval.D1.value
    keys = [k for s in symbols for k in _read_keys(s, daily)]
    found = cache.get_many(keys)
    maybe = [_show_value(cache, found, s, daily, bars) for s in symbols]
    shows: list[dict[str, Any]] = [v for v in maybe if v is not None]
    if len(shows) < len(symbols):
        cache.count_read(False)
        return CachedCloses()
    series = {
        s: (np.array(v["columns"]["ts"], dtype=np.int64), _floats(v["columns"]["close"]))
        for s, v in zip(symbols, shows, strict=True)
    }
    stored_at = min(str(v["stored_at"]) for v in shows)
    current = all(_is_current(cache, v, found) for v in shows)
    common = len(_common(series))
    enough = all(v["complete"] for v in shows) or common >= window + 1
    if current and enough:
        cache.count_read(True)
        return CachedCloses(fresh=series, stored_at=stored_at)
    cache.count_read(False)
    return CachedCloses(stale=series if enough else None, stored_at=stored_at)


def _common(series: dict[str, tuple[Any, Any]]) -> Any:
    stamps = [ts for ts, _ in series.values()]
    common = stamps[0]
    for ts in stamps[1:]:
        common = np.intersect1d(common, ts)
    return common


def warn_stale(exc: MarketdataError, stored_at: str | None) -> None:
    """The one warning of an answer from the cache while the database is unreachable."""
    logger.warning(
        "{}; answering from the cache (values stored at {})", exc.one_line(), stored_at or "?"
    )


# ------------------------------------------------------------------------------ writing


def store_show(cache: FallbackCache, report: ShowReport, *, complete: bool, now: datetime) -> None:
    """Fill the cache from a report `show` just read from the database (one round trip)."""
    values = pair_values(report, complete=complete, stored_at=_iso(now), database=cache.database)
    cache.set_many(values, MARKET_TTL)


def refresh_pairs(
    cache: FallbackCache,
    conn: Connection,
    settings: Settings,
    pairs: list[tuple[str, Interval]],
    now: datetime,
) -> int:
    """Read several pairs from the database in one query and write their keys in one round
    trip; the number of keys written. Pairs with nothing stored get their keys dropped."""
    stamps = dict.fromkeys(pairs, _iso(now))
    values, drop = _whole_values(conn, settings, stamps, cache.database)
    cache.set_many(values, MARKET_TTL, drop=drop)
    return len(values)


def _whole_values(
    conn: Connection, settings: Settings, stamps: dict[tuple[str, Interval], str], database: str
) -> tuple[dict[str, Any], list[str]]:
    """The keys of pairs (each stored at its stamp) from their whole histories, read in one
    query, and the keys to drop (of the pairs with nothing stored)."""
    from marketdata.derive import analytics_intervals
    from marketdata.storage.candles import read_pairs

    stored = read_pairs(conn, list(stamps), with_indicators=True)
    derived = analytics_intervals(settings)
    values: dict[str, Any] = {}
    drop: list[str] = []
    for (symbol, interval), stored_at in stamps.items():
        history = stored.get((symbol, interval))
        if history is None:
            drop += pair_keys(symbol, interval)
            continue
        values |= history_values(
            history,
            bars=settings.cache_bars,
            derived=interval in derived,
            stored_at=stored_at,
            database=database,
        )
    return values, drop


def history_values(
    history: Candles, *, bars: int, derived: bool, stored_at: str, database: str
) -> dict[str, Any]:
    """A pair's keys, its newest `bars` candles (CACHE_BARS), from its whole stored history
    (with its stored indicators when `derived`): what `cache rebuild` writes, and the
    pipeline when it wrote all of it."""
    from marketdata.reports import show_report

    symbol, interval = history.symbol, history.interval
    tail = history.take(slice(-bars, None)) if derived else None
    # show_report reads only the history's times and closes (its indicators are computed
    # again when `tail` has none)
    report = show_report(symbol, interval, history, tail, bars)
    complete = len(history) <= bars
    return pair_values(report, complete=complete, stored_at=stored_at, database=database)


def refresh_later(
    app: AppContext,
    symbol: str,
    interval: Interval,
    now: datetime,
    whole: Candles | None = None,
    newest: int | None = None,
    appended: Appended | None = None,
) -> None:
    """Write a pair's keys once its transaction committed (the pipeline's hook): hands the
    pair to the run's background refresher, off the pair's thread; the run waits for it at
    its end (`drain_refreshes`).

    When the pipeline just wrote the pair's whole history (`whole`, with its indicators:
    a first ingest, a backfill of a new pair) the keys are built from those rows, without
    reading anything back. When it wrote rows after all the stored ones (`appended`, an
    incremental run's) the keys are the pair's previous cached value extended by them, if
    that value is this database's and ends at the stored row before them. Otherwise the
    refresher reads the pair's newest rows; `newest`, the newest candle the transaction
    wrote, bounds that read to the partitions near it. `whole` and `appended` carry
    indicators, so they come only for intervals in ANALYTICS_INTERVALS (`PairWriter` sets
    them only when it derives); this runs on the pairs' thread, once a pair.
    """
    from marketdata.cache.refresher import Refresher
    from marketdata.storage.engine import connect

    cache = app.cache
    if cache.name == "none":
        return  # nothing to refresh: spare the reads

    def build() -> Refresher:
        return Refresher(cache, lambda: connect(app.engine(), app.target), app.settings)

    cache.refresher(build).submit(Committed(symbol, interval, now, newest, whole, appended))


def write_in_hand(
    cache: FallbackCache, settings: Settings, pairs: Sequence[Committed]
) -> list[Committed]:
    """Write the keys of the pairs whose last commit here wrote their whole history, from
    those rows (one round trip for all); the pairs left, whose keys need a read."""
    last = {(p.symbol, p.interval): p for p in pairs}
    values: dict[str, Any] = {}
    for pair in last.values():
        if pair.whole is not None:
            stored_at = _iso(pair.now)
            values |= history_values(
                pair.whole,
                bars=settings.cache_bars,
                derived=True,
                stored_at=stored_at,
                database=cache.database,
            )
    if values:
        cache.set_many(values, MARKET_TTL)
    return [p for p in pairs if last[(p.symbol, p.interval)].whole is None]


def drain_refreshes(app: AppContext, *, abandon: bool = False) -> None:
    """Wait until the pairs handed to `refresh_later` are written (at a run's end); with
    `abandon` (the run was stopped) drop the keys of those not written yet instead."""
    app.cache.drain(abandon=abandon)


class Committed(NamedTuple):
    """A pair whose transaction committed at `now` (when its values count as stored), with
    the newest candle it wrote (epoch seconds) when known."""

    symbol: str
    interval: Interval
    now: datetime
    newest: int | None = None
    whole: Candles | None = None  # its whole history, when the commit wrote all of it
    appended: Appended | None = None  # rows it wrote after all the stored ones


def after_commit(
    cache: FallbackCache,
    conn: Connection,
    settings: Settings,
    symbol: str,
    interval: Interval,
    now: datetime,
) -> None:
    """Refresh a pair's keys once its transaction committed, reading them on `conn`."""
    refresh_committed(cache, conn, settings, [Committed(symbol, interval, now)])


def refresh_committed(
    cache: FallbackCache, conn: Connection, settings: Settings, pairs: Sequence[Committed]
) -> None:
    """Refresh the keys of pairs whose transactions committed, reading them on `conn`: a
    few statements and one round trip for all of them, whatever their number.

    Intervals in ANALYTICS_INTERVALS get every key (their indicators are stored); others
    get `latest` (indicators null) and lose their `show` value, which the next `show`
    computes and caches. A database error here is logged and the pairs' keys are dropped
    (the pairs are already stored; no reader may trust values older than them).
    """
    from sqlalchemy.exc import SQLAlchemyError

    from marketdata.errors import MarketdataError

    try:
        if cache.name == "none" or not pairs:
            return  # nothing to refresh: spare the reads
        appended = _appended_once(pairs)
        recent = _recent_values(
            cache, conn, appended, {(p.symbol, p.interval): p.now for p in pairs}
        )
        left = [p for p in pairs if (p.symbol, p.interval) not in recent.pairs]
        folded = {k: v for k, v in appended.items() if k not in recent.pairs}
        extended = _extended_tails(cache, folded, settings.cache_bars)
        values, drop = _committed_values(cache.database, conn, settings, left, extended)
        cache.set_many(values | recent.values, MARKET_TTL, drop=drop)
    except (MarketdataError, SQLAlchemyError) as exc:
        from marketdata.cache.fallback import describe
        from marketdata.redact import scrub

        why = exc.one_line() if isinstance(exc, MarketdataError) else scrub(describe(exc))
        symbols = sorted({p.symbol for p in pairs})
        logger.warning(
            "{}: cache not refreshed ({}); {} keys were dropped, "
            "`marketdata cache rebuild --symbols {}` writes them again",
            ", ".join(f"{p.symbol} {p.interval}" for p in pairs),
            why,
            "its" if len(pairs) == 1 else "their",
            ",".join(symbols),
        )
        cache.set_many({}, drop=[k for p in pairs for k in pair_keys(p.symbol, p.interval)])
    finally:
        conn.rollback()  # end the read transaction the refresh began


def _committed_values(
    database: str,
    conn: Connection,
    settings: Settings,
    pairs: Sequence[Committed],
    extended: dict[tuple[str, Interval], _Tail],
) -> tuple[dict[str, Any], list[str]]:
    """The keys to write and to drop for committed pairs: derived pairs from their newest
    CACHE_BARS rows (`extended` holds those known without a read) and the few closes ROI
    looks back to beyond them (read for all of them in two statements, a cost that does not
    grow with history), those never derived from their whole histories, the others'
    `latest` only."""
    from marketdata.derive import analytics_intervals

    stamps = {(p.symbol, p.interval): _iso(p.now) for p in pairs}  # a pair's last commit
    near = _near(pairs)
    derived = analytics_intervals(settings)
    values, drop = _latest_values(
        database, conn, {k: v for k, v in stamps.items() if k[1] not in derived}, near
    )
    reads = {k: near[k] for k in stamps if k[1] in derived and k not in extended}
    tails = _tails(conn, reads, settings.cache_bars)
    tails |= extended
    values |= _tail_values(database, conn, {k: stamps[k] for k in tails}, tails)
    whole = {k: v for k, v in stamps.items() if k[1] in derived and k not in tails}
    if whole:
        more, gone = _whole_values(conn, settings, whole, database)
        values |= more
        drop += gone
    return values, drop


def _near(pairs: Sequence[Committed]) -> dict[tuple[str, Interval], int]:
    """Per pair, the moment its newest rows are read back from: just after the newest candle
    its transactions wrote, else (not known) the commit's clock. Keyed on the commit's clock
    alone, a pair whose candles are older than the bounded read's window (a backfill, a
    market closed for weeks) read nothing first and then everything."""
    near: dict[tuple[str, Interval], int] = {}
    for p in pairs:
        moment = epoch_of(p.now) if p.newest is None else p.newest + 1
        key = (p.symbol, p.interval)
        near[key] = max(near.get(key, moment), moment)
    return near


def _read_newest(
    conn: Connection, near: dict[tuple[str, Interval], int], last: int, *, indicators: bool
) -> dict[tuple[str, Interval], Candles]:
    """`read_latest_many` of pairs each bounded near its own newest candle: one statement
    per distinct bound (the pairs of one run share it)."""
    from marketdata.storage.candles import read_latest_many, recent_floor

    bounds: dict[tuple[Interval, int], tuple[int, list[tuple[str, Interval]]]] = {}
    for pair, moment in near.items():
        key = (pair[1], recent_floor(pair[1], moment, last))
        bounds.setdefault(key, (moment, []))[1].append(pair)
    found: dict[tuple[str, Interval], Candles] = {}
    for moment, group in bounds.values():
        found |= read_latest_many(conn, group, last, now=moment, with_indicators=indicators)
    return found


def _appended_once(pairs: Sequence[Committed]) -> dict[tuple[str, Interval], Appended]:
    """The rows each pair committed after all its stored ones, of the pairs that committed
    once in the group (a second commit followed the first's rows)."""
    once = Counter((p.symbol, p.interval) for p in pairs)
    return {
        (p.symbol, p.interval): p.appended
        for p in pairs
        if p.appended is not None and once[(p.symbol, p.interval)] == 1
    }


class _Recent(NamedTuple):
    """The keys of the pairs whose `recent` values an incremental run extended."""

    values: dict[str, Any]
    pairs: set[tuple[str, Interval]]


def _recent_values(
    cache: FallbackCache,
    conn: Connection,
    appended: dict[tuple[str, Interval], Appended],
    now: dict[tuple[str, Interval], datetime],
) -> _Recent:
    """The `recent`, `latest` and `roi` values of the pairs whose `recent` value (one round
    trip) the rows they committed extend, with their ROI anchors read in one go; a pair's
    `show` value is neither read nor written, nor are the `recent` value's rows decoded.

    A `recent` value is extended only when it is this database's and of this version's
    shape, was current before the commit (see `_ends_before`), stays within RECENT_BARS and
    follows a `show` value younger than half MARKET_TTL (which this does not refresh)."""
    from marketdata.analytics.roi import anchors, roi_from
    from marketdata.reports import ShowReport
    from marketdata.storage.candles import anchor_closes_many

    names = {pair: _names(pair) for pair in appended}
    keys = {pair: recent_key(*names[pair]) for pair in appended}
    found = cache.get_many(list(keys.values()), raw=True) if keys else {}
    extended: dict[tuple[str, Interval], tuple[dict[str, Any], bytes]] = {}
    for pair, wrote in appended.items():
        held = _held(found.get(keys[pair]), recent_header_problem(*names[pair]), cache.database)
        if held is None or not _ends_before(int(held.fields["newest"]), wrote):
            continue
        kept = _before(held, int(wrote.rows.ts[0]))
        if kept is None or kept.size + len(wrote.rows) > RECENT_BARS:
            continue
        if _young(held.fields["base_stored_at"], now[pair]):
            extended[pair] = held.fields, kept.rows
    # the pairs of a run share their newest time, and so (cached) one mapping of anchors
    marks = {pair: anchors(int(appended[pair].rows.ts[-1])) for pair in extended}
    then = anchor_closes_many(conn, marks) if marks else {}
    values: dict[str, Any] = {}
    database = cache.database
    for pair, (fields, rows_held) in extended.items():
        rows = appended[pair].rows
        roi = roi_from(float(rows.close[-1]), then[pair])
        report = ShowReport(pair[0], pair[1], rows, roi, computed=False)
        stored_at = _iso(now[pair])
        name = names[pair][1]
        new = _rows_of(rows)
        head = _recent(
            report, name, fields["after"], new[-1][0], stored_at, fields["base_stored_at"], database
        )
        values[keys[pair]] = _spliced(head, rows_held, new)
        newest = dict(zip(COLUMNS, new[-1], strict=True))
        values |= _newest_values(report, name, newest, stored_at, database)
    return _Recent(values, set(extended))


_ROWS_MARK = b',"rows":['
"""Where a `recent` value's rows begin: its last field (see `_recent`), whose text holds no
string."""
_ROWS_END = b"]}"


class _Held(NamedTuple):
    """A stored `recent` value: its fields decoded, its rows as the text between `[...]`
    (`[row],[row]`, empty when none), and how many rows that is (`size`)."""

    fields: dict[str, Any]
    rows: bytes
    size: int


def _held(stored: Any, problem: Problem, database: str) -> _Held | None:
    """A stored `recent` value (bytes, or text from the disk cache) with its fields decoded
    and checked and its rows' text split off, not decoded; None unless it is this
    database's, of this version's shape and laid out as this version writes it.

    Its rows are checked for their brackets alone (as many `[` as `]`, no string), a few
    passes in C: a reader checks every value (`recent_problem`) before it uses one, and a
    fold decodes it whole, so a value spoiled by another writer costs reads of the database
    until the next fold, never a wrong answer."""
    if type(stored) is str:
        stored = stored.encode()
    if type(stored) is not bytes or not stored.endswith(_ROWS_END):
        return None
    # the first: a quote inside a JSON string is escaped, so the mark is a key of the value
    # (or of an object inside it, which the check of the fields refuses)
    at = stored.find(_ROWS_MARK)
    if at < 0:
        return None
    try:
        fields = orjson.loads(stored[:at] + b"}")
    except orjson.JSONDecodeError:
        return None
    if _ours(fields, problem, database) is None:
        return None
    rows = stored[at + len(_ROWS_MARK) : -len(_ROWS_END)]
    count = rows.count(b"[")
    if rows and not (
        rows[:1] == b"[" and rows[-1:] == b"]" and rows.count(b"]") == count and b'"' not in rows
    ):
        return None
    return _Held(fields, rows, count)


def _before(held: _Held, first: int) -> _Held | None:
    """`held` without its rows from the time `first` on (newer rows replace them: a
    re-fetched candle), looked at from the newest back; None when a row's time is not an
    integer."""
    rows, size = held.rows, held.size
    while rows:
        start = rows.rfind(b"[")
        try:
            ts = int(rows[start + 1 : rows.index(b",", start)])
        except ValueError:
            return None
        if ts < first:
            break
        rows, size = rows[: max(start - 1, 0)], size - 1
    return held._replace(rows=rows, size=size)


def _rows_of(rows: Candles) -> list[tuple[Any, ...]]:
    """Candles with indicators as a `recent` value's rows (COLUMNS' values, Python numbers;
    orjson writes NaN as null), gathered in C: this runs for every pair an incremental run
    extends."""
    assert rows.indicators is not None
    columns = (rows.ts, *_prices(rows), *map(rows.indicators.__getitem__, INDICATOR_NAMES))
    return list(zip(*(column.tolist() for column in columns), strict=True))


def _spliced(fields: dict[str, Any], held: bytes, new: list[tuple[Any, ...]]) -> bytes:
    """A `recent` value as JSON text: `fields` (see `_recent`), then rows `held` (their
    text, as stored) followed by `new` ones. The held rows are copied, not decoded and
    encoded again: a run's cost for them follows their bytes (~300 a row)."""
    added = orjson.dumps(new)[1:-1]
    joined = held + b"," + added if held else added
    return orjson.dumps(fields)[:-1] + _ROWS_MARK + joined + _ROWS_END


_prices = attrgetter(*PRICE_KEYS)
"""The price columns of Candles, in PRICE_KEYS order."""


def _young(stored_at: str, now: datetime) -> bool:
    """Whether a `show` value stored at `stored_at` (ISO 8601) is younger than half
    MARKET_TTL at `now`: one that is not is refreshed by a fold before it expires."""
    try:
        stamp = datetime.fromisoformat(stored_at)
    except ValueError:  # not written by this tool
        return False
    return stamp.tzinfo is not None and (now - stamp).total_seconds() < MARKET_TTL / 2


def _names(pair: tuple[str, Interval]) -> tuple[str, str]:
    return pair[0], _INTERVAL_NAMES[pair[1]]


_INTERVAL_NAMES = {interval: interval.value for interval in Interval}
"""Each interval's `.value` by a lookup: an Enum's `.value` costs a Python call."""


def _ours(value: Any, problem: Problem, database: str) -> dict[str, Any] | None:
    """`value` when it is of this version's shape and this database's: a writer's `usable`,
    saying nothing (a reader says it)."""
    if value is None or problem(value) is not None or value.get("database") != database:
        return None
    result: dict[str, Any] = value
    return result


def _extended_tails(
    cache: FallbackCache, appended: dict[tuple[str, Interval], Appended], bars: int
) -> dict[tuple[str, Interval], _Tail]:
    """The newest `bars` (+ 1) rows of the pairs that committed rows after all their stored
    ones, from their cached `show` and `recent` values (one round trip) extended by those
    rows, without a read.

    A value is extended only when it is this database's, of this version's shape, and was
    current before the commit (the trust `show` gives it: see `_ends_before`)."""
    if not appended:
        return {}
    keys = {pair: _read_keys(pair[0], pair[1].value)[:2] for pair in appended}
    found = cache.get_many([k for names in keys.values() for k in names])
    tails: dict[tuple[str, Interval], _Tail] = {}
    for pair, wrote in appended.items():
        value = _show_value_of(cache.database, found, pair, bars)
        if value is None or not _ends_before(int(value["newest"]), wrote):
            continue
        tail = _extend(value, wrote.rows, bars)
        if tail is not None:
            tails[pair] = tail
    return tails


def _show_value_of(
    database: str, found: dict[str, Any], pair: tuple[str, Interval], bars: int
) -> dict[str, Any] | None:
    """A writer's `_show_value`: the pair's `show` value (followed by its `recent` one) when
    both are this database's and of this version's shape, without a warning."""
    symbol, interval = _names(pair)
    show = _ours(found.get(show_key(symbol, interval)), show_problem(symbol, interval), database)
    if show is None:
        return None
    more = found.get(recent_key(symbol, interval))
    return combined(show, _ours(more, recent_problem(symbol, interval), database), bars)


def _ends_before(newest: int, appended: Appended) -> bool:
    """Whether a cached value ending at `newest` was current before the rows were written:
    it ends at the stored row before them, or at one of them (a re-fetched candle, stored
    before; a value ending anywhere else holds a row that is not stored, or misses one)."""
    if newest == appended.after:
        return True
    ts = appended.rows.ts
    at = int(ts.searchsorted(newest))
    return at < len(ts) and int(ts[at]) == newest


def _extend(value: dict[str, Any], rows: Candles, bars: int) -> _Tail | None:
    """A cached `show` value followed by newer rows (which replace its rows from their
    first on), as the tail of `bars` rows a read would give (one row more than kept unless
    complete); None when the value holds too few rows for that.

    The value's columns are cut as lists and only the rows kept become arrays (a Candles of
    all of them, then a mask, was a fold's largest cost after its reads)."""
    columns = value["columns"]
    cut = bisect_left(columns["ts"], int(rows.ts[0]))
    total = cut + len(rows)
    complete = bool(value["complete"]) and total <= bars
    if not complete and total < bars + 1:
        return None  # not the whole history, and not enough of it: read it instead
    keep = bars + 1
    first = max(0, cut - max(0, keep - len(rows)))
    new = rows.indicators
    assert new is not None
    # the float columns as one array (held, then the rows'): a few numpy calls, not a few
    # per column; null (None) becomes NaN
    held = np.array([columns[k][first:cut] for k in VALUE_COLUMNS], dtype=np.float64)
    after = np.array([*_prices(rows), *map(new.__getitem__, INDICATOR_NAMES)])
    floats = np.concatenate([held, after], axis=1)[:, -keep:]
    stamps = np.array(columns["ts"][first:cut], dtype=np.int64)
    extended = Candles(
        rows.symbol,
        rows.interval,
        rows.provider,
        np.concatenate([stamps, rows.ts])[-keep:],
        *floats[: len(PRICE_KEYS)],
    ).with_indicators(dict(zip(INDICATOR_NAMES, floats[len(PRICE_KEYS) :], strict=True)))
    return _Tail(extended, complete)


class _Tail(NamedTuple):
    """A derived pair's newest rows as read (one more than kept, when there are more)."""

    rows: Candles
    complete: bool  # the rows are the pair's whole history

    @property
    def kept(self) -> Candles:
        """The newest CACHE_BARS rows: what the `show` value holds."""
        return self.rows if self.complete else self.rows.take(slice(1, None))


def _tails(
    conn: Connection, near: dict[tuple[str, Interval], int], bars: int
) -> dict[tuple[str, Interval], _Tail]:
    """The newest `bars` + 1 rows of derived pairs (one query) and whether the `bars` kept
    are the whole history; pairs with nothing stored or rows never derived are left out."""
    from marketdata.reports import never_derived

    # one row more than is kept tells whether the rows kept are the whole history
    rows = _read_newest(conn, near, bars + 1, indicators=True)
    tails: dict[tuple[str, Interval], _Tail] = {}
    for pair, found in rows.items():
        tail = _Tail(found, len(found) <= bars)
        kept = tail.kept
        if len(kept) and not never_derived(kept, len(kept)):
            tails[pair] = tail
    return tails


def _tail_values(
    database: str,
    conn: Connection,
    stamps: dict[tuple[str, Interval], str],
    tails: dict[tuple[str, Interval], _Tail],
) -> dict[str, Any]:
    """The keys of derived pairs from their tails and the ROI anchors the tails do not
    reach (read for all of them in one query)."""
    from marketdata.analytics.roi import roi_from
    from marketdata.reports import ShowReport
    from marketdata.storage.candles import anchor_closes_many

    then: dict[tuple[str, Interval], dict[str, float | None]] = {}
    beyond: dict[tuple[str, Interval], dict[str, Anchor]] = {}
    for pair, tail in tails.items():
        then[pair], beyond[pair] = _anchors_within(tail, int(tail.rows.ts[-1]))
    for pair, closes in anchor_closes_many(conn, {k: v for k, v in beyond.items() if v}).items():
        then[pair] |= closes
    values: dict[str, Any] = {}
    for (symbol, interval), tail in tails.items():
        kept = tail.kept
        roi = roi_from(float(kept.close[-1]), then[(symbol, interval)])
        report = ShowReport(symbol, interval, kept, roi, computed=False)
        stored_at = stamps[(symbol, interval)]
        values |= pair_values(
            report, complete=tail.complete, stored_at=stored_at, database=database
        )
    return values


def _anchors_within(tail: _Tail, latest: int) -> tuple[dict[str, float | None], dict[str, Anchor]]:
    """The anchor closes (see `anchor_closes_many`) of the anchors of `latest` that the
    tail answers, and the anchors it does not reach. The tail is the pair's newest stored
    rows without a gap, so the last of them before a bound is the last of all when one of
    them is before it; with the whole history in hand every anchor is answered (None: no
    row before the bound)."""
    from marketdata.analytics.roi import anchors, positions

    at_of = positions(tail.rows.ts, latest)
    known: dict[str, float | None] = {}
    beyond: dict[str, Anchor] = {}
    for key, mark in anchors(latest).items():
        index: int | None
        if mark.bound is None:  # the first row of all
            index = 0 if tail.complete else None
        else:
            at = at_of[key]
            index = at - 1 if at or tail.complete else None
        if index is None:
            beyond[key] = mark
        else:
            known[key] = float(tail.rows.close[index]) if index >= 0 else None
    return known, beyond


def _latest_values(
    database: str,
    conn: Connection,
    stamps: dict[tuple[str, Interval], str],
    near: dict[tuple[str, Interval], int],
) -> tuple[dict[str, Any], list[str]]:
    """`latest` of pairs outside ANALYTICS_INTERVALS (one query), and their `show` and
    `recent` keys to drop; pairs with nothing stored are left alone."""
    values: dict[str, Any] = {}
    drop: list[str] = []
    newest_rows = _read_newest(conn, {k: near[k] for k in stamps}, 1, indicators=False)
    for (symbol, interval), newest in newest_rows.items():
        row: dict[str, Any] = {"ts": int(newest.ts[0])}
        row |= {k: float(getattr(newest, k)[0]) for k in PRICE_KEYS}
        stored_at = stamps[(symbol, interval)]
        values[latest_key(symbol, interval.value)] = latest_value(
            symbol, interval.value, row, stored_at, database, with_indicators=False
        )
        drop += [show_key(symbol, interval.value), recent_key(symbol, interval.value)]
    return values, drop
