"""Per-candle indicators: returns, rolling volatility, drawdown and moving averages."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray: TypeAlias = NDArray[np.float64]

VOLATILITY_WINDOWS = (7, 30, 90)
SMA_WINDOWS = (20, 50, 200)

LOOKBACK = 201
"""How many closes before the new rows `compute_tail` needs: the longest window plus one."""

INDICATOR_NAMES = (
    "return",
    "log_return",
    "volatility_7",
    "volatility_30",
    "volatility_90",
    "drawdown",
    "sma_20",
    "sma_50",
    "sma_200",
)

_SECONDS_PER_DAY = 86_400
_TRADING_DAYS = 252
_CALENDAR_DAYS = 365

# Running sums restart every _BLOCK values (see _block_cumsum); a window may span at most two
# blocks, so this must be at least the longest window.
_BLOCK = 256

# compute_tail computes up to this many new rows on its own (see _short_tail). Its running sums
# then span at most LOOKBACK + _SHORT_TAIL values, about one _BLOCK, so it rounds no worse than
# the full path; it is faster far beyond this, but its error grows with the span.
_SHORT_TAIL = 64

# The windows of each row of _short_tail's running sums: log returns, their squares, closes.
_TAIL_WINDOWS = np.array([VOLATILITY_WINDOWS, VOLATILITY_WINDOWS, SMA_WINDOWS])[:, :, None]
_TAIL_ROWS = np.arange(len(_TAIL_WINDOWS))[:, None, None]
_VOLATILITY_WINDOWS = np.array(VOLATILITY_WINDOWS, dtype=np.float64)[:, None]
_SMA_WINDOWS = np.array(SMA_WINDOWS, dtype=np.float64)[:, None]

# A moving average's window sum comes from running sums of a few hundred closes less a centre:
# closes this far from the centre (within a factor 2**10 of float64's largest) could make them
# overflow. Such values are summed scaled down by _HUGE_SCALE (a power of two, so exactly) and
# the averages scaled back.
_HUGE = float(np.finfo(np.float64).max) / 2**10
_HUGE_SCALE = 2.0**-11


@dataclass(frozen=True, slots=True)
class Indicators:
    """Indicator columns, one value per close; NaN where a value is undefined."""

    return_: FloatArray
    log_return: FloatArray
    volatility_7: FloatArray
    volatility_30: FloatArray
    volatility_90: FloatArray
    drawdown: FloatArray
    sma_20: FloatArray
    sma_50: FloatArray
    sma_200: FloatArray

    def __len__(self) -> int:
        return len(self.return_)

    def columns(self) -> dict[str, FloatArray]:
        """The columns by public name ("return", "log_return", ...), in INDICATOR_NAMES order."""
        return {
            "return": self.return_,
            "log_return": self.log_return,
            "volatility_7": self.volatility_7,
            "volatility_30": self.volatility_30,
            "volatility_90": self.volatility_90,
            "drawdown": self.drawdown,
            "sma_20": self.sma_20,
            "sma_50": self.sma_50,
            "sma_200": self.sma_200,
        }


@dataclass(frozen=True, slots=True)
class IndicatorState:
    """What incremental computation needs to remember about the closes already seen.

    Attributes:
        previous: The last `LOOKBACK` closes seen (all of them if fewer), oldest first.
        peak: The highest close seen so far (the drawdown peak); NaN before any close.
    """

    previous: FloatArray
    peak: float

    @classmethod
    def empty(cls) -> IndicatorState:
        """The state before the first close of a series."""
        return cls(np.empty(0, dtype=np.float64), math.nan)

    @classmethod
    def after(cls, close: ArrayLike) -> IndicatorState:
        """The state after a whole series, from its first close to its latest.

        Args:
            close: Every close of the series, in time order.

        Returns:
            The state to pass with the closes that follow.
        """
        return cls.empty().advance(close)

    def advance(self, new_close: ArrayLike) -> IndicatorState:
        """The state once `new_close` (the closes that follow this state) have been seen.

        Args:
            new_close: The closes that follow this state, in time order.

        Returns:
            A new state; this one is unchanged.
        """
        new = np.asarray(new_close, dtype=np.float64)
        previous = np.concatenate([self.previous, new])[-LOOKBACK:]
        return IndicatorState(previous, _running_peak(new, self.peak))


def periods_per_year(interval_seconds: int, trades_every_day: bool) -> float:
    """How many bars of this length make a year, for annualising volatility.

    Args:
        interval_seconds: Bar length in seconds.
        trades_every_day: True for markets open every day (crypto: 365 days a year);
            False for equity calendars (252 trading days a year).

    Returns:
        Days per year times bars per 24-hour day.

    Raises:
        ValueError: If interval_seconds is not positive.
    """
    if interval_seconds <= 0:
        raise ValueError(f"interval_seconds must be positive, got {interval_seconds}")
    days = _CALENDAR_DAYS if trades_every_day else _TRADING_DAYS
    return days * _SECONDS_PER_DAY / interval_seconds


def compute_indicators(
    close: ArrayLike,
    *,
    periods_per_year: float,
    state: IndicatorState | None = None,
) -> Indicators:
    """Every indicator for a series of closes.

    Args:
        close: Closes in time order (as float64). Without `state` this is the whole
            series; with `state` it is only the closes that follow the state.
        periods_per_year: Bars per year, used to annualise volatility (see
            `periods_per_year()`).
        state: What was seen before `close`, for incremental updates (see
            `IndicatorState`); None means `close` starts the series.

    Returns:
        One value per element of `close`; NaN where undefined. A window that contains a
        missing (NaN), zero or negative close is undefined too.

    Raises:
        ValueError: If periods_per_year is not a positive number.
    """
    if state is None:
        state = IndicatorState.empty()
    return compute_tail(
        state.previous, close, periods_per_year=periods_per_year, prior_peak=state.peak
    )


def compute_tail(
    previous: ArrayLike,
    new_close: ArrayLike,
    *,
    periods_per_year: float,
    prior_peak: float | None,
) -> Indicators:
    """Indicators for newly added closes only, equal to what a full recompute gives them.

    Args:
        previous: The closes immediately before `new_close`, oldest first: at least the
            last `LOOKBACK` of them, or all of them if the series has fewer. Extra older
            closes are ignored.
        new_close: The new closes, in time order.
        periods_per_year: Bars per year, used to annualise volatility.
        prior_peak: The highest close of the whole series before `new_close` (not just of
            `previous`), which drawdown measures from; None or NaN when there is none.

    Returns:
        Indicators for the rows of `new_close` only.

    Raises:
        ValueError: If periods_per_year is not a positive number.
    """
    if not (math.isfinite(periods_per_year) and periods_per_year > 0):
        raise ValueError(f"periods_per_year must be a positive number, got {periods_per_year}")
    before = np.asarray(previous, dtype=np.float64)[-LOOKBACK:]
    new = np.asarray(new_close, dtype=np.float64)
    close = np.concatenate([before, new]) if len(before) else new
    peak = math.nan if prior_peak is None else prior_peak
    # The usual update is a few new candles after a full history of clean closes: that case
    # needs none of _compute's handling of gaps and short series.
    if len(before) == LOOKBACK and 0 < len(new) <= _SHORT_TAIL and _clean(close):
        return _short_tail(close, len(new), periods_per_year, peak)
    return _compute(close, len(before), periods_per_year, peak)


def _compute(close: FloatArray, skip: int, periods_per_year: float, peak: float) -> Indicators:
    """Indicators for close[skip:]; close[:skip] only fills the windows of the first rows."""
    clean = _clean(close)
    return_, log_return = _returns(close)
    vol_7, vol_30, vol_90 = _volatilities(log_return, periods_per_year)
    sma_20, sma_50, sma_200 = _moving_averages(close, clean)
    drawdown = _drawdown(close[skip:], peak)
    if not clean:
        for column in (return_, log_return, drawdown):
            column[np.isinf(column)] = np.nan
    return Indicators(
        return_=return_[skip:],
        log_return=log_return[skip:],
        volatility_7=vol_7[skip:],
        volatility_30=vol_30[skip:],
        volatility_90=vol_90[skip:],
        drawdown=drawdown,
        sma_20=sma_20[skip:],
        sma_50=sma_50[skip:],
        sma_200=sma_200[skip:],
    )


def _short_tail(close: FloatArray, m: int, periods_per_year: float, peak: float) -> Indicators:
    """Indicators for the last m of LOOKBACK + m clean closes, computed at those rows only.

    The same formulas as _compute, but every window sum of the m rows comes from one gather
    over one set of running sums, instead of a pass over the whole input per window whose
    results would all be thrown away but the last m.
    """
    n = len(close)
    with np.errstate(divide="ignore", over="ignore"):
        ratio = close[1:] / close[:-1]
        log_return = np.log(ratio)
        if not np.isfinite(log_return).all():  # a ratio beyond float64: see _volatilities
            return _compute(close, n - m, periods_per_year, peak)
        # Rows: log returns, their squares, closes less a centre. Column k + 1 holds close k's
        # value (0.0 for the log return the first close lacks), after a 0.0 to start the sums.
        values = np.zeros((len(_TAIL_WINDOWS), n + 1))
        values[0, 2:] = log_return
        np.multiply(log_return, log_return, out=values[1, 2:])
        # Centred on a close as in _compute, but on the latest: then any window of flat prices
        # up to it sums to exactly zero, and its average is exactly that price.
        centre = float(close[-1])
        np.subtract(close, centre, out=values[2, 1:])
        # clean closes lie no further from the centre (one of them) than the largest does
        scale = _sum_scale(float(close.max()))
        if scale != 1.0:
            values[2] *= scale
        running = np.cumsum(values, axis=1)
        # ends: the running-sum index just past each new row; sums[row, window, i] is the sum
        # of the window's values ending at new row i. A window of zero returns adds nothing
        # to its running sum, so flat prices give exactly zero s1 and s2, and zero volatility.
        ends = np.arange(n - m + 1, n + 1)
        sums = running[:, None, ends] - running[_TAIL_ROWS, ends - _TAIL_WINDOWS]
        s1, s2 = sums[0], sums[1]
        w = _VOLATILITY_WINDOWS
        volatility = np.sqrt(np.maximum((s2 - s1 * s1 / w) / (w - 1), 0.0) * periods_per_year)
        average = sums[2] / (_SMA_WINDOWS * scale) + centre
        return_ = ratio[-m:] - 1.0
    return Indicators(
        return_=return_,
        log_return=log_return[-m:],
        volatility_7=volatility[0],
        volatility_30=volatility[1],
        volatility_90=volatility[2],
        drawdown=_drawdown(close[-m:], peak),
        sma_20=average[0],
        sma_50=average[1],
        sma_200=average[2],
    )


def _clean(close: FloatArray) -> bool:
    """Whether every close is a positive finite number (True for no closes)."""
    # min() is NaN if any close is, and NaN > 0 is False, so this rules out missing closes.
    return not len(close) or bool(close.min() > 0 and close.max() < math.inf)


def _returns(close: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Simple and log returns against the previous close; NaN on the first."""
    simple = np.empty_like(close)
    log = np.empty_like(close)
    simple[:1] = log[:1] = np.nan
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = close[1:] / close[:-1]
        np.subtract(ratio, 1.0, out=simple[1:])
        np.log(ratio, out=log[1:])
    return simple, log


