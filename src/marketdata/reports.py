"""Read-side reports over stored candles: latest values, aggregates, comparisons, rebuilds."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, cast, get_args

import numpy as np

from marketdata.analytics.aggregates import (
    AggregateBars,
    Period,
    aggregate,
    period_before,
    period_starts,
)
from marketdata.analytics.comparisons import Comparison, compare
from marketdata.analytics.indicators import INDICATOR_NAMES, compute_indicators
from marketdata.analytics.roi import anchors, roi, roi_from
from marketdata.derive import analytics_intervals, bars_per_year, rebuild
from marketdata.domain import Candles, Interval, epoch_of, parse_symbol, parse_symbols
from marketdata.errors import InputError, NoDataError

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from marketdata.context import AppContext

DEFAULT_LAST = 20
DEFAULT_WINDOW = 30
PERIODS: tuple[str, ...] = get_args(Period)
CANDLE_KEYS = ("ts", "open", "high", "low", "close", "volume", *INDICATOR_NAMES)
"""The keys of one row of `ShowReport.records()`, in order."""


@dataclass(frozen=True)
class ShowReport:
    """The latest candles of a pair with every indicator, and the pair's ROI.

    Attributes:
        symbol: Canonical symbol.
        interval: Bar interval.
        candles: The latest candles, ascending; `indicators` is always set.
        roi: ROI per key of analytics.roi.ROI_KEYS, as of the latest stored close.
        computed: True when the indicators were computed from the stored closes now (the
            interval is not in ANALYTICS_INTERVALS, or its derived values were never stored).
        source: "database", or "cache" when the cache answered.
        stored_at: When the cached values were stored (ISO 8601), for a cached answer.
    """

    symbol: str
    interval: Interval
    candles: Candles
    roi: dict[str, float | None]
    computed: bool
    source: str = "database"
    stored_at: str | None = None

    def tail(self, last: int) -> ShowReport:
        """The same report keeping only the newest `last` candles."""
        return replace(self, candles=self.candles.take(slice(-last, None)))

    def records(self) -> list[dict[str, Any]]:
        """One dict per candle, keys as CANDLE_KEYS; ts in epoch seconds, NaN where undefined."""
        assert self.candles.indicators is not None
        columns: list[list[Any]] = [
            self.candles.ts.tolist(),
            *(getattr(self.candles, name).tolist() for name in CANDLE_KEYS[1:6]),
            *(self.candles.indicators[name].tolist() for name in INDICATOR_NAMES),
        ]
        return [dict(zip(CANDLE_KEYS, row, strict=True)) for row in zip(*columns, strict=True)]


@dataclass(frozen=True, slots=True)
class RebuiltPair:
    """What `rebuild_analytics` did to one stored pair."""

    symbol: str
    interval: str
    rows: int
    updated: int  # rows whose derived values differed (and were rewritten unless a dry run)
    locked: bool = False  # another process held the pair: left alone


def show(
    app: AppContext, symbol: str, interval: Interval = Interval.D1, last: int = DEFAULT_LAST
) -> ShowReport:
    """The latest `last` candles of a pair with their indicators, and its ROI.

    Answered from the cache when it holds the pair's current values (no database
    connection); otherwise from the database, and the cache is filled. What it reads there
    does not grow with the history: the newest rows, stored indicators where
    ANALYTICS_INTERVALS keeps them (otherwise computed from the `LOOKBACK` closes before those
    rows and the running peak), and one indexed lookup per ROI anchor. When the database is
    unreachable, values the cache still holds are shown with a warning.

    Raises:
        InputError: For a malformed symbol or `last` below 1.
        NoDataError: When nothing is stored for the pair.
    """
    from marketdata.cache import market
    from marketdata.errors import DatabaseUnavailableError

    symbol = parse_symbol(symbol)
    if last < 1:
        raise InputError(f"--last must be at least 1, not {last}")
    cached = market.read_show(app.cache, symbol, interval, last, app.settings.cache_bars)
    if cached.fresh is not None:
        return cached.fresh
    wanted = max(last, app.settings.cache_bars)
    try:
        with _reading(app, [symbol], interval) as conn:
            report = _show_from_database(app, conn, symbol, interval, wanted)
    except DatabaseUnavailableError as exc:
        if cached.stale is None:
            raise
        market.warn_stale(exc, cached.stale.stored_at)
        return cached.stale
    complete = len(report.candles) < wanted  # fewer rows than asked for: the whole history
    market.store_show(app.cache, report, complete=complete, now=app.clock())
    return report.tail(last)


def _show_from_database(
    app: AppContext, conn: Connection, symbol: str, interval: Interval, last: int
) -> ShowReport:
    """`show` from the database: the newest `last` rows and one lookup per ROI anchor."""
    from marketdata.derive import with_derived
    from marketdata.storage.candles import anchor_closes, read_latest

    now = epoch_of(app.clock())
    latest = read_latest(conn, symbol, interval, last, now=now, with_indicators=True)
    if len(latest) == 0:
        raise nothing_stored([symbol], interval, conn)
    computed = interval not in analytics_intervals(app.settings) or never_derived(
        latest, len(latest)
    )
    if computed:
        latest = with_derived(conn, latest.with_indicators(None))
    # ROI as of the latest candle shown, should a write land between the reads
    newest = int(latest.ts[-1])
    then = anchor_closes(conn, symbol, interval, anchors(newest))
    return ShowReport(symbol, interval, latest, roi_from(float(latest.close[-1]), then), computed)


def show_report(
    symbol: str, interval: Interval, history: Candles, stored: Candles | None, last: int
) -> ShowReport:
    """The report of `show` from a pair's whole history and its newest `last` stored rows
    with indicators (None for an interval outside ANALYTICS_INTERVALS)."""
    computed = stored is None or never_derived(stored, len(history))
    latest = stored
    if latest is None or computed:
        derived = compute_indicators(
            history.close, periods_per_year=bars_per_year(symbol, interval)
        )
        latest = history.with_indicators(derived.columns()).take(slice(-last, None))
    # ROI as of the latest candle shown, should a write have landed between the two reads
    # (views up to it: the history is in ts order)
    newest = latest.ts[-1]
    if history.ts[-1] == newest:  # as from one read: no search
        then = roi(history.ts, history.close)
    else:
        end = int(history.ts.searchsorted(newest, side="right"))
        then = roi(history.ts[:end], history.close[:end])
    return ShowReport(symbol, interval, latest, then, computed)


def aggregates(app: AppContext, symbol: str, period: str, last: int | None = None) -> AggregateBars:
    """The stored daily candles of a symbol rolled up into ISO weeks or calendar months.

    Args:
        app: The application context.
        symbol: The symbol (validated).
        period: "week" or "month".
        last: Keep only the latest N periods. Only their daily candles are read, and the
            one candle before them, whose close the first period's return needs.

    Raises:
        InputError: For a malformed symbol, an unknown period or `last` below 1.
        NoDataError: When no daily candles are stored for the symbol.
    """
    symbol = parse_symbol(symbol)
    if period not in PERIODS:
        raise InputError(f"unknown period {period!r}", hint=f"choose {' or '.join(PERIODS)}")
    if last is not None and last < 1:
        raise InputError(f"--last must be at least 1, not {last}")
    chosen = cast(Period, period)
    with _reading(app, [symbol], Interval.D1) as conn:
        if last is None:
            daily, preceded = _history(conn, symbol, Interval.D1), False
        else:
            now = epoch_of(app.clock())
            daily, preceded = _latest_periods(conn, symbol, chosen, last, now)
    bars = aggregate(daily.ts, daily.open, daily.high, daily.low, daily.close, daily.volume, chosen)
    # the period of the candle before them only gave the first shown period its return
    keep = slice(1 if preceded else 0, None)
    if last is not None and len(bars) - keep.start > last:
        keep = slice(-last, None)
    if keep == slice(0, None):
        return bars
    return AggregateBars(*(getattr(bars, f.name)[keep] for f in fields(AggregateBars)))


# Earlier than any market's history: a read reaching further back reads it all (and so
# does one of more periods than 1,900 years of weeks).
_EARLIEST = -2_208_988_800  # 1900-01-01T00:00:00Z
_MOST_PERIODS = 100_000


def _latest_periods(
    conn: Connection, symbol: str, period: Period, last: int, now: int
) -> tuple[Candles, bool]:
    """The daily candles of the newest `last` periods that hold any, preceded by the last
    candle before them if there is one (then True): its close is the previous period's,
    which the first period's return needs.

    Reads from the start of the period `last - 1` before the newest candle's, and further
    back (four times as far each round) only while empty periods leave fewer than `last`;
    so those rows and one more, not the history.
    """
    from marketdata.storage.candles import candle_before, read_candles, read_latest

    latest = read_latest(conn, symbol, Interval.D1, 1, now=now)
    if len(latest) == 0:
        raise nothing_stored([symbol], Interval.D1, conn)
    newest = int(latest.ts[-1])
    span = last
    while True:
        floor = _EARLIEST if span > _MOST_PERIODS else period_before(newest, period, span - 1)
        if floor <= _EARLIEST:
            return read_candles(conn, symbol, Interval.D1), False
        daily = read_candles(conn, symbol, Interval.D1, floor)
        before = candle_before(conn, symbol, Interval.D1, floor)
        held = len(np.unique(period_starts(daily.ts, period)))
        if held >= last or len(before) == 0:
            return before.concat(daily), len(before) > 0
        span *= 4


def aggregate_records(bars: AggregateBars) -> list[dict[str, Any]]:
    """One dict per period ("period_start" in epoch seconds ... "bars", "return")."""
    columns = {name: values.tolist() for name, values in bars.columns().items()}
    return [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]


@dataclass(frozen=True, slots=True)
class ComparisonReport:
    """A comparison and where its closes came from ("cache" or "database")."""

    comparison: Comparison
    source: str = "database"
    stored_at: str | None = None


def comparison(
    app: AppContext,
    symbols: Sequence[str],
    window: int = DEFAULT_WINDOW,
    benchmark: str | None = None,
) -> Comparison:
    """Compare symbols over their last `window` common daily log returns (stored 1d candles).

    Raises:
        InputError: Fewer than two symbols, a window below 2, or a benchmark not compared.
        NoDataError: A symbol has no daily candles, or the symbols share too few days.
    """
    return comparison_report(app, symbols, window, benchmark).comparison


def comparison_report(
    app: AppContext,
    symbols: Sequence[str],
    window: int = DEFAULT_WINDOW,
    benchmark: str | None = None,
) -> ComparisonReport:
    """`comparison`, answered from the cache when it holds enough current daily closes of
    every symbol, else from the database (cached closes, with a warning, if it is down).

    Raises:
        InputError: Fewer than two symbols, a window below 2, or a benchmark not compared.
        NoDataError: A symbol has no daily candles, or the symbols share too few days.
    """
    from marketdata.cache import market
    from marketdata.errors import DatabaseUnavailableError

    chosen = parse_symbols(symbols)
    if len(chosen) < 2:
        raise InputError(
            f"compare needs at least two symbols, got {len(chosen)}",
            hint="e.g. `marketdata compare BTC-USD ETH-USD`",
        )
    if window < 2:
        raise InputError(f"--window must be at least 2 returns, not {window}")
    if benchmark is not None:
        benchmark = parse_symbol(benchmark)
        if benchmark not in chosen:
            raise InputError(
                f"benchmark {benchmark} is not among the compared symbols {', '.join(chosen)}",
                hint="add it to the symbols",
            )
    cached = market.read_closes(app.cache, chosen, window, app.settings.cache_bars)
    if cached.fresh is not None:
        return ComparisonReport(
            _compare(cached.fresh, chosen, window, benchmark), "cache", cached.stored_at
        )
    try:
        with _reading(app, chosen, Interval.D1) as conn:
            daily = _latest_common(conn, chosen, window + 1, epoch_of(app.clock()))
    except DatabaseUnavailableError as exc:
        if cached.stale is None:
            raise
        market.warn_stale(exc, cached.stored_at)
        return ComparisonReport(
            _compare(cached.stale, chosen, window, benchmark), "cache", cached.stored_at
        )
    missing = [symbol for symbol, candles in daily.items() if len(candles) == 0]
    if missing:
        raise nothing_stored(missing, Interval.D1)
    series = {symbol: (c.ts, c.close) for symbol, c in daily.items()}
    return ComparisonReport(_compare(series, chosen, window, benchmark))


def _compare(
    series: dict[str, tuple[Any, Any]], chosen: list[str], window: int, benchmark: str | None
) -> Comparison:
    try:
        return compare(
            series,
            window=window,
            periods_per_year={symbol: bars_per_year(symbol, Interval.D1) for symbol in chosen},
            benchmark=benchmark,
        )
    except ValueError as exc:
        raise NoDataError(str(exc), hint="ingest more daily history for them") from None


def rebuild_analytics(
    app: AppContext, symbols: Sequence[str] | None = None, *, dry_run: bool = False
) -> list[RebuiltPair]:
    """Recompute the derived data of every stored pair in ANALYTICS_INTERVALS.

    Each pair is rebuilt in its own transaction under its pair lock (a pair being ingested
    is reported locked and left alone). A dry run computes the same counts inside the
    transaction and rolls it back, so nothing is written.

    Raises:
        InputError: For a malformed symbol.
        NoDataError: When symbols are given and nothing at all is stored for them.
    """
    from marketdata.storage.candles import stored_pairs
    from marketdata.storage.engine import connect
    from marketdata.storage.locks import pair_lock

    chosen = parse_symbols(symbols or [])
    if not app.database_exists():
        if chosen:
            raise nothing_stored(chosen, None)
        return []
    wanted = analytics_intervals(app.settings)
    done: list[RebuiltPair] = []
    with connect(app.engine(), app.target) as conn:
        pairs = stored_pairs(conn, chosen or None)
        conn.rollback()
        if chosen and not pairs:
            raise nothing_stored(chosen, None)
        for symbol, name in pairs:
            interval = Interval.parse(name)
            if interval not in wanted:
                continue
            with pair_lock(conn, symbol, name, app.lock_dir()) as taken:
                if not taken:
                    done.append(RebuiltPair(symbol, name, 0, 0, locked=True))
                    continue
                with conn.begin() as transaction:
                    rows, updated = rebuild(conn, symbol, interval)
                    if dry_run:
                        transaction.rollback()
                if updated and not dry_run:  # committed: the cached indicators are stale
                    from marketdata.cache.market import after_commit

                    after_commit(app.cache, conn, app.settings, symbol, interval, app.clock())
                done.append(RebuiltPair(symbol, name, rows, updated))
    return done


# ----------------------------------------------------------------------------------- helpers


@contextmanager
def _reading(app: AppContext, symbols: Sequence[str], interval: Interval) -> Iterator[Connection]:
    """A connection to read from; NoDataError when there is no database at all."""
    from marketdata.storage.engine import connect

    # a read must not create the embedded database file as a side effect
    if not app.database_exists():
        raise nothing_stored(symbols, interval)
    with connect(app.engine(), app.target) as conn:
        yield conn


def _history(
    conn: Connection, symbol: str, interval: Interval, *, required: bool = True
) -> Candles:
    """Every stored candle of a pair (no derived columns); NoDataError if none and required."""
    from marketdata.storage.candles import read_candles

    candles = read_candles(conn, symbol, interval)
    if required and len(candles) == 0:
        raise nothing_stored([symbol], interval, conn)
    return candles


def _latest_common(
    conn: Connection, symbols: Sequence[str], wanted: int, now: int
) -> dict[str, Candles]:
    """The newest daily candles of each symbol, enough for `wanted` common timestamps.

    Reads the newest `wanted` rows of each (an index walk from the top, in the newest
    partitions first), and reads further back, four times as far each round, only while the
    symbols share fewer timestamps than that and reading further could add some.
    """
    from functools import reduce

    from marketdata.storage.candles import read_latest

    size = wanted
    while True:
        daily = {s: read_latest(conn, s, Interval.D1, size, now=now) for s in symbols}
        common = reduce(np.intersect1d, (c.ts for c in daily.values()))
        if len(common) >= wanted or any(len(c) == 0 for c in daily.values()):
            return daily
        # a symbol with no older rows caps what is common: stop once the others reach back
        # as far as it does
        short = [int(c.ts[0]) for c in daily.values() if len(c) < size]
        if short and all(int(c.ts[0]) <= max(short) for c in daily.values()):
            return daily
        size *= 4


def never_derived(latest: Candles, stored: int) -> bool:
    """Whether stored derived values are missing (the pair predates ANALYTICS_INTERVALS).

    The newest row's log return is defined whenever the pair has two closes, so NaN there
    means the row was never derived (or the pair has one candle: computing it then gives
    the same NaN).
    """
    assert latest.indicators is not None
    return stored > 1 and math.isnan(latest.indicators["log_return"][-1])


def nothing_stored(
    symbols: Sequence[str], interval: Interval | None, conn: Connection | None = None
) -> NoDataError:
    """'nothing stored for X 1d', with the ingest command that fills it (one line)."""
    names = ", ".join(symbols)
    flag = f" --interval {interval}" if interval is not None else ""
    what = f"{names} {interval}" if interval is not None else names
    others = ""
    if conn is not None and interval is not None and len(symbols) == 1:
        from marketdata.storage.candles import stored_pairs

        stored = [iv for _, iv in stored_pairs(conn, list(symbols)) if iv != interval.value]
        if stored:
            others = f"{names} has {', '.join(stored)} stored; or "
    return NoDataError(
        f"nothing stored for {what}",
        hint=f"{others}run `marketdata ingest --symbols {','.join(symbols)}{flag}` first",
    )
