"""Tests for per-candle indicators, full and incremental."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import numpy as np
import pandas as pd
import pytest
from numpy.typing import NDArray

from marketdata.analytics import indicators
from marketdata.analytics.indicators import (
    _SHORT_TAIL,
    INDICATOR_NAMES,
    LOOKBACK,
    SMA_WINDOWS,
    VOLATILITY_WINDOWS,
    Indicators,
    IndicatorState,
    compute_indicators,
    compute_tail,
    periods_per_year,
)

FloatArray = NDArray[np.float64]


def random_walk(n: int, seed: int, level: float = 100.0, sigma: float = 0.02) -> FloatArray:
    """Closes of a seeded geometric random walk."""
    rng = np.random.default_rng(seed)
    return level * np.exp(np.cumsum(rng.normal(0.0, sigma, n)))


def pandas_indicators(close: FloatArray, ppy: float) -> dict[str, pd.Series[float]]:
    """The same indicators computed independently with pandas."""
    s = pd.Series(close)
    log_return = (s / s.shift()).apply(math.log)
    columns = {"return": s.pct_change(), "log_return": log_return}
    for window in VOLATILITY_WINDOWS:
        columns[f"volatility_{window}"] = log_return.rolling(window).std() * math.sqrt(ppy)
    columns["drawdown"] = s / s.cummax() - 1
    for window in SMA_WINDOWS:
        columns[f"sma_{window}"] = s.rolling(window).mean()
    return columns


def assert_same_columns(actual: Indicators, expected: Indicators, rtol: float) -> None:
    """Equal NaN positions and values within rtol, column by column."""
    for name, values in actual.columns().items():
        np.testing.assert_allclose(
            values, expected.columns()[name], rtol=rtol, atol=1e-15, err_msg=name
        )


def rows_from(result: Indicators, start: int) -> Indicators:
    """The rows of every column from `start` on."""
    return Indicators(*(getattr(result, f.name)[start:] for f in fields(Indicators)))


def concatenate(pieces: list[Indicators]) -> Indicators:
    """The pieces joined end to end, column by column."""
    return Indicators(
        *(np.concatenate([getattr(p, f.name) for p in pieces]) for f in fields(Indicators))
    )


def test_returns_match_hand_worked_values() -> None:
    result = compute_indicators(np.array([100.0, 110.0, 99.0, 99.0]), periods_per_year=365)

    np.testing.assert_allclose(result.return_, [np.nan, 0.1, -0.1, 0.0], rtol=1e-14)
    np.testing.assert_allclose(
        result.log_return, [np.nan, math.log(1.1), math.log(0.9), 0.0], rtol=1e-14
    )


def test_volatility_7_matches_hand_worked_alternating_returns() -> None:
    # Log returns +a, -a, +a, -a, +a, -a, +a: mean a/7, squared deviations 4(6a/7)² + 3(8a/7)²
    # = 48a²/7, sample variance 8a²/7.
    a = 0.01
    log_returns = [0.0] + [a if i % 2 == 0 else -a for i in range(7)]
    close = 100.0 * np.exp(np.cumsum(log_returns))

    result = compute_indicators(close, periods_per_year=365)

    assert np.isnan(result.volatility_7[:7]).all()
    assert result.volatility_7[7] == pytest.approx(a * math.sqrt(8 / 7) * math.sqrt(365), rel=1e-9)


@pytest.mark.parametrize("window", VOLATILITY_WINDOWS)
def test_volatility_is_first_defined_once_that_many_returns_exist(window: int) -> None:
    result = compute_indicators(random_walk(300, seed=1), periods_per_year=365)
    volatility = result.columns()[f"volatility_{window}"]

    assert int(np.argmax(~np.isnan(volatility))) == window
    assert not np.isnan(volatility[window:]).any()


def test_volatility_is_zero_for_flat_prices() -> None:
    close = np.full(700, 123.45)

    result = compute_indicators(close, periods_per_year=365)

    for window in VOLATILITY_WINDOWS:
        volatility = result.columns()[f"volatility_{window}"]
        assert (volatility[window:] == 0.0).all()
    for window in SMA_WINDOWS:
        assert (result.columns()[f"sma_{window}"][window - 1 :] == 123.45).all()
    assert (result.drawdown == 0.0).all()
    assert (result.return_[1:] == 0.0).all()


def test_flat_prices_after_a_missing_first_close_average_exactly_at_their_level() -> None:
    # The sums are centred on the first finite close, not on the first close: centred on
    # nothing (the missing close gives no centre), 0.1 summed 20 times is not 2.0 exactly.
    close = np.full(400, 0.1)
    close[[0, 150]] = np.nan

    result = compute_indicators(close, periods_per_year=365)

    ends = np.arange(len(close))
    for window in SMA_WINDOWS:
        sma = result.columns()[f"sma_{window}"]
        # a window is defined when it holds neither missing close
        expected = (ends >= window) & ~((ends - window < 150) & (ends >= 150))
        assert (~np.isnan(sma) == expected).all(), window
        assert (sma[expected] == 0.1).all(), window


def test_volatility_is_exactly_zero_over_a_flat_stretch_inside_a_volatile_series() -> None:
    # The flat stretch straddles index 256, where the running sums restart.
    close = random_walk(600, seed=2)
    close[200:340] = close[200]

    result = compute_indicators(close, periods_per_year=365)

    for window in VOLATILITY_WINDOWS:
        volatility = result.columns()[f"volatility_{window}"]
        assert (volatility[200 + window : 340] == 0.0).all()
        assert (volatility[340:] > 0.0).all()


def test_drawdown_matches_hand_worked_values() -> None:
    result = compute_indicators(np.array([100.0, 120.0, 90.0, 130.0, 65.0]), periods_per_year=1)

    np.testing.assert_allclose(result.drawdown, [0.0, 0.0, -0.25, 0.0, -0.5], rtol=1e-15)


def test_moving_averages_match_hand_worked_values_on_a_straight_line() -> None:
    # Closes 1, 2, 3, ...: the mean of the w closes ending at index i is i + 1 - (w - 1) / 2.
    close = np.arange(1.0, 601.0)

    result = compute_indicators(close, periods_per_year=365)

    for window in SMA_WINDOWS:
        sma = result.columns()[f"sma_{window}"]
        expected = np.arange(600) + 1 - (window - 1) / 2
        assert np.isnan(sma[: window - 1]).all()
        np.testing.assert_allclose(sma[window - 1 :], expected[window - 1 :], rtol=1e-13)
    assert result.sma_20[19] == pytest.approx(10.5)


@pytest.mark.parametrize("ppy", [365.0, 252.0 * 24])
def test_indicators_match_pandas_on_a_seeded_random_walk(ppy: float) -> None:
    close = random_walk(3000, seed=3, level=30_000.0)

    result = compute_indicators(close, periods_per_year=ppy)

    for name, expected in pandas_indicators(close, ppy).items():
        np.testing.assert_allclose(result.columns()[name], expected, rtol=1e-9, err_msg=name)


def test_windows_holding_a_missing_close_are_undefined_as_in_pandas() -> None:
    close = random_walk(1500, seed=4)
    close[[0, 500, 1200]] = np.nan

    result = compute_indicators(close, periods_per_year=365)

    for name, expected in pandas_indicators(close, 365).items():
        np.testing.assert_allclose(result.columns()[name], expected, rtol=1e-9, err_msg=name)
    assert not np.isnan(result.volatility_90[1300:]).any()


def test_zero_and_negative_closes_give_nan_rather_than_infinities_or_warnings() -> None:
    close = np.concatenate([random_walk(50, seed=5), [0.0, 40.0, -5.0], random_walk(250, seed=6)])

    result = compute_indicators(close, periods_per_year=365)

    for name, values in result.columns().items():
        assert not np.isinf(values).any(), name
    assert np.isnan(result.return_[51])  # 40 / 0
    assert np.isnan(result.volatility_7[50:60]).all()
    assert not np.isnan(result.volatility_7[60:]).any()
    assert math.isfinite(result.sma_200[-1])


def test_a_single_candle_has_a_zero_drawdown_and_nothing_else() -> None:
    result = compute_indicators(np.array([42.0]), periods_per_year=365)

    for name, values in result.columns().items():
        assert len(values) == 1
        if name == "drawdown":
            assert values[0] == 0.0
        else:
            assert np.isnan(values[0]), name


def test_an_empty_series_gives_empty_columns() -> None:
    result = compute_indicators(np.empty(0), periods_per_year=365)

    assert len(result) == 0
    assert all(len(values) == 0 for values in result.columns().values())


def test_columns_use_the_public_names_in_a_fixed_order() -> None:
    result = compute_indicators(random_walk(10, seed=7), periods_per_year=365)

    assert tuple(result.columns()) == INDICATOR_NAMES
    assert result.columns()["return"] is result.return_
    assert result.columns()["sma_200"] is result.sma_200


@pytest.mark.parametrize("gap", ["clean", "missing close"])
def test_many_small_incremental_steps_equal_one_full_recompute(gap: str) -> None:
    close = random_walk(1500, seed=8)
    if gap == "missing close":
        close[[3, 700]] = np.nan
    full = compute_indicators(close, periods_per_year=365)
    rng = np.random.default_rng(9)

    state, pieces, start = IndicatorState.empty(), [], 0
    while start < len(close):
        new = close[start : start + int(rng.integers(1, 14))]
        pieces.append(compute_indicators(new, periods_per_year=365, state=state))
        state, start = state.advance(new), start + len(new)

    assert len(pieces) > 100
    assert_same_columns(concatenate(pieces), full, rtol=1e-12)


def test_compute_tail_with_the_last_lookback_closes_equals_a_full_recompute() -> None:
    close = random_walk(1000, seed=10)
    full = compute_indicators(close, periods_per_year=252)
    split = 700

    tail = compute_tail(
        close[split - LOOKBACK : split],
        close[split:],
        periods_per_year=252,
        prior_peak=float(close[:split].max()),
    )
    longer_history = compute_tail(
        close[:split], close[split:], periods_per_year=252, prior_peak=float(close[:split].max())
    )

    assert len(tail) == len(close) - split
    assert_same_columns(tail, rows_from(full, split), 1e-12)
    assert_same_columns(longer_history, tail, rtol=0.0)


def test_a_tail_far_into_a_long_series_matches_the_full_recompute() -> None:
    close = random_walk(300_000, seed=11, sigma=0.001)
    full = compute_indicators(close, periods_per_year=365 * 24)
    split = len(close) - 50

    tail = compute_tail(
        close[split - LOOKBACK : split],
        close[split:],
        periods_per_year=365 * 24,
        prior_peak=float(close[:split].max()),
    )

    assert_same_columns(tail, rows_from(full, split), 1e-12)


def test_compute_tail_with_a_short_history_treats_it_as_the_start_of_the_series() -> None:
    close = random_walk(60, seed=12)
    full = compute_indicators(close, periods_per_year=365)

    tail = compute_tail(close[:30], close[30:], periods_per_year=365, prior_peak=close[:30].max())

    assert np.isnan(tail.sma_50[:19]).all()
    assert_same_columns(tail, rows_from(full, 30), 1e-12)


def test_drawdown_of_a_tail_measures_from_the_peak_before_it() -> None:
    tail = compute_tail(
        np.array([100.0]), np.array([100.0, 150.0, 250.0]), periods_per_year=1, prior_peak=200.0
    )

    np.testing.assert_allclose(tail.drawdown, [-0.5, -0.25, 0.0], rtol=1e-15)


@pytest.fixture
def paths_taken(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Which of compute_tail's two paths ran, in call order: "short tail" or "general"."""
    taken: list[str] = []

    def spy(name: str, real: Callable[..., Indicators]) -> Callable[..., Indicators]:
        def wrapper(*args: Any) -> Indicators:
            taken.append(name)
            return real(*args)

        return wrapper

    monkeypatch.setattr(indicators, "_short_tail", spy("short tail", indicators._short_tail))
    monkeypatch.setattr(indicators, "_compute", spy("general", indicators._compute))
    return taken