def _volatilities(log_return: FloatArray, periods_per_year: float) -> list[FloatArray]:
    """Annualised sample standard deviation of the last w log returns, per volatility window."""
    values = log_return[1:]  # the first log return is always undefined
    # Clean closes can still give an infinite log return: a ratio beyond float64 (1e-200 after
    # 1e200). Its windows are undefined, like those of a missing close.
    finite = np.isfinite(values)
    bad = None if finite.all() else ~finite
    if bad is not None:
        values = np.where(bad, 0.0, values)
    sums = _block_cumsum(values)
    squares = _block_cumsum(values * values)
    result = []
    for window in VOLATILITY_WINDOWS:
        s1 = _window_sums(sums, len(values), window)
        s2 = _window_sums(squares, len(values), window)
        # One pass without centring: log returns have |mean| << std, so cancellation costs
        # little, and a window of zero returns (flat prices) stays exactly zero. Rounding can
        # still leave a tiny negative variance, hence the clip.
        variance = (s2 - s1 * s1 / window) / (window - 1)
        volatility = np.empty_like(log_return)
        volatility[:1] = np.nan
        np.sqrt(np.maximum(variance, 0.0) * periods_per_year, out=volatility[1:])
        if bad is not None:
            volatility[1:][_windows_hit(bad, window)] = np.nan
        result.append(volatility)
    return result


