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
    """The candle each ROI key compares the latest close (at `latest`) with, per ROI_KEYS.

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
    """The keys of `anchors(latest)` that have a bound, and for each the first time after
    the candles it may look back to (stamps are whole seconds: "at or before b" is "< b + 1")."""
    bounded = {k: m.bound + m.inclusive for k, m in anchors(latest).items() if m.bound is not None}
    limits = np.array(list(bounded.values()), dtype=np.int64)
    limits.flags.writeable = False  # shared by every call with this `latest`
    return tuple(bounded), limits


def positions(stamps: ArrayLike, latest: int) -> dict[str, int]:
    """Per anchor of `anchors(latest)` with a bound, how many of `stamps` (ascending, whole
    seconds) come before it: the candle it looks back to is the one before that position
    (none at 0).

    One search for every bound: a search each was most of the ROI of a cached pair."""
    keys, limits = _limits(latest)
    return dict(zip(keys, np.searchsorted(stamps, limits).tolist(), strict=True))


def roi_from(now: float, then: dict[str, float | None]) -> dict[str, float | None]:
    """ROI per key of ROI_KEYS from the latest close and the close at each key's anchor
    (None where the history does not reach back that far)."""
    result: dict[str, float | None] = {}
    for key in ROI_KEYS:
        close = then.get(key)
        result[key] = None if close is None else _growth(now, close)
    return result


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
    latest = int(stamps[-1])
    found = positions(stamps, latest)
    then = {key: float(closes[at - 1]) if at else None for key, at in found.items()}
    for key, mark in anchors(latest).items():
        if mark.bound is None:  # the first candle of all
            then[key] = float(closes[0])
    return roi_from(float(closes[-1]), then)


@lru_cache(maxsize=64)
def _year_start(epoch: int) -> int:
    """Epoch seconds of January 1 00:00 UTC of the year holding epoch (the pairs of a run
    share their newest candle's year)."""
    year = np.datetime64(epoch, "s").astype("datetime64[Y]")
    return int(year.astype("datetime64[s]").astype(np.int64))


def _growth(now: float, then: float) -> float | None:
    """now / then - 1, or None if that is not a finite number."""
    if then == 0:
        return None
    value = now / then - 1.0
    return value if math.isfinite(value) else None
