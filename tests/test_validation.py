"""Every validation rule on its own: a row breaking exactly one rule is quarantined with that
rule's reason in `rejects` (through a whole run, on SQLite and PostgreSQL), and a row that
touches a rule's limit without crossing it is stored."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from marketdata.domain import DAY, Candles, Interval
from marketdata.pipeline import IngestRequest, run_ingest
from marketdata.providers import registry
from marketdata.storage.candles import read_candles
from marketdata.storage.engine import connect
from marketdata.storage.rejects import list_rejects
from marketdata.validation import validate
from tests.fakes.static import STATIC, StaticProvider

TODAY = 1_712_707_200  # 2024-04-10T00:00Z; the run's clock stands exactly here
NOW = datetime.fromtimestamp(TODAY, UTC)
BAD_TS = TODAY - 2 * DAY
GOOD = [
    (TODAY - 4 * DAY, 100.0, 110.0, 90.0, 105.0, 10.0),
    (TODAY - 3 * DAY, 105.0, 112.0, 101.0, 108.0, 12.0),
    (TODAY - DAY, 108.0, 111.0, 104.0, 109.0, 9.0),
    (TODAY, 109.0, 115.0, 107.0, 114.0, 11.0),  # ts == now: not in the future
]
NAN, INF = math.nan, math.inf

# (ts, open, high, low, close, volume) breaking exactly one rule, and that rule's reason
ONE_RULE_BROKEN = {
    "open is NaN": ((BAD_TS, NAN, 110.0, 90.0, 105.0, 10.0), "price not finite"),
    "high is infinite": ((BAD_TS, 100.0, INF, 90.0, 105.0, 10.0), "price not finite"),
    "low is NaN": ((BAD_TS, 100.0, 110.0, NAN, 105.0, 10.0), "price not finite"),
    "close is a null": ((BAD_TS, 100.0, 110.0, 90.0, None, 10.0), "price not finite"),
    "low is zero": ((BAD_TS, 100.0, 110.0, 0.0, 105.0, 10.0), "price not positive"),
    "low is negative": ((BAD_TS, 100.0, 110.0, -1.0, 105.0, 10.0), "price not positive"),
    "open and low are zero": ((BAD_TS, 0.0, 110.0, 0.0, 105.0, 10.0), "price not positive"),
    "close and low are negative": (
        (BAD_TS, 100.0, 110.0, -2.0, -1.0, 10.0),
        "price not positive",
    ),
    "every price is zero": ((BAD_TS, 0.0, 0.0, 0.0, 0.0, 10.0), "price not positive"),
    "volume is negative": (
        (BAD_TS, 100.0, 110.0, 90.0, 105.0, -0.5),
        "volume not finite or negative",
    ),
    "volume is NaN": ((BAD_TS, 100.0, 110.0, 90.0, 105.0, NAN), "volume not finite or negative"),
    "volume is infinite": (
        (BAD_TS, 100.0, 110.0, 90.0, 105.0, INF),
        "volume not finite or negative",
    ),
    "low above open": ((BAD_TS, 100.0, 110.0, 100.5, 105.0, 10.0), "low above open or close"),
    "low above close": ((BAD_TS, 105.0, 110.0, 100.5, 100.0, 10.0), "low above open or close"),
    "high below open": ((BAD_TS, 105.0, 104.5, 90.0, 100.0, 10.0), "high below open or close"),
    "high below close": ((BAD_TS, 100.0, 104.5, 90.0, 105.0, 10.0), "high below open or close"),
    "timestamp a second off the grid": (
        (BAD_TS + 1, 100.0, 110.0, 90.0, 105.0, 10.0),
        "timestamp not on the interval grid",
    ),
    "timestamp an hour off the daily grid": (
        (BAD_TS + 3600, 100.0, 110.0, 90.0, 105.0, 10.0),
        "timestamp not on the interval grid",
    ),
    "timestamp one bar in the future": (
        (TODAY + DAY, 100.0, 110.0, 90.0, 105.0, 10.0),
        "timestamp in the future",
    ),
    "timestamp two bars in the future": (
        (TODAY + 2 * DAY, 100.0, 110.0, 90.0, 105.0, 10.0),
        "timestamp in the future",
    ),
}


@pytest.fixture
def static_provider(monkeypatch):
    monkeypatch.setitem(registry.PROVIDERS, "static", STATIC)
    monkeypatch.setattr(StaticProvider, "ROWS", {})
    return StaticProvider.ROWS


@pytest.fixture
def make_app(app_factory):
    def build():
        app = app_factory(ingestion_provider="static", ingestion_lookback_days=10)
        app.clock = lambda: NOW
        return app

    return build


def ingest_rows(make_app, rows, rows_table):
    rows_table[("BTC-USD", Interval.D1)] = rows
    app = make_app()
    result = run_ingest(app, IngestRequest(symbols=["BTC-USD"]))
    with connect(app.engine(), app.target) as conn:
        rejected = list_rejects(conn, ["BTC-USD"])
        stored = read_candles(conn, "BTC-USD", Interval.D1)
    return result.outcomes[0], rejected, stored


def same(a, b):
    """Equal, with a missing value (NULL or NaN) equal only to a missing one."""
    if a is None or b is None or (isinstance(b, float) and math.isnan(b)):
        return (a is None or math.isnan(a)) and (b is None or math.isnan(b))
    return a == b


@pytest.mark.parametrize(("row", "reason"), ONE_RULE_BROKEN.values(), ids=ONE_RULE_BROKEN)
def test_a_row_breaking_one_rule_is_quarantined_with_that_rule_as_its_reason(
    make_app, static_provider, row, reason
):
    outcome, rejected, stored = ingest_rows(make_app, [*GOOD[:2], row, *GOOD[2:]], static_provider)
    assert (outcome.fetched, outcome.rejected, outcome.inserted) == (5, 1, 4)
    [reject] = rejected
    assert (reject.ts, reject.reason, reject.provider, reject.interval) == (
        row[0],
        reason,
        "static",
        "1d",
    )
    raw = (reject.open, reject.high, reject.low, reject.close, reject.volume)
    assert all(same(kept, given) for kept, given in zip(raw, row[1:], strict=True)), raw
    assert stored.ts.tolist() == [r[0] for r in GOOD]


def test_a_repeated_timestamp_keeps_the_first_row_and_quarantines_the_second(
    make_app, static_provider
):
    again = (GOOD[1][0], 106.0, 113.0, 102.0, 107.0, 13.0)
    outcome, rejected, stored = ingest_rows(
        make_app, [*GOOD[:2], again, *GOOD[2:]], static_provider
    )
    assert (outcome.rejected, outcome.inserted) == (1, 4)
    [reject] = rejected
    assert (reject.ts, reject.reason, reject.close) == (
        GOOD[1][0],
        "duplicate timestamp in batch",
        107.0,
    )
    assert stored.close.tolist() == [r[4] for r in GOOD]


def test_rows_on_every_limit_without_crossing_it_are_stored(make_app, static_provider):
    on_the_limits = [
        (TODAY - 3 * DAY, 100.0, 100.0, 100.0, 100.0, 0.0),  # flat bar, zero volume
        (TODAY - 2 * DAY, 100.0, 105.0, 100.0, 105.0, 1.0),  # low == open, high == close
        (TODAY - DAY, 105.0, 105.0, 99.0, 99.0, 1.0),  # high == open, low == close
        (TODAY, 1e-8, 1e-8, 1e-8, 1e-8, 1e12),  # a tiny positive price, ts == now
    ]
    outcome, rejected, stored = ingest_rows(make_app, on_the_limits, static_provider)
    assert (outcome.rejected, outcome.inserted) == (0, 4)
    assert rejected == []
    assert stored.ts.tolist() == [r[0] for r in on_the_limits]


def batch_of(*rows, interval=Interval.D1):
    return Candles.from_rows("BTC-USD", interval, "static", list(rows))


def test_a_row_breaking_several_rules_gets_the_first_reason_in_the_documented_order():
    rows = [
        (BAD_TS, NAN, 1.0, -1.0, 2.0, -1.0),  # finite, positive, volume, ordering
        (BAD_TS + DAY, 1.0, 2.0, -1.0, 2.0, -1.0),  # positive, volume
        (BAD_TS + 2 * DAY + 7, 3.0, 2.0, 2.5, 1.0, -1.0),  # volume, low, high, grid
        (BAD_TS + 3 * DAY + 7, 3.0, 2.0, 2.5, 1.0, 1.0),  # low, high, grid
        (BAD_TS + 4 * DAY + 7, 1.0, 0.5, 0.5, 1.0, 1.0),  # high, grid
        (TODAY + DAY + 7, 1.0, 2.0, 0.5, 1.0, 1.0),  # grid, future
    ]
    good, rejected = validate(batch_of(*rows), TODAY)
    assert len(good) == 0
    assert [r.reason for r in rejected] == [
        "price not finite",
        "price not positive",
        "volume not finite or negative",
        "low above open or close",
        "high below open or close",
        "timestamp not on the interval grid",
    ]


@pytest.mark.parametrize("interval", list(Interval), ids=str)
def test_the_grid_is_the_interval_s_own(interval):
    step = interval.seconds
    base = TODAY - 10 * DAY
    rows = [
        (base + k, 1.0, 1.0, 1.0, 1.0, 1.0) for k in (0, step, 2 * step + step // 2, 3 * step + 1)
    ]
    good, rejected = validate(batch_of(*rows, interval=interval), TODAY)
    assert good.ts.tolist() == [base, base + step]
    assert [r.ts for r in rejected] == [base + 2 * step + step // 2, base + 3 * step + 1]
    assert {r.reason for r in rejected} == {"timestamp not on the interval grid"}


def test_a_clean_batch_is_returned_whole_and_rejects_nothing():
    batch = batch_of(*GOOD)
    good, rejected = validate(batch, TODAY)
    assert rejected == []
    assert good is batch


def test_the_kept_rows_keep_their_order_and_values_around_a_rejected_one():
    rows = [*GOOD[:2], ONE_RULE_BROKEN["high below close"][0], *GOOD[2:]]
    good, rejected = validate(batch_of(*rows), TODAY)
    assert [tuple(r) for r in good.rows()] == GOOD
    assert [r.ts for r in rejected] == [BAD_TS]
    assert np.array_equal(good.volume, np.array([r[5] for r in GOOD]))


LIMITS = [
    (TODAY - 3 * DAY, 100.0, 100.0, 100.0, 100.0, 0.0),
    (TODAY - 2 * DAY, 100.0, 105.0, 100.0, 105.0, 1.0),
    (TODAY, 1e-8, 1e-8, 1e-8, 1e-8, 1e12),
]


@pytest.mark.parametrize(
    "rows",
    [[row] for row, _ in ONE_RULE_BROKEN.values()]
    + [[GOOD[0], row] for row, _ in ONE_RULE_BROKEN.values()]
    + [GOOD, LIMITS, [GOOD[0], GOOD[0]], []],
    ids=[f"{name}, alone" for name in ONE_RULE_BROKEN]
    + [f"{name}, after a good row" for name in ONE_RULE_BROKEN]
    + ["good rows", "rows on the limits", "a repeated timestamp", "no rows"],
)
def test_all_valid_says_what_validate_does(rows):
    # the tick's check of a re-fetched candle, row by row, must keep validate's rules
    from marketdata.validation import all_valid

    batch = batch_of(*rows)
    assert all_valid(batch, TODAY) is (not validate(batch, TODAY)[1])
