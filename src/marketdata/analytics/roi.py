"""Return on investment as of the latest close, over fixed horizons, year to date and ever."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

_DAY = 86_400

HORIZONS: dict[str, int] = {
    "1d": _DAY,
    "7d": 7 * _DAY,
    "30d": 30 * _DAY,
    "90d": 90 * _DAY,
    "180d": 180 * _DAY,
    "365d": 365 * _DAY,
}
"""Fixed look-back horizons in seconds, by name."""

ROI_KEYS = (*HORIZONS, "ytd", "inception")
"""The keys `roi()` returns, in order."""


def roi(ts: ArrayLike, close: ArrayLike) -> dict[str, float | None]:
    """ROI of the latest close against earlier closes: close_now / close_then - 1.

    close_then is, per key:

    - "1d" ... "365d": the close of the last candle at or before (latest ts - horizon);
    - "ytd": the last close before January 1 00:00 UTC of the latest candle's year;
    - "inception": the first close.

    Args:
        ts: Candle start times, epoch seconds UTC (int64), strictly ascending.
        close: Closes, aligned with ts (float64).

    Returns:
        ROI per key of ROI_KEYS, in that order; None when the history does not reach back
        that far (or a close involved is missing or zero).

    Raises:
        ValueError: If ts and close differ in length.
    """
    stamps = np.asarray(ts, dtype=np.int64)
    closes = np.asarray(close, dtype=np.float64)
    if len(stamps) != len(closes):
        raise ValueError("ts and close must have the same length")
    if not len(stamps):
        return dict.fromkeys(ROI_KEYS)
    latest = stamps[-1]
    cutoffs = latest - np.array(list(HORIZONS.values()), dtype=np.int64)
    # The last candle at or before each cutoff; -1 where there is none.
    then = list(np.searchsorted(stamps, cutoffs, side="right") - 1)
    # The last candle strictly before January 1 of the latest year.
    then.append(np.searchsorted(stamps, _year_start(latest), side="left") - 1)
    then.append(0)
    now = float(closes[-1])
    return {
        key: _growth(now, float(closes[index])) if index >= 0 else None
        for key, index in zip(ROI_KEYS, then, strict=True)
    }


def reference_times(latest: int) -> tuple[list[int], list[int]]:
    """The times `roi()` looks back to from the latest candle: (cutoffs whose last candle at
    or before counts, cutoffs whose last candle strictly before counts). With those closes,
    the first and the latest, `roi()` of the few candles gives what it gives on all of them."""
    return [latest - seconds for seconds in HORIZONS.values()], [int(_year_start(np.int64(latest)))]


def _year_start(epoch: np.int64) -> np.int64:
    """Epoch seconds of January 1 00:00 UTC of the year holding epoch."""
    year = np.datetime64(int(epoch), "s").astype("datetime64[Y]")
    return np.int64(year.astype("datetime64[s]").astype(np.int64))


def _growth(now: float, then: float) -> float | None:
    """now / then - 1, or None if that is not a finite number."""
    if then == 0:
        return None
    value = now / then - 1.0
    return value if math.isfinite(value) else None
