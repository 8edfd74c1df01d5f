"""Candle checks before any write: impossible rows are split off with a reason each."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from marketdata.domain import Candles

if TYPE_CHECKING:
    from numpy.typing import NDArray


@dataclass(frozen=True, slots=True)
class Rejected:
    """One rejected row: its raw values and why."""

    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    reason: str


# Checked in this order; a row gets the first reason that applies.
_REASONS = (
    "price not finite",
    "price not positive",
    "volume not finite or negative",
    "low above open or close",
    "high below open or close",
    "timestamp not on the interval grid",
    "timestamp in the future",
    "duplicate timestamp in batch",
)


def validate(batch: Candles, now: int) -> tuple[Candles, list[Rejected]]:
    """Split a batch into the rows that may be stored and the rejected ones.

    Rules: prices finite and > 0; volume finite and >= 0; low <= open, close <= high;
    ts on the interval grid and not after `now`; at most one row per timestamp.
    """
    prices = np.vstack([batch.open, batch.high, batch.low, batch.close])
    # comparisons with NaN are False without a warning: a NaN row fails the first rule only
    failures = [
        ~np.isfinite(prices).all(axis=0),
        ~(prices > 0).all(axis=0),
        ~(np.isfinite(batch.volume) & (batch.volume >= 0)),
        (batch.low > batch.open) | (batch.low > batch.close),
        (batch.high < batch.open) | (batch.high < batch.close),
        batch.ts % batch.interval.seconds != 0,
        batch.ts > now,
        _duplicates(batch.ts),
    ]
    bad = np.logical_or.reduce(failures)
    if not bad.any():
        return batch, []
    reason_index = np.argmax(np.vstack(failures), axis=0)
    rejected = [
        Rejected(
            int(batch.ts[i]),
            float(batch.open[i]),
            float(batch.high[i]),
            float(batch.low[i]),
            float(batch.close[i]),
            float(batch.volume[i]),
            _REASONS[int(reason_index[i])],
        )
        for i in np.flatnonzero(bad)
    ]
    return batch.take(~bad), rejected


def all_valid(batch: Candles, now: int) -> bool:
    """Whether `validate` keeps every row of the batch: the same rules, row by row. For a
    handful of rows (the candle a tick fetches again) this costs a few microseconds where
    `validate`'s array work costs ~90: a tick of 10,000 pairs asks it 10,000 times."""
    inf = math.inf
    step = batch.interval.seconds
    seen: set[int] = set()
    for ts, open_, high, low, close, volume in batch.rows():
        # chained comparisons are False for NaN, as the array rules are
        if not (0 < open_ < inf and 0 < high < inf and 0 < low < inf and 0 < close < inf):
            return False
        if not 0 <= volume < inf or low > open_ or low > close or high < open_ or high < close:
            return False
        if ts % step or ts > now or ts in seen:
            return False
        seen.add(ts)
    return True


def _duplicates(ts: NDArray[np.int64]) -> NDArray[np.bool_]:
    """True for the second and later rows of a timestamp (first occurrence kept)."""
    _, first = np.unique(ts, return_index=True)
    duplicate: NDArray[np.bool_] = ~np.isin(np.arange(ts.shape[0]), first)
    return duplicate
