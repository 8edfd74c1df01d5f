"""Side-by-side comparison of symbols over their last N common daily log returns."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import reduce
from typing import TypeAlias

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray: TypeAlias = NDArray[np.float64]
Series: TypeAlias = tuple[ArrayLike, ArrayLike]
"""One symbol's daily (ts, close): epoch seconds (int64) strictly ascending, closes (float64)."""

_MIN_RETURNS = 2  # a sample standard deviation needs two returns


@dataclass(frozen=True, slots=True)
class Comparison:
    """How symbols moved over the same window, and against a benchmark.

    Every per-symbol mapping has one entry per symbol, in `symbols` order; None marks a
    value that is undefined (a zero variance, or a missing or zero close).

    Attributes:
        window: The number of returns asked for.
        benchmark: The symbol beta, relative performance and volatility ratio refer to.
        symbols: The symbols compared, benchmark included, in the order given.
        roi: Last aligned close / the aligned close `returns_used` returns earlier - 1.
        volatility: Annualised sample standard deviation (ddof=1) of the log returns.
        beta: cov(symbol, benchmark) / var(benchmark), both ddof=1.
        relative_performance: roi of the symbol - roi of the benchmark.
        volatility_ratio: volatility of the symbol / volatility of the benchmark.
        correlation: Pearson correlation of the log returns, for every pair of symbols.
        returns_used: How many returns were used: `window`, or fewer if that is all the
            symbols have in common.
    """

    window: int
    benchmark: str
    symbols: tuple[str, ...]
    roi: dict[str, float | None]
    volatility: dict[str, float | None]
    beta: dict[str, float | None]
    relative_performance: dict[str, float | None]
    volatility_ratio: dict[str, float | None]
    correlation: dict[str, dict[str, float | None]]
    returns_used: int


def compare(
    series: Mapping[str, Series],
    *,
    window: int,
    periods_per_year: Mapping[str, float],
    benchmark: str | None = None,
) -> Comparison:
    """Compare symbols over their last `window` common daily log returns.

    The series are aligned on the timestamps present in all of them; log returns are taken
    between consecutive common timestamps, so a day missing from any one series is skipped
    for all of them.

    Args:
        series: (ts, close) per symbol, in the order to report them.
        window: How many of the latest common log returns to use (at least 2).
        periods_per_year: Bars per year per symbol for annualising volatility (365 for
            crypto, 252 for equities on daily bars).
        benchmark: The symbol to measure the others against; the first symbol by default.

    Returns:
        The comparison.

    Raises:
        ValueError: If there are no symbols, the window is below 2, the benchmark is not
            among the symbols, a symbol has no periods_per_year, or the symbols share fewer
            than 2 returns.
    """
    symbols = tuple(series)
    benchmark = _check_arguments(symbols, window, periods_per_year, benchmark)
    closes = _aligned_closes([series[symbol] for symbol in symbols])
    returns = _log_returns(closes)[-window:]
    used = len(returns)
    if used < _MIN_RETURNS:
        raise ValueError(
            f"{', '.join(symbols)} have {used} daily return(s) in common; "
            f"at least {_MIN_RETURNS} are needed to compare them"
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        growth = closes[-1] / closes[-1 - used] - 1.0
    covariance = _covariance(returns)
    std = np.sqrt(np.diag(covariance))
    annualised = std * np.sqrt([periods_per_year[symbol] for symbol in symbols])
    b = symbols.index(benchmark)
    roi = _by_symbol(symbols, growth)
    volatility = _by_symbol(symbols, annualised)
    return Comparison(
        window=window,
        benchmark=benchmark,
        symbols=symbols,
        roi=roi,
        volatility=volatility,
        beta=_by_symbol(symbols, _safe_divide(covariance[:, b], covariance[b, b])),
        relative_performance=_by_symbol(symbols, growth - growth[b]),
        volatility_ratio=_by_symbol(symbols, _safe_divide(annualised, annualised[b])),
        correlation=_correlation(symbols, covariance, std),
        returns_used=used,
    )


def _check_arguments(
    symbols: tuple[str, ...],
    window: int,
    periods_per_year: Mapping[str, float],
    benchmark: str | None,
) -> str:
    """Validate the arguments of compare(); return the benchmark to use."""
    if not symbols:
        raise ValueError("no symbols to compare")
    if window < _MIN_RETURNS:
        raise ValueError(f"window must be at least {_MIN_RETURNS} returns, got {window}")
    missing = [symbol for symbol in symbols if symbol not in periods_per_year]
    if missing:
        raise ValueError(f"no periods_per_year for {', '.join(missing)}")
    if benchmark is None:
        return symbols[0]
    if benchmark not in symbols:
        raise ValueError(f"benchmark {benchmark} is not among {', '.join(symbols)}")
    return benchmark


def _aligned_closes(series: list[Series]) -> FloatArray:
    """Closes at the timestamps every series has, one column per series."""
    stamps = [np.asarray(ts, dtype=np.int64) for ts, _ in series]
    common = reduce(lambda a, b: np.intersect1d(a, b, assume_unique=True), stamps)
    columns = [
        np.asarray(close, dtype=np.float64)[np.searchsorted(ts, common)]
        for ts, (_, close) in zip(stamps, series, strict=True)
    ]
    return np.column_stack(columns)


def _log_returns(closes: FloatArray) -> FloatArray:
    """ln(close_t / close_(t-1)) down each column."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(closes[1:] / closes[:-1])


def _covariance(returns: FloatArray) -> FloatArray:
    """Sample covariance matrix (ddof=1) of the columns of returns."""
    # a zero close makes infinite returns: their column is NaN, without a warning
    with np.errstate(invalid="ignore"):
        deviations = returns - returns.mean(axis=0)
        # A column of identical returns has zero variance, but its mean can be an ulp off
        # the values; zeroing it makes the variance and every covariance with it exactly 0.
        deviations[:, np.ptp(returns, axis=0) == 0] = 0.0
        covariance: FloatArray = deviations.T @ deviations / (len(returns) - 1)
    return covariance


def _correlation(
    symbols: tuple[str, ...], covariance: FloatArray, std: FloatArray
) -> dict[str, dict[str, float | None]]:
    """Pearson correlation for every pair; None where either standard deviation is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        matrix = np.clip(covariance / np.outer(std, std), -1.0, 1.0)
    # A series is perfectly correlated with itself; rounding should not say otherwise.
    np.fill_diagonal(matrix, np.where(std > 0, 1.0, np.nan))
    return {symbol: _by_symbol(symbols, row) for symbol, row in zip(symbols, matrix, strict=True)}


def _safe_divide(numerator: FloatArray, denominator: float) -> FloatArray:
    """numerator / denominator; NaN everywhere if the denominator is 0."""
    if denominator == 0:
        return np.full_like(numerator, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        return numerator / denominator


def _by_symbol(symbols: tuple[str, ...], values: FloatArray) -> dict[str, float | None]:
    """One entry per symbol; non-finite values become None."""
    return {
        symbol: float(value) if math.isfinite(value) else None
        for symbol, value in zip(symbols, values.tolist(), strict=True)
    }
