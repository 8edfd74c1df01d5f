"""`verify`'s two tolerances, each on its own: prices are held to --tolerance and volume to
--volume-tolerance, whichever of the two is the tighter, each field right at and past its limit."""

from __future__ import annotations

import numpy as np
import pytest

from marketdata.domain import DAY, Candles, Interval
from marketdata.errors import InputError
from marketdata.verify import FIELDS, PRICE_FIELDS, compare, parse_tolerance, relative_difference

BASE = {"open": 100.0, "high": 104.0, "low": 96.0, "close": 102.0, "volume": 1000.0}


def one_bar(**values: float) -> Candles:
    row = {**BASE, **values}
    return Candles.from_rows("X-Y", Interval.D1, "test", [(DAY, *(row[f] for f in FIELDS))])


def scaled(field: str, difference: float) -> Candles:
    """Their bar: `field` smaller by the relative `difference` (|a-b| / max(|a|, |b|))."""
    return one_bar(**{field: BASE[field] * (1 - difference)})


def flagged(field: str, difference: float, *, tolerance: float, volume_tolerance: float):
    found = compare(
        one_bar(),
        scaled(field, difference),
        tolerance=tolerance,
        volume_tolerance=volume_tolerance,
    )
    return [m.field for m in found.mismatches]


@pytest.mark.parametrize("field", PRICE_FIELDS)
def test_a_price_is_held_to_the_price_tolerance_even_when_volume_s_is_tighter(field):
    # 1% apart: inside a 2% price tolerance although the volume tolerance is 0.1%
    assert flagged(field, 0.01, tolerance=0.02, volume_tolerance=0.001) == []
    assert flagged(field, 0.01, tolerance=0.005, volume_tolerance=0.5) == [field]


@pytest.mark.parametrize("field", PRICE_FIELDS)
def test_a_price_exactly_at_the_tolerance_agrees_and_just_past_it_does_not(field):
    assert flagged(field, 0.01, tolerance=0.01, volume_tolerance=0.0) == []
    assert flagged(field, 0.0101, tolerance=0.01, volume_tolerance=1.0) == [field]


def test_volume_is_held_to_the_volume_tolerance_even_when_the_price_one_is_tighter():
    assert flagged("volume", 0.03, tolerance=0.001, volume_tolerance=0.05) == []
    assert flagged("volume", 0.03, tolerance=0.5, volume_tolerance=0.02) == ["volume"]


def test_volume_exactly_at_its_tolerance_agrees_and_just_past_it_does_not():
    assert flagged("volume", 0.05, tolerance=0.0, volume_tolerance=0.05) == []
    assert flagged("volume", 0.0501, tolerance=1.0, volume_tolerance=0.05) == ["volume"]


def test_zero_tolerances_flag_any_difference_and_nothing_else():
    assert flagged("close", 1e-9, tolerance=0.0, volume_tolerance=0.0) == ["close"]
    assert flagged("volume", 1e-9, tolerance=0.0, volume_tolerance=0.0) == ["volume"]
    identical = compare(one_bar(), one_bar(), tolerance=0.0, volume_tolerance=0.0)
    assert (identical.compared, identical.mismatches) == (1, ())


def test_every_field_past_its_own_tolerance_is_reported_in_field_order():
    theirs = one_bar(**{f: BASE[f] * 0.9 for f in FIELDS})
    found = compare(one_bar(), theirs, tolerance=0.05, volume_tolerance=0.05)
    assert [m.field for m in found.mismatches] == list(FIELDS)
    assert all(m.diff == pytest.approx(0.1) for m in found.mismatches)
    assert [(m.ours, m.theirs) for m in found.mismatches] == [
        (BASE[f], pytest.approx(BASE[f] * 0.9)) for f in FIELDS
    ]


def test_relative_difference_is_over_the_larger_magnitude_and_zero_for_two_zeros():
    ours = np.array([0.0, 1.0, -2.0, 0.0, 4.0])
    theirs = np.array([0.0, 0.5, 2.0, 3.0, 4.0])
    assert relative_difference(ours, theirs).tolist() == [0.0, 0.5, 2.0, 1.0, 0.0]


def test_a_bare_1_is_a_tolerance_of_100_percent_and_a_bare_2_is_refused():
    assert parse_tolerance("1") == 1.0
    assert parse_tolerance("100%") == 1.0
    with pytest.raises(InputError, match="more than 100%"):
        parse_tolerance("1.5")


def test_the_summary_counts_values_and_candles_that_differ():
    from marketdata.domain import Window
    from marketdata.verify import Mismatch, VerifyReport

    def report(mismatches):
        return VerifyReport(
            "X-Y", Interval.D1, ("coinbase",), "kraken", Window(0, 3 * DAY), 2 * DAY,
            0.005, 0.05, 2, tuple(mismatches), (), (),
        )  # fmt: skip

    one = Mismatch(DAY, "close", 1.0, 2.0, 0.5)
    assert report([one]).summary() == (
        "X-Y 1d: 1 value differs in 1 of 2 candles from kraken, 0 only in ours, 0 only in kraken"
    )
    two = Mismatch(DAY, "open", 1.0, 2.0, 0.5)
    assert report([one, two]).summary().startswith("X-Y 1d: 2 values differ in 1 of 2 candles")
    assert report([]).summary() == "X-Y 1d: all 2 candles agree with kraken"
