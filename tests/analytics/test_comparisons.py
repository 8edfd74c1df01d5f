"""Tests for comparing symbols over common daily log returns."""

from __future__ import annotations

import math
import statistics
from itertools import pairwise

import numpy as np
import pandas as pd
import pytest
from numpy.typing import NDArray

from marketdata.analytics.comparisons import Comparison, compare

DAY = 86_400
START = 1_704_067_200  # 2024-01-01 00:00 UTC
BENCH_RETURNS = [0.01, -0.02, 0.015, 0.005, -0.01, 0.03]

Daily = tuple[NDArray[np.int64], NDArray[np.float64]]


def series_from_log_returns(log_returns: list[float], level: float = 100.0) -> Daily:
    """Consecutive daily candles whose closes have exactly these log returns (up to rounding)."""
    close = level * np.exp(np.cumsum([0.0, *log_returns]))
    return START + np.arange(len(close), dtype=np.int64) * DAY, close


def random_series(days: int, seed: int, drop: float) -> Daily:
    """A seeded daily random walk with about `drop` of its days missing."""
    rng = np.random.default_rng(seed)
    kept = np.flatnonzero(rng.random(days) > drop)
    close = 100 * np.exp(np.cumsum(rng.normal(0.0005, 0.03, len(kept))))
    return START + kept.astype(np.int64) * DAY, close


def pandas_reference(series: dict[str, Daily], window: int) -> pd.DataFrame:
    """Aligned daily log returns, last `window`, computed independently with pandas."""
    closes = pd.concat(
        [pd.Series(close, index=ts, name=symbol) for symbol, (ts, close) in series.items()],
        axis=1,
        join="inner",
    )
    ratios = (closes / closes.shift()).iloc[1:]
    returns = pd.DataFrame(np.log(ratios.to_numpy()), index=ratios.index, columns=ratios.columns)
    return returns.tail(window)


def test_a_symbol_moving_twice_the_benchmark_has_beta_two_and_correlation_one() -> None:
    series = {
        "BTC-USD": series_from_log_returns(BENCH_RETURNS),
        "ETH-USD": series_from_log_returns([2 * r for r in BENCH_RETURNS]),
    }

    result = compare(series, window=30, periods_per_year={"BTC-USD": 365, "ETH-USD": 365})

    bench_vol = statistics.stdev(BENCH_RETURNS) * math.sqrt(365)
    assert result.benchmark == "BTC-USD"
    assert result.returns_used == 6
    assert result.volatility["BTC-USD"] == pytest.approx(bench_vol, rel=1e-9)
    assert result.volatility["ETH-USD"] == pytest.approx(2 * bench_vol, rel=1e-9)
    assert result.beta == {"BTC-USD": 1.0, "ETH-USD": pytest.approx(2.0, rel=1e-9)}
    assert result.volatility_ratio == {"BTC-USD": 1.0, "ETH-USD": pytest.approx(2.0, rel=1e-9)}
    assert result.correlation["ETH-USD"]["BTC-USD"] == pytest.approx(1.0, rel=1e-9)
    assert result.correlation["BTC-USD"]["BTC-USD"] == 1.0
    assert result.roi["BTC-USD"] == pytest.approx(math.expm1(sum(BENCH_RETURNS)), rel=1e-12)
    assert result.roi["ETH-USD"] == pytest.approx(math.expm1(2 * sum(BENCH_RETURNS)), rel=1e-12)
    assert result.relative_performance["BTC-USD"] == 0.0
    assert result.relative_performance["ETH-USD"] == pytest.approx(
        math.expm1(2 * sum(BENCH_RETURNS)) - math.expm1(sum(BENCH_RETURNS)), rel=1e-12
    )


def test_opposite_moves_have_correlation_minus_one_and_a_negative_beta() -> None:
    series = {
        "SPY": series_from_log_returns(BENCH_RETURNS),
        "SH": series_from_log_returns([-r for r in BENCH_RETURNS]),
    }

    result = compare(series, window=5, periods_per_year={"SPY": 252, "SH": 252})

    assert result.returns_used == 5
    assert result.correlation["SH"]["SPY"] == pytest.approx(-1.0, rel=1e-9)
    assert result.beta["SH"] == pytest.approx(-1.0, rel=1e-9)


def test_volatility_is_annualised_per_symbol_calendar() -> None:
    series = {
        "AAPL": series_from_log_returns(BENCH_RETURNS),
        "BTC-USD": series_from_log_returns(BENCH_RETURNS),
    }

    result = compare(series, window=10, periods_per_year={"AAPL": 252, "BTC-USD": 365})

    crypto, equity = result.volatility["BTC-USD"], result.volatility["AAPL"]
    assert crypto is not None and equity is not None
    assert crypto / equity == pytest.approx(math.sqrt(365 / 252), rel=1e-12)
    assert result.beta["BTC-USD"] == pytest.approx(1.0, rel=1e-12)