def tail_of(close: FloatArray, m: int, ppy: float = 365.0 * 1440) -> Indicators:
    """compute_tail for the last m closes, given the LOOKBACK closes before them."""
    split = len(close) - m
    return compute_tail(
        close[split - LOOKBACK : split],
        close[split:],
        periods_per_year=ppy,
        prior_peak=float(np.fmax.reduce(close[:split])),
    )


@pytest.mark.parametrize("m", [1, 2, 13, _SHORT_TAIL])
@pytest.mark.parametrize(("seed", "level", "sigma"), [(20, 100.0, 0.02), (21, 60_000.0, 0.001)])
def test_a_short_clean_tail_takes_the_short_path_and_equals_the_full_recompute(
    paths_taken: list[str], m: int, seed: int, level: float, sigma: float
) -> None:
    close = random_walk(5000, seed=seed, level=level, sigma=sigma)
    ppy = 365.0 * 1440
    full = compute_indicators(close, periods_per_year=ppy)
    paths_taken.clear()

    tail = tail_of(close, m, ppy)

    assert paths_taken == ["short tail"]
    assert len(tail) == m
    assert_same_columns(tail, rows_from(full, len(close) - m), rtol=1e-12)
    assert not any(np.isnan(values).any() for values in tail.columns().values())


def test_one_past_the_short_tail_limit_takes_the_general_path_with_the_same_results(
    paths_taken: list[str],
) -> None:
    close = random_walk(3000, seed=22)
    full = compute_indicators(close, periods_per_year=365)
    paths_taken.clear()

    at_limit = tail_of(close, _SHORT_TAIL, 365.0)
    past_limit = tail_of(close, _SHORT_TAIL + 1, 365.0)

    assert paths_taken == ["short tail", "general"]
    assert_same_columns(at_limit, rows_from(full, len(close) - _SHORT_TAIL), rtol=1e-12)
    assert_same_columns(past_limit, rows_from(full, len(close) - _SHORT_TAIL - 1), rtol=1e-12)
    assert_same_columns(rows_from(past_limit, 1), at_limit, rtol=1e-12)


