"""Analytics benchmark: every indicator for 1,000,000 candles, next to plain numpy."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from marketdata.analytics.indicators import (
    INDICATOR_NAMES,
    LOOKBACK,
    SMA_WINDOWS,
    VOLATILITY_WINDOWS,
    compute_indicators,
    compute_tail,
    periods_per_year,
)
from tests.benchmarks.common import (
    SYMBOLS,
    WINDOW_END,
    WINDOW_START,
    BenchError,
    Figure,
    Report,
    best_of,
    log,
    synthetic_batches,
)

REPEAT = 7
NUMPY_TARGET = 2.0
INGEST_SHARE = 0.05
TAIL_SHARE = 0.10
# The reference sums plainly, the library in restarted blocks: they agree to rounding.
RTOL = 1e-7
ATOL = 1e-12

FloatArray = NDArray[np.float64]


def reference(close: FloatArray, per_year: float) -> dict[str, FloatArray]:
    """The same quantities computed the plain numpy way (cumsum windows, maximum.accumulate)."""
    n = len(close)
    simple = np.full(n, np.nan)
    log_return = np.full(n, np.nan)
    simple[1:] = close[1:] / close[:-1] - 1.0
    log_return[1:] = np.log(close[1:] / close[:-1])
    out = {"return": simple, "log_return": log_return}
    values = log_return[1:]
    sums = np.concatenate([[0.0], np.cumsum(values)])
    squares = np.concatenate([[0.0], np.cumsum(values * values)])
    for w in VOLATILITY_WINDOWS:
        s1 = sums[w:] - sums[:-w]
        s2 = squares[w:] - squares[:-w]
        volatility = np.full(n, np.nan)
        volatility[w:] = np.sqrt(np.maximum((s2 - s1 * s1 / w) / (w - 1), 0.0) * per_year)
        out[f"volatility_{w}"] = volatility
    out["drawdown"] = close / np.maximum.accumulate(close) - 1.0
    running = np.concatenate([[0.0], np.cumsum(close)])
    for w in SMA_WINDOWS:
        average = np.full(n, np.nan)
        average[w - 1 :] = (running[w:] - running[:-w]) / w
        out[f"sma_{w}"] = average
    return out


def _disagreement(closes: list[FloatArray], per_year: float) -> str | None:
    """The first indicator where library and reference differ beyond rounding, if any."""
    for close in closes:
        ours = compute_indicators(close, periods_per_year=per_year).columns()
        plain = reference(close, per_year)
        for name in INDICATOR_NAMES:
            if not np.allclose(ours[name], plain[name], rtol=RTOL, atol=ATOL, equal_nan=True):
                return name
    return None


def run(report: Report, first_ingest_seconds: float) -> None:
    """Full indicators vs numpy, vs the ingest time, and the one-new-candle tail."""
    log("indicators for 100 x 10,000 closes ...")
    closes = [b.close for b in synthetic_batches(SYMBOLS, WINDOW_START, WINDOW_END)]
    rows = sum(len(c) for c in closes)
    per_year = periods_per_year(60, True)  # one-minute crypto bars
    wrong = _disagreement(closes, per_year)
    if wrong is not None:
        raise BenchError(f"compute_indicators and the numpy reference disagree on {wrong}")

    def full() -> None:
        for close in closes:
            compute_indicators(close, periods_per_year=per_year)

    def plain() -> None:
        for close in closes:
            reference(close, per_year)

    # one new candle per symbol: the LOOKBACK closes before it, and the peak before them
    tails = [(c[-1 - LOOKBACK : -1], c[-1:], float(np.max(c[:-1]))) for c in closes]

    def tail() -> None:
        for previous, new, peak in tails:
            compute_tail(previous, new, periods_per_year=per_year, prior_peak=peak)

    full_s = best_of(REPEAT, full)
    plain_s = best_of(REPEAT, plain)
    tail_s = best_of(REPEAT, tail)
    ratio = full_s / plain_s
    report.add(
        Figure(
            "indicators, full",
            full_s,
            rows,
            f"{ratio:.2f}x numpy",
            target=f"<= {NUMPY_TARGET:.0f}x numpy",
            passed=ratio <= NUMPY_TARGET,
        )
    )
    report.add(Figure("  plain numpy", plain_s, rows, "1 (ref)"))
    share = full_s / first_ingest_seconds
    report.add(
        Figure(
            "  share of first ingest",
            ratio=f"{share:.2%}",
            target=f"< {INGEST_SHARE:.0%}",
            passed=share < INGEST_SHARE,
        )
    )
    share = tail_s / full_s
    report.add(
        Figure(
            "indicators, 1 new bar x100",
            tail_s,
            len(tails),
            f"{share:.1%} full",
            target=f"< {TAIL_SHARE:.0%} full",
            passed=share < TAIL_SHARE,
        )
    )
    per_call = tail_s / len(tails) * 1e6
    report.note(
        "indicators, full: compute_indicators per symbol over 100 x 10,000 closes; "
        "1 new bar x100: compute_tail of one new close per symbol with the LOOKBACK closes "
        f"before it. Best of {REPEAT}, in this process; library and numpy reference agree "
        f"(rtol {RTOL:g}) on all {len(INDICATOR_NAMES)} indicators; compute_tail costs "
        f"{per_call:.0f} us per call for {LOOKBACK} + 1 closes, "
        f"full compute {full_s / len(closes) * 1e6:.0f} us per 10,000-bar symbol"
    )
