"""Stored indicators after writes that change history: corrections in the middle, a batch that
skips a stored bar, several gaps filled in one run. Each ends equal to a full recomputation,
and each changes something, so a recomputation left out would show."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from marketdata.derive import rebuild
from marketdata.domain import DAY, Interval
from marketdata.pipeline import IngestRequest, Mode, run_ingest
from marketdata.storage.candles import read_candles
from marketdata.storage.engine import connect
from tests.fakes.coinbase import FakeCoinbase
from tests.fakes.market import walk
from tests.fakes.server import serve
from tests.test_derive import assert_matches_full_recompute

TODAY = 1_712_707_200  # 2024-04-10T00:00Z
NOW = datetime(2024, 4, 10, 12, 0, tzinfo=UTC)
HISTORY = 260  # enough for the 200-bar average to be defined for the last 60 bars
FIRST = TODAY - (HISTORY - 1) * DAY


@pytest.fixture
def fake() -> FakeCoinbase:
    fake = FakeCoinbase()
    # a series that climbs, so a correction moves the running peak of every later drawdown
    fake.add("BTC-USD", DAY, walk(FIRST, DAY, HISTORY, seed=11, price=50.0))
    return fake


@pytest.fixture
def app(app_factory, fake):
    with serve(fake) as server:
        app = app_factory(coinbase_base_url=server.url, ingestion_lookback_days=HISTORY - 1)
        app.clock = lambda: NOW
        run_ingest(app, IngestRequest(symbols=["BTC-USD"]))
        yield app


def stored(app):
    with connect(app.engine(), app.target) as conn:
        return read_candles(conn, "BTC-USD", Interval.D1, with_indicators=True)


def correct(fake, index, factor):
    """The provider corrects the close (and the high with it) of bar `index`."""
    rows = fake.candles["BTC-USD"][DAY]
    ts, o, h, low, c, v = rows[index]
    close = round(c * factor, 2)
    rows[index] = (ts, o, max(h, close), min(low, close), close, v)


def drop_rows(app, timestamps):
    from sqlalchemy import delete

    from marketdata.storage.schema import candles

    with connect(app.engine(), app.target) as conn, conn.begin():
        conn.execute(
            delete(candles).where(
                candles.c.symbol == "BTC-USD",
                candles.c.ts.in_([datetime.fromtimestamp(int(t), UTC) for t in timestamps]),
            )
        )


def changed_rows(before, after, name):
    return int((~np.isclose(before.indicators[name], after.indicators[name], equal_nan=True)).sum())


def test_corrected_closes_in_the_middle_recompute_every_later_row(app, fake):
    before = stored(app)
    assert len(before) == HISTORY
    for index in (60, 61, 62):
        correct(fake, index, 1.6)  # above every earlier close: a new running peak
    result = run_ingest(
        app,
        IngestRequest(
            symbols=["BTC-USD"], since=FIRST + 60 * DAY, until=FIRST + 63 * DAY, mode=Mode.REPLAY
        ),
    )
    assert (result.rows_inserted, result.rows_updated) == (0, 3)
    after = stored(app)
    assert_matches_full_recompute(after)
    # the drawdown of rows far after the correction moved, and the 200-bar average at the end
    assert changed_rows(before, after, "drawdown") > 150
    assert changed_rows(before.take(slice(-5, None)), after.take(slice(-5, None)), "sma_200") == 5


def test_a_batch_that_leaves_out_a_stored_bar_recomputes_that_bar_too(app, fake):
    before = stored(app)
    rows = fake.candles["BTC-USD"][DAY]
    skipped = rows.pop(100)  # the provider no longer sends this bar; we keep ours
    correct(fake, 99, 0.7)  # the bar before it is corrected: the stored bar's return changes
    result = run_ingest(
        app,
        IngestRequest(symbols=["BTC-USD"], since=FIRST + 95 * DAY, until=FIRST + 105 * DAY),
    )
    assert result.outcomes[0].fetched == 9
    after = stored(app)
    assert len(after) == HISTORY and skipped[0] in after.ts.tolist()
    assert_matches_full_recompute(after)
    at = after.ts.tolist().index(skipped[0])
    assert after.indicators["return"][at] != before.indicators["return"][at]


def test_several_gaps_backfilled_in_one_run_with_corrected_values_equal_a_full_recompute(app, fake):
    before = stored(app)
    holes = [*range(40, 43), 120, *range(200, 205)]
    drop_rows(app, [before.ts[i] for i in holes])
    for index in holes:
        correct(fake, index, 1.05)
    result = run_ingest(app, IngestRequest(symbols=["BTC-USD"], mode=Mode.BACKFILL))
    assert result.rows_inserted == len(holes)
    after = stored(app)
    assert after.ts.tolist() == before.ts.tolist()
    assert_matches_full_recompute(after)
    assert changed_rows(before, after, "sma_50") > 100


def test_gaps_that_were_recomputed_around_then_backfilled_unchanged_equal_a_full_recompute(
    app, fake
):
    before = stored(app)
    holes = [30, *range(90, 95), 180, 181]
    drop_rows(app, [before.ts[i] for i in holes])
    with connect(app.engine(), app.target) as conn, conn.begin():
        rebuild(conn, "BTC-USD", Interval.D1)  # the stored indicators now know the holes
    with_holes = stored(app)
    result = run_ingest(app, IngestRequest(symbols=["BTC-USD"], mode=Mode.BACKFILL))
    assert result.rows_inserted == len(holes)
    after = stored(app)
    assert after.ts.tolist() == before.ts.tolist()
    assert_matches_full_recompute(after)
    kept = np.isin(after.ts, with_holes.ts)
    assert changed_rows(with_holes, after.take(kept), "sma_50") > 100


@pytest.mark.parametrize(
    "rows", [[30], [30, 60]], ids=["one corrected bar", "one corrected bar and one new bar"]
)
def test_a_write_changing_one_bar_in_the_middle_recomputes_every_later_row(app_factory, rows):
    """The smallest corrections: one bar in the middle of history corrected (one row
    updated), alone or with one new bar after the stored ones (one row inserted, one
    updated): every later stored row is recomputed, as a full recomputation gives it."""
    from marketdata.derive import write_with_derived
    from marketdata.domain import Candles

    app = app_factory()
    stamps = FIRST + np.arange(61, dtype=np.int64) * DAY
    close = 100.0 + np.arange(61, dtype=np.float64)  # climbing: each close a new peak

    def candles(index):
        c = close[index]
        return Candles.from_columns("BTC-USD", Interval.D1, "x", stamps[index], c, c, c, c, c)

    with connect(app.engine(), app.target) as conn, conn.begin():
        write_with_derived(conn, candles(np.arange(60)), NOW, derive=True)
    before = stored(app)
    close[30] = 500.0  # far above every other close: every later drawdown moves
    with connect(app.engine(), app.target) as conn, conn.begin():
        stats = write_with_derived(conn, candles(np.array(rows)), NOW, derive=True)
    assert (stats.inserted, stats.updated) == (len(rows) - 1, 1)
    after = stored(app)
    assert after.close.tolist() == close[: len(after)].tolist()
    assert_matches_full_recompute(after)
    assert changed_rows(before, after.take(slice(0, 60)), "drawdown") == 29  # 31 to 59