def _moving_averages(close: FloatArray, clean: bool) -> list[FloatArray]:
    """Simple moving averages of close, per SMA window."""
    finite = None if clean else np.isfinite(close)
    # Centring on one of the closes keeps the running sums small and makes flat prices come
    # out exactly at their level.
    centre = _first_finite(close, finite)
    values = close - centre if finite is None else np.where(finite, close - centre, 0.0)
    scale = _sum_scale(max(values.max(initial=0.0), -values.min(initial=0.0)))
    if scale != 1.0:
        values *= scale
    sums = _block_cumsum(values)
    result = []
    for window in SMA_WINDOWS:
        average = _window_sums(sums, len(close), window)
        average /= window
        if scale != 1.0:
            average /= scale
        average += centre
        if finite is not None:
            average[_windows_hit(~finite, window)] = np.nan
        result.append(average)
    return result


def _sum_scale(largest: float) -> float:
    """What to multiply closes less a centre by before summing them (and divide their sums
    by), given the largest magnitude among them: 1.0, or _HUGE_SCALE when running sums of
    a few hundred of them could overflow."""
    return _HUGE_SCALE if largest > _HUGE else 1.0


def _drawdown(close: FloatArray, prior_peak: float) -> FloatArray:
    """close / running max close - 1, the running max starting from prior_peak (NaN: none)."""
    # fmax skips NaN, so one missing close does not hide every later peak.
    peak = np.fmax.accumulate(close) if len(close) else close.copy()
    if not math.isnan(prior_peak):
        np.fmax(peak, prior_peak, out=peak)
    with np.errstate(divide="ignore", invalid="ignore"):
        return close / peak - 1.0