def test_a_short_tail_of_flat_prices_has_exactly_zero_volatility_and_level_averages(
    paths_taken: list[str],
) -> None:
    close = np.full(LOOKBACK + 10, 123.45)

    tail = tail_of(close, 10)

    assert paths_taken == ["short tail"]
    for window in VOLATILITY_WINDOWS:
        assert (tail.columns()[f"volatility_{window}"] == 0.0).all()
    for window in SMA_WINDOWS:
        assert (tail.columns()[f"sma_{window}"] == 123.45).all()
    assert (tail.drawdown == 0.0).all()
    assert (tail.return_ == 0.0).all()
    assert (tail.log_return == 0.0).all()


def test_a_short_tail_after_a_volatile_stretch_turns_flat_has_exactly_zero_volatility(
    paths_taken: list[str],
) -> None:
    # The last 100 closes are flat; the running sums carry the volatile returns before them.
    close = random_walk(1000, seed=23)
    close[-100:] = 87.654321
    m = 10
    full = compute_indicators(close, periods_per_year=365.0 * 1440)
    paths_taken.clear()

    tail = tail_of(close, m)

    assert paths_taken == ["short tail"]
    assert (tail.volatility_7 == 0.0).all()
    assert (tail.volatility_30 == 0.0).all()
    assert (tail.volatility_90 == 0.0).all()
    assert (tail.sma_50 == 87.654321).all()
    assert (tail.sma_200 > 0.0).all()
    assert_same_columns(tail, rows_from(full, len(close) - m), rtol=1e-12)


