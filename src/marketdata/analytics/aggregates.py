"""Calendar aggregates: daily candles rolled up into ISO weeks and calendar months."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray: TypeAlias = NDArray[np.float64]
IntArray: TypeAlias = NDArray[np.int64]

Period: TypeAlias = Literal["week", "month"]

_SECONDS_PER_DAY = 86_400
# 1970-01-01 (epoch day 0) was a Thursday, three days after the Monday that starts its week.
_EPOCH_WEEKDAY = 3


@dataclass(frozen=True, slots=True)
class AggregateBars:
    """One bar per period that has at least one candle, in time order.

    Attributes:
        period_start: Start of the period, epoch seconds UTC (Monday 00:00 or the 1st 00:00).
        open: Open of the period's first candle.
        high: Highest high.
        low: Lowest low.
        close: Close of the period's last candle.
        volume: Total volume.
        vwap: Sum of typical price x volume over total volume, with typical price
            (high + low + close) / 3; NaN when the total volume is 0.
        bars: How many candles the period holds.
        return_: close / the previous period's close - 1; NaN for the first period.
    """

    period_start: IntArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray
    vwap: FloatArray
    bars: IntArray
    return_: FloatArray

    def __len__(self) -> int:
        return len(self.period_start)

    def columns(self) -> dict[str, FloatArray | IntArray]:
        """The columns by public name ("period_start", ..., "bars", "return")."""
        return {
            "period_start": self.period_start,
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "volume": self.volume,
            "vwap": self.vwap,
            "bars": self.bars,
            "return": self.return_,
        }


def aggregate(
    ts: ArrayLike,
    open: ArrayLike,
    high: ArrayLike,
    low: ArrayLike,
    close: ArrayLike,
    volume: ArrayLike,
    period: Period,
) -> AggregateBars:
    """Roll daily candles up into ISO weeks (from Monday 00:00 UTC) or calendar months.

    Missing days only mean fewer bars in their period; a period with no candle at all has
    no row. NaN is not skipped: a NaN high, low or volume makes its period's value NaN.

    Args:
        ts: Candle start times, epoch seconds UTC (int64), strictly ascending.
        open: Opens, aligned with ts (float64).
        high: Highs.
        low: Lows.
        close: Closes.
        volume: Volumes.
        period: "week" or "month".

    Returns:
        The aggregated bars.

    Raises:
        ValueError: If period is unknown or the columns differ in length.
    """
    stamps = np.asarray(ts, dtype=np.int64)
    prices = [np.asarray(column, dtype=np.float64) for column in (open, high, low, close, volume)]
    if any(len(column) != len(stamps) for column in prices):
        raise ValueError("ts, open, high, low, close and volume must have the same length")
    opens, highs, lows, closes, volumes = prices
    keys = period_starts(stamps, period)
    starts = _group_starts(keys)
    if not len(starts):
        return _empty()
    ends = np.append(starts[1:], len(stamps)) - 1
    volume_sum = np.add.reduceat(volumes, starts)
    typical = (highs + lows + closes) / 3.0
    return AggregateBars(
        period_start=keys[starts],
        open=opens[starts],
        high=np.maximum.reduceat(highs, starts),
        low=np.minimum.reduceat(lows, starts),
        close=closes[ends],
        volume=volume_sum,
        vwap=_ratio_or_nan(np.add.reduceat(typical * volumes, starts), volume_sum),
        bars=(ends - starts + 1).astype(np.int64),
        return_=_period_returns(closes[ends]),
    )


def period_starts(ts: ArrayLike, period: Period) -> IntArray:
    """The start (epoch seconds UTC) of the week or month holding each timestamp.

    Args:
        ts: Epoch seconds UTC.
        period: "week" (ISO: Monday 00:00) or "month" (the 1st 00:00).

    Returns:
        One period start per timestamp.

    Raises:
        ValueError: If period is unknown.
    """
    stamps = np.asarray(ts, dtype=np.int64)
    if period == "week":
        # numpy's "W" unit counts weeks from the epoch, a Thursday, so work in days instead.
        days = stamps // _SECONDS_PER_DAY
        return (days - (days + _EPOCH_WEEKDAY) % 7) * _SECONDS_PER_DAY
    if period == "month":
        months = stamps.astype("datetime64[s]").astype("datetime64[M]")
        return months.astype("datetime64[s]").astype(np.int64)
    raise ValueError(f"unknown period {period!r}: choose 'week' or 'month'")


def period_before(epoch: int, period: Period, count: int) -> int:
    """The start (epoch seconds UTC) of the week or month `count` periods before the one
    holding `epoch` (0: that period's own start).

    Raises:
        ValueError: If period is unknown.
    """
    if period == "week":
        start = int(period_starts(np.array([epoch], dtype=np.int64), "week")[0])
        return start - count * 7 * _SECONDS_PER_DAY
    if period == "month":
        month = np.datetime64(epoch, "s").astype("datetime64[M]") - np.timedelta64(count, "M")
        return int(month.astype("datetime64[s]").astype(np.int64))
    raise ValueError(f"unknown period {period!r}: choose 'week' or 'month'")


def _group_starts(keys: IntArray) -> NDArray[np.intp]:
    """Index of the first row of each run of equal keys (keys are sorted)."""
    if not len(keys):
        return np.empty(0, dtype=np.intp)
    return np.flatnonzero(np.diff(keys, prepend=keys[0] - 1))


def _ratio_or_nan(numerator: FloatArray, denominator: FloatArray) -> FloatArray:
    """numerator / denominator, NaN where the denominator is 0."""
    out = np.full_like(numerator, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _period_returns(close: FloatArray) -> FloatArray:
    """close / previous close - 1; NaN for the first."""
    out = np.full_like(close, np.nan)
    out[1:] = _ratio_or_nan(close[1:], close[:-1]) - 1.0
    return out


def _empty() -> AggregateBars:
    """No periods: every column empty."""
    floats = np.empty(0, dtype=np.float64)
    ints = np.empty(0, dtype=np.int64)
    return AggregateBars(ints, floats, floats, floats, floats, floats, floats, ints, floats)
