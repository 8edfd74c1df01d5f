"""Tests for weekly and monthly aggregates of daily candles."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from numpy.typing import NDArray

from marketdata.analytics.aggregates import (
    AggregateBars,
    Period,
    aggregate,
    period_before,
    period_starts,
)

DAY = 86_400

Ints = NDArray[np.int64]
Floats = NDArray[np.float64]
Columns = tuple[Ints, Floats, Floats, Floats, Floats, Floats]


def epoch(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp())


def ladder(first_day: int, days: int) -> Columns:
    """Daily candles: open 10+i, high 12+i, low 9+i, close 11+i, volume 1+i on day i."""
    i = np.arange(days, dtype=np.float64)
    ts = first_day + np.arange(days, dtype=np.int64) * DAY
    return ts, 10 + i, 12 + i, 9 + i, 11 + i, 1 + i


def random_candles(days: int, seed: int) -> Columns:
    """Seeded daily candles from 2022-12-20, ~30% of days and a whole month missing."""
    rng = np.random.default_rng(seed)
    day = np.arange(days)
    keep = (rng.random(days) > 0.3) & ((day < 100) | (day > 140))
    ts = (epoch(2022, 12, 20) + day * DAY)[keep].astype(np.int64)
    n = len(ts)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    open_ = close * np.exp(rng.normal(0, 0.01, n))
    volume = rng.random(n) * 1_000
    volume[ts < epoch(2023, 1, 1)] = 0.0  # the first month and weeks have no volume at all
    return (
        ts,
        open_,
        np.maximum(open_, close) * 1.01,
        np.minimum(open_, close) * 0.99,
        close,
        volume,
    )


def test_weeks_match_hand_worked_values() -> None:
    # Wednesday 2024-01-03 to Wednesday 2024-01-10: five days in the week of Monday January 1,
    # three in the week of January 8. Typical price (high + low + close) / 3 = 32/3 + i.
    bars = aggregate(*ladder(epoch(2024, 1, 3), 8), period="week")

    assert bars.period_start.tolist() == [epoch(2024, 1, 1), epoch(2024, 1, 8)]
    assert bars.open.tolist() == [10.0, 15.0]
    assert bars.high.tolist() == [16.0, 19.0]
    assert bars.low.tolist() == [9.0, 14.0]
    assert bars.close.tolist() == [15.0, 18.0]
    assert bars.volume.tolist() == [15.0, 21.0]
    # sum((32/3 + i)(1 + i)): 160 + 40 over i = 0..4; 224 + 128 over i = 5..7.
    np.testing.assert_allclose(bars.vwap, [200 / 15, 352 / 21], rtol=1e-14)
    assert bars.bars.tolist() == [5, 3]
    np.testing.assert_allclose(bars.return_, [np.nan, 18 / 15 - 1], rtol=1e-15)


def test_months_with_missing_days_have_fewer_bars() -> None:
    ts = np.array([epoch(2024, 1, 30), epoch(2024, 1, 31), epoch(2024, 2, 1), epoch(2024, 3, 1)])
    ones = np.ones(4)
    close = np.array([10.0, 12.0, 9.0, 18.0])

    bars = aggregate(ts, ones, ones * 20, ones, close, ones, period="month")

    assert bars.period_start.tolist() == [epoch(2024, 1, 1), epoch(2024, 2, 1), epoch(2024, 3, 1)]
    assert bars.bars.tolist() == [2, 1, 1]
    assert bars.close.tolist() == [12.0, 9.0, 18.0]
    np.testing.assert_allclose(bars.return_, [np.nan, 9 / 12 - 1, 1.0], rtol=1e-15)


def test_a_week_spanning_new_year_is_one_week_but_two_months() -> None:
    columns = ladder(epoch(2024, 12, 30), 7)  # Monday to Sunday

    weeks = aggregate(*columns, period="week")
    months = aggregate(*columns, period="month")

    assert weeks.period_start.tolist() == [epoch(2024, 12, 30)]
    assert weeks.bars.tolist() == [7]
    assert months.period_start.tolist() == [epoch(2024, 12, 1), epoch(2025, 1, 1)]
    assert months.bars.tolist() == [2, 5]


def test_period_starts_fall_on_monday_and_the_first_for_any_time_of_day() -> None:
    moments = [
        datetime(1969, 12, 31, 12, tzinfo=UTC) + timedelta(days=d, minutes=37 * d)
        for d in range(0, 800, 3)
    ]
    ts = np.array([int(m.timestamp()) for m in moments], dtype=np.int64)

    weeks = period_starts(ts, "week")
    months = period_starts(ts, "month")

    for moment, week, month in zip(moments, weeks.tolist(), months.tolist(), strict=True):
        monday = (moment - timedelta(days=moment.weekday())).date()
        assert datetime.fromtimestamp(week, UTC) == datetime(*monday.timetuple()[:3], tzinfo=UTC)
        assert datetime.fromtimestamp(month, UTC) == datetime(
            moment.year, moment.month, 1, tzinfo=UTC
        )


@pytest.mark.parametrize(("period", "rule"), [("week", "W-MON"), ("month", "MS")])
def test_aggregates_match_pandas_resample_on_candles_with_missing_days(
    period: Period, rule: str
) -> None:
    candles = random_candles(900, seed=1)
    ts, open_, high, low, close, volume = candles
    frame = pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume},
        index=pd.to_datetime(ts, unit="s", utc=True),
    )
    frame["traded"] = (frame.high + frame.low + frame.close) / 3 * frame.volume
    grouped = frame.resample(rule, label="left", closed="left")
    expected = grouped.agg(
        {
            "open": "first",
            "high": "max",
            "low": "min",
            "close": "last",
            "volume": "sum",
            "traded": "sum",
        }
    )
    expected["bars"] = grouped.size()
    expected = expected[expected.bars > 0]  # pandas keeps empty periods; we have no row for them

    bars = aggregate(*candles, period=period)

    assert len(expected) < len(grouped.size())  # the data really has empty periods
    starts = [int(moment.timestamp()) for moment in expected.index]
    assert bars.period_start.tolist() == starts
    for name in ("open", "high", "low", "close", "volume", "bars"):
        np.testing.assert_allclose(bars.columns()[name], expected[name], rtol=1e-12, err_msg=name)
    vwap = (expected.traded / expected.volume).where(expected.volume > 0)
    np.testing.assert_allclose(bars.vwap, vwap, rtol=1e-12)
    np.testing.assert_allclose(bars.return_, expected.close.pct_change(), rtol=1e-12)
    assert np.isnan(bars.vwap[0])


def test_vwap_is_nan_when_a_period_has_no_volume() -> None:
    ts, open_, high, low, close, _ = ladder(epoch(2024, 1, 1), 14)
    volume = np.where(np.arange(14) < 7, 0.0, 2.0)

    bars = aggregate(ts, open_, high, low, close, volume, period="week")

    assert np.isnan(bars.vwap[0])
    assert bars.vwap[1] == pytest.approx(np.mean((high + low + close)[7:] / 3))


def test_a_single_candle_makes_one_period() -> None:
    bars = aggregate(*ladder(epoch(2024, 5, 15), 1), period="month")

    assert bars.period_start.tolist() == [epoch(2024, 5, 1)]
    assert (bars.open[0], bars.high[0], bars.low[0], bars.close[0]) == (10.0, 12.0, 9.0, 11.0)
    assert bars.vwap[0] == pytest.approx(32 / 3)
    assert bars.bars.tolist() == [1]
    assert np.isnan(bars.return_[0])


def test_no_candles_make_no_periods() -> None:
    empty = np.empty(0)

    bars = aggregate(np.empty(0, dtype=np.int64), empty, empty, empty, empty, empty, "week")

    assert len(bars) == 0
    assert all(len(column) == 0 for column in bars.columns().values())
    assert bars.period_start.dtype == np.int64
    assert bars.bars.dtype == np.int64
    assert {bars.columns()[name].dtype for name in PRICE_COLUMNS} == {np.dtype(np.float64)}


def test_plain_integer_lists_aggregate_into_int64_starts_and_float64_prices() -> None:
    """Columns given as Python lists of whole numbers come back with the documented dtypes
    (a month's VWAP of whole prices is no whole number either)."""
    day = 86_400
    start = epoch(2024, 1, 1)
    ts = [start, start + day, start + 40 * day]  # two in January, one in February
    bars = aggregate(ts, [1, 2, 3], [4, 5, 6], [1, 1, 1], [2, 3, 4], [1, 2, 3], "month")

    assert bars.period_start.dtype == bars.bars.dtype == np.int64
    assert {bars.columns()[name].dtype for name in PRICE_COLUMNS} == {np.dtype(np.float64)}
    assert bars.close.tolist() == [3.0, 4.0]
    assert bars.vwap[0] == pytest.approx((7 / 3 * 1 + 3 * 2) / 3)


PRICE_COLUMNS = ("open", "high", "low", "close", "volume", "vwap", "return")


def test_columns_use_public_names_and_int64_for_starts_and_counts() -> None:
    bars = aggregate(*ladder(epoch(2024, 1, 1), 20), period="week")

    assert list(bars.columns()) == [
        "period_start", "open", "high", "low", "close", "volume", "vwap", "bars", "return",
    ]  # fmt: skip
    assert bars.period_start.dtype == np.int64
    assert bars.bars.dtype == np.int64
    assert bars.columns()["return"] is bars.return_


def test_an_unknown_period_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown period 'year'"):
        aggregate(*ladder(epoch(2024, 1, 1), 3), period="year")  # type: ignore[arg-type]


def test_columns_of_different_lengths_are_rejected() -> None:
    ts, open_, high, low, close, volume = ladder(epoch(2024, 1, 1), 3)

    with pytest.raises(ValueError, match="same length"):
        aggregate(ts, open_, high, low, close[:2], volume, period="week")


def test_aggregate_bars_are_frozen() -> None:
    bars = aggregate(*ladder(epoch(2024, 1, 1), 3), period="week")

    with pytest.raises(AttributeError):
        bars.close = bars.open  # type: ignore[misc]
    assert isinstance(bars, AggregateBars)


def test_period_before_steps_back_whole_weeks_and_calendar_months():
    def at(*args: int) -> int:
        return int(datetime(*args, tzinfo=UTC).timestamp())

    wednesday = at(2024, 3, 13, 15, 30)
    assert period_before(wednesday, "week", 0) == at(2024, 3, 11)
    assert period_before(wednesday, "week", 2) == at(2024, 2, 26)
    assert period_before(wednesday, "month", 0) == at(2024, 3, 1)
    assert period_before(wednesday, "month", 3) == at(2023, 12, 1)
    assert period_before(wednesday, "month", 14) == at(2023, 1, 1)
    with pytest.raises(ValueError, match="unknown period"):
        period_before(wednesday, "year", 1)  # type: ignore[arg-type]