@pytest.mark.parametrize("growth", [1.01, 1.001, 1.0001, 0.999])
def test_a_short_tail_of_a_steady_trend_has_a_negligible_volatility_never_nan(
    paths_taken: list[str], growth: float
) -> None:
    # Equal log returns: the one-pass variance cancels to rounding noise, which may come out
    # negative before the clip.
    close = 100.0 * growth ** np.arange(LOOKBACK + 30.0)

    tail = tail_of(close, 30)

    assert paths_taken == ["short tail"]
    for window in VOLATILITY_WINDOWS:
        volatility = tail.columns()[f"volatility_{window}"]
        assert not np.isnan(volatility).any()
        assert (volatility < 1e-5).all()


@pytest.mark.parametrize(
    ("where", "value"),
    [
        ("new", math.nan),
        ("previous", math.nan),
        ("new", 0.0),
        ("previous", -5.0),
        ("new", math.inf),
    ],
)
def test_a_tail_holding_a_bad_close_falls_back_to_the_general_path(
    paths_taken: list[str], where: str, value: float
) -> None:
    close = random_walk(1000, seed=24)
    m = 5
    close[-2 if where == "new" else -m - 30] = value
    full = compute_indicators(close, periods_per_year=365.0 * 1440)
    paths_taken.clear()

    tail = tail_of(close, m)

    assert paths_taken == ["general"]
    assert_same_columns(tail, rows_from(full, len(close) - m), rtol=1e-12)
    # Either bad close falls inside the windows of the last two rows.
    assert np.isnan(tail.volatility_90[-2:]).all()


