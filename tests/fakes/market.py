"""Deterministic candle series for the fake providers (independent of the synthetic provider)."""

from __future__ import annotations

import random


def walk(start: int, step: int, count: int, *, seed: int = 1, price: float = 100.0) -> list[tuple]:
    """`count` valid candles (ts, open, high, low, close, volume) every `step` seconds."""
    rng = random.Random(seed)
    rows = []
    close = price
    for i in range(count):
        open_ = close
        close = max(0.01, open_ * (1 + rng.gauss(0, 0.01)))
        high = max(open_, close) * (1 + abs(rng.gauss(0, 0.003)))
        low = min(open_, close) * (1 - abs(rng.gauss(0, 0.003)))
        volume = round(rng.uniform(1, 1000), 6)
        rows.append(
            (
                start + i * step,
                round(open_, 2),
                round(high, 2),
                round(low, 2),
                round(close, 2),
                volume,
            )
        )
    return rows
