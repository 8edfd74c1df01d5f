"""Tests for ROI as of the latest close."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from numpy.typing import NDArray

from marketdata.analytics.roi import ROI_KEYS, Anchor, anchors, positions, roi

DAY = 86_400
HORIZON_DAYS = {"1d": 1, "7d": 7, "30d": 30, "90d": 90, "180d": 180, "365d": 365}


def epoch(year: int, month: int, day: int, hour: int = 0) -> int:
    return int(datetime(year, month, day, hour, tzinfo=UTC).timestamp())


def daily(first: int, days: int) -> NDArray[np.int64]:
    return first + np.arange(days, dtype=np.int64) * DAY


def pandas_roi(ts: NDArray[np.int64], close: NDArray[np.float64]) -> dict[str, float | None]:
    """The same ROI computed independently with pandas `asof` and boolean selection."""
    s = pd.Series(close, index=pd.DatetimeIndex(pd.to_datetime(ts, unit="s", utc=True)))
    latest = s.index[-1]
    cutoffs = pd.DatetimeIndex([latest - pd.Timedelta(days=d) for d in HORIZON_DAYS.values()])
    found = s.asof(cutoffs)
    assert isinstance(found, pd.Series)
    then = dict(zip(HORIZON_DAYS, found.to_numpy().tolist(), strict=True))
    before_year = s[s.index < pd.Timestamp(year=latest.year, month=1, day=1, tz="UTC")]
    then["ytd"] = float(before_year.to_numpy()[-1]) if len(before_year) else math.nan
    then["inception"] = float(close[0])
    now = float(close[-1])
    return {k: None if math.isnan(v) else now / v - 1 for k, v in then.items()}


def assert_roi_equal(actual: dict[str, float | None], expected: dict[str, float | None]) -> None:
    assert list(actual) == list(expected)
    for key, value in expected.items():
        if value is None:
            assert actual[key] is None, key
        else:
            assert actual[key] == pytest.approx(value, rel=1e-12), key


def test_roi_matches_hand_worked_values_on_daily_candles() -> None:
    # Closes 100, 101, ...: the close h days before the latest (day 399, close 499) is 499 - h.
    ts = daily(epoch(2023, 1, 1), 400)  # 2023-01-01 .. 2024-02-04
    close = 100.0 + np.arange(400)

    result = roi(ts, close)

    for key, days in HORIZON_DAYS.items():
        assert result[key] == pytest.approx(499 / (499 - days) - 1, rel=1e-14), key
    assert result["ytd"] == pytest.approx(499 / 464 - 1, rel=1e-14)  # 2023-12-31 is day 364
    assert result["inception"] == pytest.approx(4.99 - 1, rel=1e-14)


def test_roi_keys_come_in_a_fixed_order() -> None:
    result = roi(daily(epoch(2024, 1, 1), 3), np.ones(3))

    assert tuple(result) == ROI_KEYS
    assert ROI_KEYS == ("1d", "7d", "30d", "90d", "180d", "365d", "ytd", "inception")


def test_roi_uses_the_last_candle_at_or_before_the_horizon_across_a_gap() -> None:
    ts = daily(epoch(2024, 3, 1), 20)
    close = 10.0 + np.arange(20)
    missing_week_ago = np.arange(20) != 12  # the candle exactly 7 days before the latest

    result = roi(ts[missing_week_ago], close[missing_week_ago])

    assert result["7d"] == pytest.approx(29 / 21 - 1, rel=1e-14)  # falls back to day 11
    assert result["1d"] == pytest.approx(29 / 28 - 1, rel=1e-14)


def test_roi_over_intraday_candles_looks_back_whole_days() -> None:
    ts = epoch(2024, 6, 1) + np.arange(0, 24 * 10, dtype=np.int64) * 3_600
    close = 50.0 + np.arange(len(ts))

    result = roi(ts, close)

    last = close[-1]
    assert result["1d"] == pytest.approx(last / close[-25] - 1, rel=1e-14)
    assert result["7d"] == pytest.approx(last / close[-1 - 7 * 24] - 1, rel=1e-14)
    assert result["30d"] is None


def test_ytd_uses_the_last_close_of_the_previous_year_across_a_gap() -> None:
    ts = np.array([epoch(2023, 12, 28), epoch(2023, 12, 29), epoch(2024, 1, 2), epoch(2024, 1, 3)])
    close = np.array([90.0, 80.0, 100.0, 120.0])

    assert roi(ts, close)["ytd"] == pytest.approx(0.5, rel=1e-14)


def test_ytd_on_new_years_day_compares_with_new_years_eve() -> None:
    ts = daily(epoch(2024, 12, 30), 3)  # Dec 30, Dec 31, Jan 1
    close = np.array([100.0, 200.0, 250.0])

    assert roi(ts, close)["ytd"] == pytest.approx(0.25, rel=1e-14)


def test_ytd_is_none_when_history_starts_this_year() -> None:
    result = roi(daily(epoch(2024, 1, 1), 40), np.linspace(1.0, 2.0, 40))

    assert result["ytd"] is None
    assert result["inception"] == pytest.approx(1.0)


def test_a_single_candle_has_zero_inception_roi_and_nothing_else() -> None:
    result = roi(np.array([epoch(2024, 7, 4)]), np.array([123.0]))

    assert result["inception"] == 0.0
    assert all(result[key] is None for key in ROI_KEYS if key != "inception")


def test_an_empty_series_has_no_roi_at_all() -> None:
    result = roi(np.empty(0, dtype=np.int64), np.empty(0))

    assert tuple(result) == ROI_KEYS
    assert all(value is None for value in result.values())


def test_roi_against_a_zero_or_missing_close_is_none() -> None:
    ts = daily(epoch(2024, 1, 1), 10)
    close = np.arange(1.0, 11.0)
    close[0] = 0.0
    close[8] = np.nan

    result = roi(ts, close)

    assert result["inception"] is None
    assert result["1d"] is None
    assert result["7d"] == pytest.approx(10 / 3 - 1)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_roi_matches_pandas_on_a_random_walk_with_gaps(seed: int) -> None:
    rng = np.random.default_rng(seed)
    days = np.arange(900)
    kept = days[rng.random(900) > 0.25]
    ts = (epoch(2021, 11, 3) + kept * DAY).astype(np.int64)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.03, len(ts))))

    assert_roi_equal(roi(ts, close), pandas_roi(ts, close))


def test_roi_matches_pandas_when_history_is_shorter_than_the_long_horizons() -> None:
    ts = daily(epoch(2024, 2, 10), 100)
    close = 100 * np.exp(np.cumsum(np.random.default_rng(4).normal(0, 0.03, 100)))

    result = roi(ts, close)

    assert_roi_equal(result, pandas_roi(ts, close))
    assert result["180d"] is None
    assert result["90d"] is not None


def test_columns_of_different_lengths_are_rejected() -> None:
    with pytest.raises(ValueError, match="same length"):
        roi(daily(epoch(2024, 1, 1), 3), np.ones(2))


def test_anchors_are_shared_between_calls_for_one_latest_candle_and_cannot_be_changed() -> None:
    """Cached anchors: a caller that changed them would change every later ROI."""
    latest = 1_700_006_400
    marks = anchors(latest)
    assert anchors(latest) is marks
    with pytest.raises(TypeError):
        marks["1d"] = Anchor(0)  # type: ignore[index]
    assert positions(np.array([latest - 2 * 86_400, latest], dtype=np.int64), latest) == {
        "1d": 1,
        "7d": 0,
        "30d": 0,
        "90d": 0,
        "180d": 0,
        "365d": 0,
        "ytd": 0,
    }