@pytest.mark.parametrize("history", [0, 1, LOOKBACK - 1])
def test_a_tail_with_fewer_than_lookback_previous_closes_falls_back_to_the_general_path(
    paths_taken: list[str], history: int
) -> None:
    close = random_walk(history + 3, seed=25)
    full = compute_indicators(close, periods_per_year=365)
    paths_taken.clear()

    tail = compute_tail(
        close[:history],
        close[history:],
        periods_per_year=365,
        prior_peak=float(close[:history].max()) if history else None,
    )

    assert paths_taken == ["general"]
    assert_same_columns(tail, rows_from(full, history), rtol=1e-12)


def test_no_new_closes_give_empty_columns(paths_taken: list[str]) -> None:
    tail = compute_tail(
        random_walk(LOOKBACK, seed=26), np.empty(0), periods_per_year=365, prior_peak=None
    )

    assert paths_taken == ["general"]
    assert len(tail) == 0
    assert all(len(values) == 0 for values in tail.columns().values())


def test_state_after_a_series_equals_the_state_advanced_step_by_step() -> None:
    close = random_walk(500, seed=13)

    state = IndicatorState.empty()
    for start in range(0, 500, 7):
        state = state.advance(close[start : start + 7])
    direct = IndicatorState.after(close)

    np.testing.assert_array_equal(state.previous, close[-LOOKBACK:])
    np.testing.assert_array_equal(direct.previous, close[-LOOKBACK:])
    assert state.peak == direct.peak == close.max()


def test_empty_state_has_no_history_and_no_peak() -> None:
    state = IndicatorState.empty()

    assert len(state.previous) == 0
    assert math.isnan(state.peak)


@pytest.mark.parametrize(
    ("interval_seconds", "trades_every_day", "expected"),
    [
        (86_400, True, 365.0),
        (86_400, False, 252.0),
        (3_600, True, 365.0 * 24),
        (60, False, 252.0 * 1440),
    ],
)
def test_periods_per_year_is_days_per_year_times_bars_per_day(
    interval_seconds: int, trades_every_day: bool, expected: float
) -> None:
    assert periods_per_year(interval_seconds, trades_every_day) == expected