def test_series_are_aligned_on_timestamps_common_to_all_of_them() -> None:
    ts = START + np.arange(8, dtype=np.int64) * DAY
    a_close = np.array([100.0, 101.0, 103.0, 99.0, 98.0, 104.0, 107.0, 105.0])
    b_close = np.array([50.0, 52.0, 51.0, 55.0, 54.0, 53.0, 58.0, 60.0])
    a_keep = np.array([True, True, True, False, True, True, True, True])  # A misses day 3
    b_keep = np.array([True, True, True, True, True, False, True, True])  # B misses day 5

    result = compare(
        {"A": (ts[a_keep], a_close[a_keep]), "B": (ts[b_keep], b_close[b_keep])},
        window=10,
        periods_per_year={"A": 252, "B": 252},
    )

    # Common days 0, 1, 2, 4, 6, 7: five returns, some spanning the missing days.
    common = [0, 1, 2, 4, 6, 7]
    a_returns = [math.log(a_close[j] / a_close[i]) for i, j in pairwise(common)]
    assert result.returns_used == 5
    assert result.roi["A"] == pytest.approx(105 / 100 - 1, rel=1e-14)
    assert result.roi["B"] == pytest.approx(60 / 50 - 1, rel=1e-14)
    assert result.volatility["A"] == pytest.approx(
        statistics.stdev(a_returns) * math.sqrt(252), rel=1e-12
    )


@pytest.mark.parametrize("window", [30, 90])
def test_comparison_matches_pandas_on_random_walks_with_gaps(window: int) -> None:
    series = {
        "BTC-USD": random_series(400, seed=1, drop=0.05),
        "ETH-USD": random_series(400, seed=2, drop=0.15),
        "AAPL": random_series(400, seed=3, drop=0.3),
    }
    ppy = {"BTC-USD": 365.0, "ETH-USD": 365.0, "AAPL": 252.0}

    result = compare(series, window=window, periods_per_year=ppy, benchmark="ETH-USD")

    returns = pandas_reference(series, window)
    vol = (returns.std() * np.sqrt(pd.Series(ppy))).to_dict()
    roi = np.expm1(returns.sum()).to_dict()
    cov = returns.cov().to_numpy()
    bench_var = float(returns["ETH-USD"].var())
    corr = returns.corr().to_numpy()
    assert result.returns_used == window
    assert result.symbols == ("BTC-USD", "ETH-USD", "AAPL")
    for i, symbol in enumerate(series):
        assert result.volatility[symbol] == pytest.approx(vol[symbol], rel=1e-10)
        assert result.roi[symbol] == pytest.approx(roi[symbol], rel=1e-10)
        assert result.beta[symbol] == pytest.approx(cov[i, 1] / bench_var, rel=1e-10)
        assert result.relative_performance[symbol] == pytest.approx(
            roi[symbol] - roi["ETH-USD"], rel=1e-10, abs=1e-15
        )
        assert result.volatility_ratio[symbol] == pytest.approx(
            vol[symbol] / vol["ETH-USD"], rel=1e-10
        )
        for j, other in enumerate(series):
            assert result.correlation[symbol][other] == pytest.approx(corr[i, j], rel=1e-10)


def test_fewer_common_returns_than_the_window_uses_what_exists() -> None:
    a_ts, a_close = random_series(120, seed=4, drop=0.0)
    b_ts, b_close = random_series(120, seed=5, drop=0.0)
    series = {"A": (a_ts[:60], a_close[:60]), "B": (b_ts[20:], b_close[20:])}

    result = compare(series, window=365, periods_per_year={"A": 252, "B": 252})

    returns = pandas_reference(series, 365)
    assert result.window == 365
    assert result.returns_used == len(returns) == 39
    assert result.volatility["B"] == pytest.approx(returns["B"].std() * math.sqrt(252), rel=1e-10)


@pytest.mark.parametrize("overlap", [0, 1, 2])
def test_fewer_than_two_common_returns_is_an_error(overlap: int) -> None:
    a_ts, a_close = random_series(10, seed=6, drop=0.0)
    b_ts, b_close = random_series(20, seed=7, drop=0.0)
    series = {"A": (a_ts, a_close), "B": (b_ts[10 - overlap :], b_close[10 - overlap :])}

    with pytest.raises(ValueError, match="at least 2"):
        compare(series, window=30, periods_per_year={"A": 252, "B": 252})


def test_exactly_two_common_returns_are_enough() -> None:
    a_ts, a_close = random_series(10, seed=6, drop=0.0)
    b_ts, b_close = random_series(20, seed=7, drop=0.0)

    result = compare(
        {"A": (a_ts, a_close), "B": (b_ts[7:], b_close[7:])},
        window=30,
        periods_per_year={"A": 252, "B": 252},
    )

    assert result.returns_used == 2


