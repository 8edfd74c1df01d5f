"""Gaps in stored history: trading bars missing between stored ones, by the market's calendar.

A crypto pair trades every bar; an equity only in its exchange's sessions (no nights,
weekends or holidays, shorter days before some holidays); FX on weekdays (calendars.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from marketdata.calendars import Calendar, calendar, default_calendar
from marketdata.domain import Interval, Window

if TYPE_CHECKING:
    from numpy.typing import NDArray
    from sqlalchemy import Connection


@dataclass(frozen=True)
class Gap:
    """A run of missing trading bars: the first one's start, the last one's end, how many."""

    start: int
    end: int
    bars: int


def gaps_in(ts: NDArray[np.int64], interval: Interval, market: Calendar) -> list[Gap]:
    """The missing trading bars between stored timestamps (ascending epoch seconds, on the
    interval's grid), one Gap per hole between two stored bars that misses any."""
    if ts.shape[0] < 2:
        return []
    holes = np.flatnonzero(np.diff(ts) > interval.seconds)
    return gaps_between(ts[holes], ts[holes + 1], interval, market)


def gaps_between(
    before: NDArray[np.int64], after: NDArray[np.int64], interval: Interval, market: Calendar
) -> list[Gap]:
    """The missing trading bars of each hole between two stored bars (`before[i]` and
    `after[i]`, ascending, more than one bar apart), one Gap per hole that misses any."""
    if before.shape[0] == 0:
        return []
    step = interval.seconds
    # every bar inside every hole at once, then the calendar says which of them trade
    starts = before + step
    counts = (after - starts + step - 1) // step
    owner = np.repeat(np.arange(before.shape[0]), counts)
    offset = np.arange(owner.shape[0]) - np.repeat(np.cumsum(counts) - counts, counts)
    bars = starts[owner] + offset * step
    trading = market.trading(bars, interval)
    bars, owner = bars[trading], owner[trading]
    if bars.shape[0] == 0:
        return []
    # bars are ascending, so each hole's missing bars are one contiguous run
    first = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    last = np.r_[first[1:], bars.shape[0]] - 1
    return [
        Gap(int(bars[a]), int(bars[b]) + step, int(b - a + 1))
        for a, b in zip(first.tolist(), last.tolist(), strict=True)
    ]


def find_gaps(conn: Connection, symbol: str, interval: Interval) -> list[Window]:
    """Windows covering each gap in the stored history of a pair."""
    return [Window(g.start, g.end) for g in stored_gaps(conn, symbol, interval)]


def stored_gaps(conn: Connection, symbol: str, interval: Interval) -> list[Gap]:
    """The gaps of one pair as stored, by the calendar its market follows.

    Only the holes travel from the database (see storage.candles.stored_holes), not every
    stored timestamp.
    """
    from marketdata.storage.candles import stored_holes

    before, after = stored_holes(conn, symbol, interval)
    return gaps_between(before, after, interval, market_calendar(conn, symbol))


def market_calendar(conn: Connection, symbol: str) -> Calendar:
    """The calendar of a symbol: its market's (stored calendar or asset class), else the
    one its symbol suggests."""
    from marketdata.storage.markets import get_market

    market = get_market(conn, symbol)
    return calendar(market.trading_calendar if market else default_calendar(symbol))