@pytest.mark.parametrize("interval_seconds", [0, -60])
def test_periods_per_year_rejects_a_non_positive_interval(interval_seconds: int) -> None:
    with pytest.raises(ValueError, match="interval_seconds"):
        periods_per_year(interval_seconds, True)


@pytest.mark.parametrize("ppy", [0.0, -1.0, math.nan, math.inf])
def test_compute_indicators_rejects_a_periods_per_year_that_is_not_positive(ppy: float) -> None:
    with pytest.raises(ValueError, match="periods_per_year"):
        compute_indicators(np.ones(3), periods_per_year=ppy)


def test_price_ratios_beyond_float_range_leave_only_their_windows_undefined(
    paths_taken: list[str],
) -> None:
    """A close of 5e-324 is valid (positive, finite), but its ratios to the closes around
    it leave float64: log returns of -inf and +inf. The volatility windows holding them are
    NaN, as for a missing close (and no RuntimeWarning, an error in this suite); every
    window without them keeps a value, the rows before are untouched, and a tail equals the
    full recompute whether the jump lies in the closes before it or in the tail itself."""
    close = random_walk(320, seed=31)
    close[281] = 5e-324  # the smallest float above zero
    ppy = 365.0

    full = compute_indicators(close, periods_per_year=ppy)

    assert (full.log_return[281], full.log_return[282]) == (-math.inf, math.inf)
    for window, values in zip(
        VOLATILITY_WINDOWS, (full.volatility_7, full.volatility_30, full.volatility_90), strict=True
    ):
        assert not np.isnan(values[window:281]).any(), window
        assert np.isnan(values[281 : 282 + window]).all(), window
        assert not np.isnan(values[282 + window :]).any(), window
    before = compute_indicators(close[:281], periods_per_year=ppy)
    for name, values in before.columns().items():
        np.testing.assert_array_equal(full.columns()[name][:281], values, err_msg=name)
    paths_taken.clear()
    tail = tail_of(close, 10, ppy)  # the jump among the LOOKBACK closes before the tail
    assert paths_taken == ["short tail", "general"]
    assert_same_columns(tail, rows_from(full, 310), rtol=1e-12)
    paths_taken.clear()
    tail = tail_of(close[:285], 5, ppy)  # the jump inside the tail
    full = compute_indicators(close[:285], periods_per_year=ppy)
    assert paths_taken == ["short tail", "general", "general"]
    assert_same_columns(tail, rows_from(full, 280), rtol=1e-12)


@pytest.mark.parametrize(("one", "other"), [(1e306, 3e306), (3e306, 1e306), (1e307, 1.7e308)])
def test_closes_near_the_float_maximum_have_finite_moving_averages_on_both_paths(
    paths_taken: list[str], one: float, other: float
) -> None:
    """Closes taking turns at `one` and `other` are valid (positive, finite), and every
    moving average window holds as many of each. Running sums of a few hundred such closes
    less a centre (the first or the last close: below or above the others) leave float64 (inf,
    inf - inf = NaN, and RuntimeWarnings, errors in this suite) unless they are summed scaled
    down; the short tail equals the full recompute."""
    close = np.where(np.arange(LOOKBACK + 10) % 2 == 0, one, other)
    middle = one / 2 + other / 2

    full = compute_indicators(close, periods_per_year=365.0)

    for window, average in zip(SMA_WINDOWS, (full.sma_20, full.sma_50, full.sma_200), strict=True):
        assert np.isnan(average[: window - 1]).all(), window
        np.testing.assert_allclose(average[window - 1 :], middle, rtol=1e-12, err_msg=str(window))
    paths_taken.clear()
    tail = tail_of(close, 10, 365.0)
    assert paths_taken == ["short tail"]
    assert_same_columns(tail, rows_from(full, LOOKBACK), rtol=1e-12)