def test_a_window_of_two_returns_is_the_smallest_asked_for() -> None:
    series = {"A": series_from_log_returns(BENCH_RETURNS)}
    result = compare(series, window=2, periods_per_year={"A": 365})
    assert (result.window, result.returns_used) == (2, 2)
    assert result.roi["A"] == pytest.approx(math.exp(sum(BENCH_RETURNS[-2:])) - 1)


def test_a_flat_benchmark_has_no_beta_volatility_ratio_or_correlation() -> None:
    series = {
        "USDT-USD": series_from_log_returns([0.0] * 6, level=1.0),
        "BTC-USD": series_from_log_returns(BENCH_RETURNS),
    }

    result = compare(series, window=6, periods_per_year={"USDT-USD": 365, "BTC-USD": 365})

    assert result.volatility["USDT-USD"] == 0.0
    assert result.roi["USDT-USD"] == 0.0
    assert result.beta == {"USDT-USD": None, "BTC-USD": None}
    assert result.volatility_ratio == {"USDT-USD": None, "BTC-USD": None}
    assert result.correlation["USDT-USD"] == {"USDT-USD": None, "BTC-USD": None}
    assert result.correlation["BTC-USD"] == {"USDT-USD": None, "BTC-USD": 1.0}
    assert result.relative_performance["BTC-USD"] == pytest.approx(result.roi["BTC-USD"])


@pytest.mark.parametrize(("rate", "window"), [(0.1, 6), (0.1, 5), (0.13, 6)])
def test_a_symbol_with_constant_returns_has_exactly_zero_volatility_and_beta(
    rate: float, window: int
) -> None:
    # The same log return every day: their mean need not round to that return (it is an ulp
    # off for 0.1 over 5 days and 0.13 over 6), yet the variance is 0, whatever the other
    # symbol's returns (the zeroing is per column, not of the whole matrix).
    series = {
        "SPY": series_from_log_returns(BENCH_RETURNS[-window:]),
        "BOND": (
            series_from_log_returns([rate] * window)[0],
            100.0 * np.exp(rate) ** np.arange(window + 1.0),
        ),
    }
    bond_close = series["BOND"][1]
    bond_returns = np.log(bond_close[1:] / bond_close[:-1])
    assert np.ptp(bond_returns) == 0.0  # truly constant returns
    if (rate, window) != (0.1, 6):
        assert bond_returns.mean() != bond_returns[0]  # the case the zeroing is for

    result = compare(series, window=window, periods_per_year={"SPY": 252, "BOND": 252})

    assert result.volatility["BOND"] == 0.0
    assert result.beta["BOND"] == 0.0
    assert result.correlation["BOND"]["SPY"] is None


def test_the_benchmark_defaults_to_the_first_symbol() -> None:
    series = {
        "ETH-USD": random_series(50, seed=8, drop=0.0),
        "BTC-USD": random_series(50, seed=9, drop=0.0),
    }

    result = compare(series, window=20, periods_per_year={"ETH-USD": 365, "BTC-USD": 365})

    assert isinstance(result, Comparison)
    assert result.benchmark == "ETH-USD"
    assert result.beta["ETH-USD"] == 1.0
    assert result.volatility_ratio["ETH-USD"] == 1.0
    assert result.relative_performance["ETH-USD"] == 0.0


def test_the_roi_spans_exactly_the_returns_used() -> None:
    ts, close = random_series(30, seed=10, drop=0.0)

    result = compare({"X": (ts, close)}, window=7, periods_per_year={"X": 365})

    assert result.roi["X"] == pytest.approx(close[-1] / close[-8] - 1, rel=1e-14)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": 1}, "window must be at least 2"),
        ({"benchmark": "SOL-USD"}, "benchmark SOL-USD is not among"),
        ({"periods_per_year": {"A": 252}}, "no periods_per_year for B"),
    ],
)
def test_bad_arguments_are_rejected_with_a_clear_message(
    kwargs: dict[str, object], message: str
) -> None:
    series = {"A": random_series(30, seed=11, drop=0.0), "B": random_series(30, seed=12, drop=0.0)}
    arguments: dict[str, object] = {"window": 10, "periods_per_year": {"A": 252, "B": 252}}

    with pytest.raises(ValueError, match=message):
        compare(series, **{**arguments, **kwargs})  # type: ignore[arg-type]


def test_no_symbols_is_an_error() -> None:
    empty: dict[str, Daily] = {}

    with pytest.raises(ValueError, match="no symbols"):
        compare(empty, window=10, periods_per_year={})