def _running_peak(close: FloatArray, prior_peak: float) -> float:
    """The highest of prior_peak and close, ignoring NaN; NaN if there is nothing."""
    if not len(close):
        return prior_peak
    return float(np.fmax(prior_peak, np.fmax.reduce(close)))


def _first_finite(close: FloatArray, finite: NDArray[np.bool_] | None) -> float:
    """The first finite close, or 0.0 if there is none."""
    if not len(close):
        return 0.0
    first = 0 if finite is None else int(np.argmax(finite))
    value = float(close[first])
    return value if math.isfinite(value) else 0.0


def _block_cumsum(values: FloatArray) -> FloatArray:
    """Running sums of values restarted every _BLOCK values, as a (blocks, _BLOCK) array.

    A window sum taken as the difference of two running sums loses precision in proportion to
    the size of those sums. Restarting keeps them near _BLOCK values long, so the error stays
    a few ulps however long the series (and so a full recompute and an incremental one agree),
    and a window of zeros still sums to exactly zero.
    """
    blocks = -(-len(values) // _BLOCK)
    padded = np.zeros(blocks * _BLOCK)
    padded[: len(values)] = values
    return np.cumsum(padded.reshape(blocks, _BLOCK), axis=1)


def _window_sums(running: FloatArray, length: int, window: int) -> FloatArray:
    """Sum of the `window` values ending at each index, from _block_cumsum; NaN until full."""
    if window > _BLOCK:
        raise ValueError(f"window {window} is longer than the block of {_BLOCK}")
    sums = np.empty_like(running)
    sums[:, window:] = running[:, window:] - running[:, :-window]
    # A window ending early in a block also takes the tail of the block before it.
    sums[1:, :window] = running[1:, :window] + (running[:-1, -1:] - running[:-1, -window:])
    sums[:1, :window] = running[:1, :window]
    flat = sums.reshape(-1)[:length]
    flat[: window - 1] = np.nan
    return flat


def _windows_hit(mask: NDArray[np.bool_], window: int) -> NDArray[np.bool_]:
    """Whether the `window` values ending at each index include one where mask is True."""
    counts = np.concatenate([[0], np.cumsum(mask, dtype=np.int64)])
    hit = np.zeros(len(mask), dtype=np.bool_)
    hit[window - 1 :] = counts[window:] - counts[:-window] > 0
    return hit
