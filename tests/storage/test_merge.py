"""The overlap merge, column by column: a change to any one stored column alone is written, an
identical row is not, on SQLite and PostgreSQL (whose merge runs in SQL over a staging table)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from marketdata.domain import Candles, Interval
from marketdata.storage.candles import read_candles, update_indicators, write_candles
from marketdata.storage.engine import connect
from marketdata.storage.schema import INDICATOR_COLUMNS

NOW = datetime(2024, 6, 1, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)
START = 1_704_067_200
ROWS = 30
CHANGED_ROW = 17
PRICES = ("open", "high", "low", "close", "volume")
DERIVED = tuple(INDICATOR_COLUMNS)


def derived_columns(n: int) -> dict[str, np.ndarray]:
    """Distinct values per column, undefined (NaN) at the start as real indicators are."""
    rng = np.random.default_rng(3)
    columns = {}
    for offset, name in enumerate(DERIVED):
        values = rng.uniform(-0.5, 2.0, n)
        values[: offset % 4] = np.nan
        columns[name] = values
    return columns


def batch(*, derived: bool = False) -> Candles:
    ts = START + np.arange(ROWS, dtype=np.int64) * 60
    base = 100.0 + np.arange(ROWS, dtype=np.float64)
    candles = Candles.from_columns(
        "BTC-USD", Interval.M1, "coinbase", ts, base, base + 2.0, base - 2.0, base + 1.0, base * 3
    )
    return candles.with_indicators(derived_columns(ROWS)) if derived else candles


def with_value(candles: Candles, column: str, value: float, row: int = CHANGED_ROW) -> Candles:
    """A copy of the batch with one value of one column replaced."""
    prices = {name: getattr(candles, name).copy() for name in PRICES}
    indicators = (
        None if candles.indicators is None else {k: v.copy() for k, v in candles.indicators.items()}
    )
    if column in prices:
        prices[column][row] = value
    else:
        assert indicators is not None
        indicators[column][row] = value
    changed = Candles.from_columns(
        candles.symbol,
        candles.interval,
        candles.provider,
        candles.ts,
        *(prices[name] for name in PRICES),
    )
    return changed.with_indicators(indicators)


def original(candles: Candles, column: str, row: int = CHANGED_ROW) -> float:
    source = candles.indicators if column in DERIVED else None
    return float((source[column] if source else getattr(candles, column))[row])


def write(app, candles, now=NOW):
    with connect(app.engine(), app.target) as conn, conn.begin():
        return write_candles(conn, candles, now)


def stored(app):
    with connect(app.engine(), app.target) as conn:
        return read_candles(conn, "BTC-USD", Interval.M1, with_indicators=True)


def value_of(candles: Candles, column: str, row: int = CHANGED_ROW) -> float:
    return original(candles, column, row)


def assert_same_values(a: Candles, b: Candles) -> None:
    for name in PRICES:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    for name in DERIVED:
        # undefined is undefined however a backend stores it (NULL or NaN)
        np.testing.assert_array_equal(a.indicators[name], b.indicators[name], err_msg=name)


@pytest.mark.parametrize("column", [*PRICES, *DERIVED])
def test_a_change_to_one_column_alone_is_written_and_nothing_else_is(app_factory, column):
    app = app_factory()
    first = batch(derived=True)
    write(app, first)
    new_value = original(first, column) * 1.5 + 0.25
    changed = with_value(first, column, new_value)
    stats = write(app, changed, LATER)
    assert (stats.inserted, stats.updated, stats.unchanged) == (0, 1, ROWS - 1)
    after = stored(app)
    assert value_of(after, column) == new_value
    assert_same_values(after, changed)


@pytest.mark.parametrize("column", PRICES)
def test_a_price_or_volume_moved_by_the_smallest_step_is_a_change(app_factory, column):
    app = app_factory()
    first = batch(derived=True)
    write(app, first)
    nudged = float(np.nextafter(original(first, column), np.inf))
    stats = write(app, with_value(first, column, nudged), LATER)
    assert stats.updated == 1
    assert value_of(stored(app), column) == nudged


@pytest.mark.parametrize("column", DERIVED)
def test_a_derived_value_within_the_recompute_tolerance_is_not_a_change(app_factory, column):
    app = app_factory()
    first = batch(derived=True)
    write(app, first)
    value = original(first, column)
    stats = write(app, with_value(first, column, value * (1 + 1e-12)), LATER)
    assert (stats.updated, stats.unchanged) == (0, ROWS)
    assert value_of(stored(app), column) == value
    stats = write(app, with_value(first, column, value * (1 + 1e-6)), LATER)
    assert stats.updated == 1


@pytest.mark.parametrize("column", DERIVED)
def test_a_derived_value_becoming_defined_or_undefined_is_a_change(app_factory, column):
    app = app_factory()
    first = batch(derived=True)
    write(app, first)
    undefined = with_value(first, column, np.nan)
    assert write(app, undefined, LATER).updated == 1
    assert np.isnan(value_of(stored(app), column))
    assert write(app, undefined, LATER).updated == 0
    assert write(app, first, LATER).updated == 1
    assert value_of(stored(app), column) == original(first, column)


@pytest.mark.parametrize("derived", [False, True], ids=["candles", "with derived"])
def test_writing_identical_rows_again_changes_nothing(app_factory, derived):
    app = app_factory()
    first = batch(derived=derived)
    write(app, first)
    with connect(app.engine(), app.target) as conn:
        from sqlalchemy import select

        from marketdata.storage.schema import candles

        stamps = conn.execute(select(candles.c.ingested_at)).scalars().all()
    stats = write(app, batch(derived=derived), LATER)
    assert (stats.inserted, stats.updated, stats.unchanged) == (0, 0, ROWS)
    with connect(app.engine(), app.target) as conn:
        assert conn.execute(select(candles.c.ingested_at)).scalars().all() == stamps


def test_an_updated_row_records_the_new_provider_and_time(app_factory):
    app = app_factory()
    first = batch()
    write(app, first)
    changed = with_value(first, "close", 1.0)
    changed = Candles(
        changed.symbol,
        changed.interval,
        "kraken",
        changed.ts,
        changed.open,
        changed.high,
        changed.low,
        changed.close,
        changed.volume,
    )
    write(app, changed, LATER)
    with connect(app.engine(), app.target) as conn:
        from sqlalchemy import select

        from marketdata.storage.schema import candles

        rows = conn.execute(
            select(candles.c.provider, candles.c.ingested_at).order_by(candles.c.ts)
        ).all()
    assert [r.provider for r in rows].count("kraken") == 1
    assert rows[CHANGED_ROW].provider == "kraken"
    assert rows[CHANGED_ROW].ingested_at == LATER
    assert rows[0].ingested_at == NOW


def test_a_batch_without_derived_values_leaves_the_stored_ones_alone(app_factory):
    app = app_factory()
    write(app, batch(derived=True))
    stats = write(app, with_value(batch(), "close", 1.0), LATER)
    assert stats.updated == 1
    after = stored(app)
    for name, values in derived_columns(ROWS).items():
        np.testing.assert_array_equal(after.indicators[name], values, err_msg=name)


@pytest.mark.parametrize("column", DERIVED)
def test_updating_indicators_touches_only_the_rows_that_differ(app_factory, column):
    app = app_factory()
    first = batch(derived=True)
    write(app, first)
    columns = {k: v.copy() for k, v in first.indicators.items()}
    columns[column][CHANGED_ROW] += 1.0
    columns[column][CHANGED_ROW + 1] *= 1 + 1e-12  # within tolerance: left as it is
    with connect(app.engine(), app.target) as conn, conn.begin():
        updated = update_indicators(conn, "BTC-USD", Interval.M1, first.ts, columns)
    assert updated == 1
    after = stored(app)
    assert value_of(after, column) == columns[column][CHANGED_ROW]
    assert value_of(after, column, CHANGED_ROW + 1) == original(first, column, CHANGED_ROW + 1)
    np.testing.assert_array_equal(after.close, first.close)


def test_stored_pairs_lists_each_symbol_and_interval_once_in_order(app_factory):
    from marketdata.storage.candles import stored_pairs

    app = app_factory()
    write(app, batch())
    row = [(START, 1.0, 1.0, 1.0, 1.0, 1.0)]
    write(app, Candles.from_rows("AAPL", Interval.M1, "yahoo", row))
    write(app, Candles.from_rows("BTC-USD", Interval.D1, "coinbase", row))
    with connect(app.engine(), app.target) as conn:
        assert stored_pairs(conn) == [("AAPL", "1m"), ("BTC-USD", "1d"), ("BTC-USD", "1m")]
        assert stored_pairs(conn, ["BTC-USD"]) == [("BTC-USD", "1d"), ("BTC-USD", "1m")]


def test_rebuilding_a_pair_with_no_rows_or_one_row(app_factory):
    from marketdata.derive import rebuild

    app = app_factory()
    one = Candles.from_rows("AAPL", Interval.D1, "yahoo", [(START, 1.0, 1.0, 1.0, 1.0, 1.0)])
    write(app, one)
    with connect(app.engine(), app.target) as conn, conn.begin():
        assert rebuild(conn, "NONE-USD", Interval.D1) == (0, 0)
        assert rebuild(conn, "AAPL", Interval.D1) == (1, 1)  # one close: only its drawdown, 0


def test_updating_one_pairs_indicators_leaves_other_pairs_at_the_same_times_alone(app_factory):
    """A recompute of BTC-USD 1m rewrites its own rows only: ETH-USD 1m and BTC-USD 5m
    candles stored at the same times keep their derived values."""
    app = app_factory()
    first = batch(derived=True)
    write(app, first)
    for symbol, interval in (("ETH-USD", Interval.M1), ("BTC-USD", Interval.M5)):
        other = Candles.from_columns(
            symbol, interval, "coinbase", first.ts, *(getattr(first, n) for n in PRICES)
        )
        write(app, other.with_indicators(first.indicators))
    columns = {k: v + 1.0 for k, v in first.indicators.items()}
    with connect(app.engine(), app.target) as conn, conn.begin():
        update_indicators(conn, "BTC-USD", Interval.M1, first.ts, columns)
        others = [
            read_candles(conn, s, iv, with_indicators=True)
            for s, iv in (("ETH-USD", Interval.M1), ("BTC-USD", Interval.M5))
        ]
    for other in others:
        for name, values in first.indicators.items():
            np.testing.assert_array_equal(other.indicators[name], values, err_msg=name)
    np.testing.assert_array_equal(stored(app).indicators["sma_20"], columns["sma_20"])


@pytest.mark.parametrize("old", [1.0, 0.0])
def test_a_derived_value_moved_past_the_recompute_tolerance_is_rewritten(app_factory, old):
    """1e-9 relative, and nothing absolute: a move of a millionth, or from exactly 0 to
    1e-12, is a new value (a looser comparison would keep the stale one)."""
    app = app_factory()
    first = batch(derived=True)
    first.indicators["drawdown"][CHANGED_ROW] = old
    write(app, first)
    columns = {k: v.copy() for k, v in first.indicators.items()}
    moved = old * (1 + 1e-6) if old else 1e-12
    columns["drawdown"][CHANGED_ROW] = moved
    with connect(app.engine(), app.target) as conn, conn.begin():
        assert update_indicators(conn, "BTC-USD", Interval.M1, first.ts, columns) == 1
    assert value_of(stored(app), "drawdown") == moved


def test_an_indicator_a_recompute_leaves_undefined_is_null_to_sql(app_factory):
    """Undefined is NULL on both backends (not a stored NaN, which PostgreSQL would count as
    a value and sort above every number): a recompute that clears a value writes NULL."""
    from sqlalchemy import text

    app = app_factory()
    first = batch(derived=True)
    write(app, first)
    columns = {k: v.copy() for k, v in first.indicators.items()}
    columns["sma_20"][CHANGED_ROW:] = np.nan
    with connect(app.engine(), app.target) as conn, conn.begin():
        update_indicators(conn, "BTC-USD", Interval.M1, first.ts, columns)
        nulls = conn.execute(text("SELECT count(*) FROM candles WHERE sma_20 IS NULL")).scalar()
    assert nulls == ROWS - CHANGED_ROW + int(np.isnan(first.indicators["sma_20"]).sum())


def test_the_write_time_is_recorded_to_the_microsecond_for_new_and_updated_rows(app_factory):
    """`ingested_at` as the clock gave it, fractions of a second included: on PostgreSQL the
    new rows travel in binary COPY (microseconds since 2000) and the updated ones through
    the staging table."""
    from sqlalchemy import select

    from marketdata.storage.schema import candles

    app = app_factory()
    first_time = datetime(2024, 6, 1, 9, 30, 15, 123_456, tzinfo=UTC)
    later_time = datetime(2024, 6, 1, 10, 45, 59, 999_999, tzinfo=UTC)
    first = batch(derived=True)
    write(app, first, first_time)
    write(app, with_value(first, "close", 1.0), later_time)
    with connect(app.engine(), app.target) as conn:
        stamps = conn.execute(select(candles.c.ingested_at).order_by(candles.c.ts)).scalars()
        stamps = [s.replace(tzinfo=UTC) for s in stamps]
    expected = [first_time] * ROWS
    expected[CHANGED_ROW] = later_time
    assert stamps == expected


@pytest.fixture
def tokyo_host(monkeypatch):
    """The host's local time zone nine hours east of UTC for the test."""
    import time

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_the_write_time_is_stored_in_utc_whatever_the_host_s_time_zone(app_factory, tokyo_host):
    from sqlalchemy import select

    from marketdata.storage.schema import candles

    app = app_factory()
    first = batch()
    write(app, first)
    write(app, with_value(first, "close", 1.0), LATER)
    with connect(app.engine(), app.target) as conn:
        stamps = conn.execute(select(candles.c.ingested_at).order_by(candles.c.ts)).scalars()
        stamps = [s.replace(tzinfo=UTC) if s.tzinfo is None else s for s in stamps]
    assert stamps[0] == NOW and stamps[CHANGED_ROW] == LATER


def test_a_derived_value_moved_from_zero_in_a_written_batch_is_a_change(app_factory):
    """The overlap merge, like the recompute, has no absolute tolerance: a drawdown that was
    exactly 0 (a new peak) and is 1e-12 now is a new value."""
    app = app_factory()
    first = batch(derived=True)
    first.indicators["drawdown"][CHANGED_ROW] = 0.0
    write(app, first)
    stats = write(app, with_value(first, "drawdown", 1e-12), LATER)
    assert (stats.updated, stats.unchanged) == (1, ROWS - 1)
    assert value_of(stored(app), "drawdown") == 1e-12