@pytest.mark.parametrize(
    ("closes", "roi"),
    [
        ([2.0, 0.0, 3.0, 5.0, 4.0, 6.0], 2.0),  # a zero inside the window
        ([0.0, 0.0, 2.0, 3.0, 4.0, 5.0], None),  # two in a row, one of them the ROI's anchor
        ([1.0, 2.0, 3.0, 4.0, 5.0, 0.0], -1.0),  # the last close
    ],
)
def test_a_zero_close_leaves_that_symbol_undefined_and_the_others_as_they_were(
    closes: list[float], roi: float | None
) -> None:
    """A zero close has no log return: the symbol's volatility, beta, ratio and correlations
    are None (its ROI too if the zero is the anchor), the other symbols' figures are those
    of a comparison without it, and no numpy warning reaches the user (warnings fail here)."""
    ts = START + np.arange(6, dtype=np.int64) * DAY
    others = {
        "A": (ts, np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])),
        "C": (ts, np.array([1.0, 3.0, 2.0, 5.0, 4.0, 7.0])),
    }
    ppy = {"A": 365, "B": 365, "C": 365}
    without = compare(others, window=5, periods_per_year=ppy)

    result = compare({**others, "B": (ts, np.array(closes))}, window=5, periods_per_year=ppy)

    assert result.roi["B"] == roi
    for figures in (result.volatility, result.beta, result.volatility_ratio):
        assert figures["B"] is None
    assert result.correlation["B"] == {"A": None, "C": None, "B": None}
    for symbol in "AC":
        assert result.roi[symbol] == without.roi[symbol]
        assert result.volatility[symbol] == without.volatility[symbol]
        assert result.beta[symbol] == without.beta[symbol]
        assert result.correlation[symbol] == {**without.correlation[symbol], "B": None}


@pytest.mark.parametrize("factor", [2.0, -2.0])
def test_a_correlation_stays_within_one_where_rounding_would_overshoot(factor: float) -> None:
    """One symbol's log returns a multiple of the other's: the correlation is exactly +1 or
    -1, where covariance / (std * std) alone comes out an ulp beyond it for these returns."""
    returns = np.random.default_rng(0).normal(0.0, 0.02, 6).tolist()
    series = {
        "A": series_from_log_returns(returns),
        "B": series_from_log_returns([factor * r for r in returns], level=50.0),
    }

    result = compare(series, window=6, periods_per_year={"A": 365, "B": 365})

    assert result.correlation["A"]["B"] == result.correlation["B"]["A"] == math.copysign(1, factor)


def test_a_zero_close_at_both_ends_of_the_window_has_no_roi_and_no_warning() -> None:
    ts = START + np.arange(6, dtype=np.int64) * DAY
    series = {
        "A": (ts, np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])),
        "B": (ts, np.array([0.0, 2.0, 3.0, 4.0, 5.0, 0.0])),  # 0 / 0 for its ROI
    }
    result = compare(series, window=5, periods_per_year={"A": 365, "B": 365})
    assert result.roi == {"A": 5.0, "B": None}
    assert result.relative_performance == {"A": 0.0, "B": None}


def test_a_benchmark_whose_variance_is_exactly_one_still_measures_the_others() -> None:
    """Log returns 0, 1, 2 have a sample variance of exactly 1: only a zero variance leaves
    beta and the volatility ratio undefined, not a variance of one."""
    ts = START + np.arange(4, dtype=np.int64) * DAY
    bench = (ts, np.array([1.0, 1.0, math.e, math.e * math.exp(2.0)]))
    other = (ts, np.array([1.0, 2.0, 3.0, 5.0]))
    result = compare({"A": bench, "B": other}, window=3, periods_per_year={"A": 1.0, "B": 1.0})
    returns = np.log([2.0, 1.5, 5.0 / 3.0])
    assert result.volatility["A"] == 1.0
    assert result.beta["A"] == result.volatility_ratio["A"] == 1.0
    assert result.beta["B"] == pytest.approx(np.cov(returns, [0.0, 1.0, 2.0])[0, 1])
    assert result.volatility_ratio["B"] == pytest.approx(statistics.stdev(returns))


def test_returns_spanning_exactly_one_are_not_taken_for_constant_returns() -> None:
    """Log returns 0, 1, 0 range over exactly 1 (a constant column ranges over 0): their
    sample variance is 1/3, annualised over 3 periods a volatility of exactly 1."""
    ts = START + np.arange(4, dtype=np.int64) * DAY
    jump = (ts, np.array([1.0, 1.0, math.e, math.e]))
    other = (ts, np.array([1.0, 2.0, 3.0, 5.0]))
    result = compare({"A": jump, "B": other}, window=3, periods_per_year={"A": 3.0, "B": 1.0})
    assert result.volatility["A"] == pytest.approx(1.0, rel=1e-15)
    assert result.correlation["A"]["B"] is not None
