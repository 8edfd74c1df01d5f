"""Gaps in stored history: missing bars, 24/7 for crypto and weekdays for equities."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from marketdata.domain import Interval, Window, is_crypto

if TYPE_CHECKING:
    from numpy.typing import NDArray
    from sqlalchemy import Connection


@dataclass(frozen=True)
class Gap:
    """A run of missing bars [start, end) and how many bars it holds."""

    start: int
    end: int
    bars: int


def gaps_in(ts: NDArray[np.int64], interval: Interval, *, every_day: bool) -> list[Gap]:
    """The missing ranges between stored timestamps (ascending epoch seconds).

    For markets that do not trade every day, a gap made only of Saturday and Sunday bars is
    no gap; public holidays are not known and do show.
    """
    if ts.shape[0] < 2:
        return []
    step = interval.seconds
    holes = np.flatnonzero(np.diff(ts) > step)
    gaps = []
    for i in holes:
        start, end = int(ts[i]) + step, int(ts[i + 1])
        missing = np.arange(start, end, step, dtype=np.int64)
        if not every_day:
            weekday = ((missing // 86_400) + 3) % 7  # 1970-01-01 was a Thursday (3)
            missing = missing[weekday < 5]
        if missing.shape[0]:
            gaps.append(Gap(start, end, int(missing.shape[0])))
    return gaps


def find_gaps(conn: Connection, symbol: str, interval: Interval) -> list[Window]:
    """Windows covering each gap in the stored history of a pair."""
    return [Window(g.start, g.end) for g in stored_gaps(conn, symbol, interval)]


def stored_gaps(conn: Connection, symbol: str, interval: Interval) -> list[Gap]:
    """The gaps of one pair as stored."""
    from marketdata.storage.candles import stored_timestamps

    return gaps_in(stored_timestamps(conn, symbol, interval), interval, every_day=is_crypto(symbol))
