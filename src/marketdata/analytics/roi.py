"""Return on investment as of the latest close, over fixed horizons, year to date and ever."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType

import numpy as np
from numpy.typing import ArrayLike, NDArray

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


@dataclass(frozen=True, slots=True)
class Anchor:
    """Where a ROI key looks back to: the last candle before `bound` (at or before it when
    `inclusive`), or the first candle of all when `bound` is None."""

    bound: int | None
    inclusive: bool = True


@lru_cache(maxsize=64)
def anchors(latest: int) -> Mapping[str, Anchor]:
    """The candle each ROI key compares the latest close (at `latest`) with, in ROI_KEYS
    order (those without a bound last: `roi` relies on it).

    A store answers each anchor with one indexed lookup (`ts <= bound ORDER BY ts DESC
    LIMIT 1`), so ROI costs the same whatever the length of the history. Read-only and
    cached: the pairs of a run share their newest candle, and building the anchors was
    most of the ROI of a pair whose history is in hand.
    """
    marks = {key: Anchor(latest - seconds) for key, seconds in HORIZONS.items()}
    marks["ytd"] = Anchor(_year_start(latest), inclusive=False)
    marks["inception"] = Anchor(None)
    return MappingProxyType(marks)


@lru_cache(maxsize=64)
def _limits(latest: int) -> tuple[tuple[str, ...], NDArray[np.int64]]:
    """The keys of `anchors(latest)`, those with a bound first (in ROI_KEYS order, as
    `anchors` gives them), and for each of those the first time after the candles it may
    look back to (stamps are whole seconds: "at or before b" is "< b + 1")."""
    marks = anchors(latest)
    bounded = {k: m.bound + m.inclusive for k, m in marks.items() if m.bound is not None}
    limits = np.array(list(bounded.values()), dtype=np.int64)
    limits.flags.writeable = False  # shared by every call with this `latest`
    return (*bounded, *(k for k in marks if k not in bounded)), limits


def positions(stamps: NDArray[np.int64], latest: int) -> dict[str, int]:
    """Per anchor of `anchors(latest)` with a bound, how many of `stamps` (ascending, whole
    seconds) come before it: the candle it looks back to is the one before that position
    (none at 0).

    One search for every bound: a search each was most of the ROI of a cached pair."""
    keys, limits = _limits(latest)
    return dict(zip(keys[: len(limits)], stamps.searchsorted(limits).tolist(), strict=True))


def roi_from(now: float, then: dict[str, float | None]) -> dict[str, float | None]:
    """ROI per key of ROI_KEYS from the latest close and the close at each key's anchor
    (None where the history does not reach back that far)."""
    return dict(zip(ROI_KEYS, _growths(now, [then.get(key) for key in ROI_KEYS]), strict=True))


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
    keys, limits = _limits(int(stamps[-1]))
    at = stamps.searchsorted(limits)
    # the close before each bound (None where no candle lies before it), then the first
    # close for each key without a bound
    before = zip(at.tolist(), closes[at - 1].tolist(), strict=True)
    then = [close if found else None for found, close in before]
    then += [float(closes[0])] * (len(keys) - len(limits))
    return dict(zip(keys, _growths(float(closes[-1]), then), strict=True))


@lru_cache(maxsize=64)
def _year_start(epoch: int) -> int:
    """Epoch seconds of January 1 00:00 UTC of the year holding epoch (the pairs of a run
    share their newest candle's year)."""
    year = np.datetime64(epoch, "s").astype("datetime64[Y]")
    return int(year.astype("datetime64[s]").astype(np.int64))


def _growths(now: float, then: list[float | None]) -> list[float | None]:
    """now / close - 1 for each close, None where the close is missing or zero or that is
    not a finite number. One loop for all keys, not a call per key: every pair's cache
    values hold a ROI."""
    result: list[float | None] = []
    for close in then:
        value = now / close - 1.0 if close else math.nan
        result.append(value if math.isfinite(value) else None)
    return result
