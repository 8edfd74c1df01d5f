"""The read side on real databases: show, aggregates, comparisons and rebuilds agree with pandas."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select, update

from marketdata.analytics.indicators import INDICATOR_NAMES
from marketdata.analytics.roi import ROI_KEYS
from marketdata.context import AppContext
from marketdata.domain import Interval
from marketdata.errors import InputError, NoDataError
from marketdata.pipeline import IngestRequest, run_ingest
from marketdata.reports import (
    CANDLE_KEYS,
    aggregate_records,
    aggregates,
    comparison,
    rebuild_analytics,
    show,
)
from marketdata.storage.engine import connect
from marketdata.storage.locks import pair_lock
from marketdata.storage.schema import candles

DAY = 86_400
NOW = datetime(2024, 6, 17, 12, tzinfo=UTC)  # a Monday: AAPL's previous candle is Friday's
TODAY = int(datetime(2024, 6, 17, tzinfo=UTC).timestamp())
SYMBOLS = ["BTC-USD", "ETH-USD", "AAPL"]


@pytest.fixture
def app(app_factory) -> AppContext:
    app = app_factory(ingestion_provider="synthetic", ingestion_lookback_days=400)
    app.clock = lambda: NOW
    result = run_ingest(app, IngestRequest(symbols=SYMBOLS))
    assert result.status.value == "success"
    return app


def stored_frame(app, symbol, interval=Interval.D1) -> pd.DataFrame:
    """Prices as stored, read with plain SQL (not through the code under test)."""
    c = candles.c
    with connect(app.engine(), app.target) as conn:
        rows = conn.execute(
            select(c.ts, c.open, c.high, c.low, c.close, c.volume, c.sma_20)
            .where(c.symbol == symbol, c.interval == interval.value)
            .order_by(c.ts)
        ).all()
    frame = pd.DataFrame(rows, columns=["ts", "open", "high", "low", "close", "volume", "sma_20"])
    frame["epoch"] = [int(t.timestamp()) for t in frame["ts"]]
    return frame.set_index("epoch")


def pandas_indicators(close: pd.Series, per_year: float) -> pd.DataFrame:
    """Every indicator recomputed independently with pandas."""
    log = np.log(close / close.shift(1))
    frame = pd.DataFrame({"return": close.pct_change(), "log_return": log})
    for window in (7, 30, 90):
        frame[f"volatility_{window}"] = log.rolling(window).std() * np.sqrt(per_year)
    frame["drawdown"] = close / close.cummax() - 1.0
    for window in (20, 50, 200):
        frame[f"sma_{window}"] = close.rolling(window).mean()
    return frame


def assert_rows_match(records, expected: pd.DataFrame) -> None:
    assert [r["ts"] for r in records] == expected.index.tolist()
    for name in INDICATOR_NAMES:
        got = np.array([r[name] for r in records], dtype=float)
        np.testing.assert_allclose(got, expected[name].to_numpy(), rtol=1e-9, err_msg=name)


# ------------------------------------------------------------------------------------- show


def test_show_gives_the_latest_candles_with_stored_indicators_equal_to_pandas(app):
    report = show(app, "btc-usd", Interval.D1, 20)

    frame = stored_frame(app, "BTC-USD")
    expected = pandas_indicators(frame["close"], 365).tail(20)
    records = report.records()
    assert report.symbol == "BTC-USD" and not report.computed
    assert len(records) == 20 and list(records[0]) == list(CANDLE_KEYS)
    assert records[-1]["ts"] == TODAY
    assert [r["close"] for r in records] == frame["close"].tail(20).tolist()
    assert np.isfinite(expected["sma_200"]).all()
    assert_rows_match(records, expected)


def test_show_for_an_equity_annualises_volatility_over_252_trading_days(app):
    records = show(app, "AAPL", Interval.D1, 5).records()

    expected = pandas_indicators(stored_frame(app, "AAPL")["close"], 252).tail(5)
    assert datetime.fromtimestamp(records[-1]["ts"], UTC).weekday() == 0
    assert_rows_match(records, expected)


def test_show_computes_indicators_for_an_interval_outside_analytics_intervals(app):
    run_ingest(app, IngestRequest(symbols=["BTC-USD"], intervals=[Interval.M5], lookback_days=1))

    report = show(app, "BTC-USD", Interval.M5, 10)

    frame = stored_frame(app, "BTC-USD", Interval.M5)
    assert len(frame) > 250 and frame["sma_20"].isna().all()  # nothing derived was stored
    assert report.computed
    expected = pandas_indicators(frame["close"], 365 * 288).tail(10)
    assert np.isfinite(expected["sma_200"]).all()
    assert_rows_match(report.records(), expected)


def test_show_computes_indicators_for_a_pair_stored_before_its_interval_was_analysed(
    app_factory,
):
    before = app_factory(ingestion_provider="synthetic", analytics_intervals="1d")
    before.clock = lambda: NOW
    run_ingest(before, IngestRequest(symbols=["ETH-USD"], intervals=[Interval.H1]))
    after = app_factory(analytics_intervals="1h,1d")

    report = show(after, "ETH-USD", Interval.H1, 3)

    assert report.computed
    expected = pandas_indicators(stored_frame(after, "ETH-USD", Interval.H1)["close"], 365 * 24)
    assert_rows_match(report.records(), expected.tail(3))


def test_show_gives_roi_for_every_horizon_against_the_close_at_or_before_it(app):
    report = show(app, "AAPL", Interval.D1, 1)

    close = stored_frame(app, "AAPL")["close"]
    now = close[TODAY]
    assert tuple(report.roi) == ROI_KEYS
    # Monday's 1d ROI is against Friday: the last close at or before Sunday
    assert report.roi["1d"] == pytest.approx(now / close[TODAY - 3 * DAY] - 1, rel=1e-12)
    assert report.roi["7d"] == pytest.approx(now / close[TODAY - 7 * DAY] - 1, rel=1e-12)
    last_of_2023 = int(datetime(2023, 12, 29, tzinfo=UTC).timestamp())  # a Friday
    assert report.roi["ytd"] == pytest.approx(now / close[last_of_2023] - 1, rel=1e-12)
    assert report.roi["inception"] == pytest.approx(now / close.iloc[0] - 1, rel=1e-12)
    assert report.roi["365d"] is not None


def test_show_of_a_short_history_has_no_roi_beyond_it_and_nan_where_undefined(app):
    run_ingest(app, IngestRequest(symbols=["SOL-USD"], since=TODAY - 9 * DAY))

    report = show(app, "SOL-USD", Interval.D1, 50)

    records = report.records()
    assert len(records) == 10
    assert np.isnan(records[0]["return"]) and np.isnan(records[-1]["sma_20"])
    assert report.roi["7d"] is not None and report.roi["30d"] is None
    assert report.roi["inception"] == pytest.approx(records[-1]["close"] / records[0]["close"] - 1)


def test_show_of_an_unknown_symbol_is_no_data_with_the_command_that_fills_it(app):
    with pytest.raises(NoDataError) as caught:
        show(app, "BTC-XYZ", Interval.D1, 20)
    assert caught.value.one_line() == (
        "nothing stored for BTC-XYZ 1d: "
        "run `marketdata ingest --symbols BTC-XYZ --interval 1d` first"
    )
    assert caught.value.exit_code == 2


def test_show_of_an_interval_not_stored_names_the_intervals_that_are(app):
    with pytest.raises(NoDataError) as caught:
        show(app, "BTC-USD", Interval.H1, 20)
    assert caught.value.one_line().startswith(
        "nothing stored for BTC-USD 1h: BTC-USD has 1d stored; or run `marketdata ingest"
    )


def test_show_refuses_a_malformed_symbol_and_a_last_below_one(app):
    with pytest.raises(InputError, match="invalid symbol") as caught:
        show(app, "BTC USD!", Interval.D1, 20)
    assert not isinstance(caught.value, NoDataError)
    with pytest.raises(InputError, match="--last must be at least 1"):
        show(app, "BTC-USD", Interval.D1, 0)


def test_show_on_an_embedded_database_not_created_yet_does_not_create_it():
    app = AppContext.from_settings(environ={})
    assert not app.database_exists()
    with pytest.raises(NoDataError, match="nothing stored for BTC-USD 1d"):
        show(app, "BTC-USD", Interval.D1, 20)
    assert not app.database_exists()


# ------------------------------------------------------------------------------- aggregates


def pandas_aggregates(frame: pd.DataFrame, freq: str) -> pd.DataFrame:
    days = pd.to_datetime(frame.index, unit="s")
    key = days.to_period(freq).start_time
    grouped = frame.assign(typical_volume=(frame.high + frame.low + frame.close) / 3 * frame.volume)
    result = grouped.groupby(key.to_numpy()).agg(
        open=("open", "first"),
        high=("high", "max"),
        low=("low", "min"),
        close=("close", "last"),
        volume=("volume", "sum"),
        bars=("close", "size"),
        typical_volume=("typical_volume", "sum"),
    )
    result["vwap"] = result.typical_volume / result.volume
    result["return"] = result.close.pct_change()
    result.index = [int(pd.Timestamp(t, tz="UTC").timestamp()) for t in result.index]
    return result


@pytest.mark.parametrize(("period", "freq"), [("month", "M"), ("week", "W")])
def test_aggregates_roll_stored_daily_candles_up_like_pandas(app, period, freq):
    records = aggregate_records(aggregates(app, "AAPL", period))

    expected = pandas_aggregates(stored_frame(app, "AAPL"), freq)
    assert [r["period_start"] for r in records] == expected.index.tolist()
    for name in ("open", "high", "low", "close", "volume", "vwap", "return"):
        got = np.array([r[name] for r in records], dtype=float)
        np.testing.assert_allclose(got, expected[name].to_numpy(), rtol=1e-9, err_msg=name)
    assert [r["bars"] for r in records] == expected["bars"].tolist()


def test_aggregates_keep_the_latest_periods_with_returns_from_the_whole_history(app):
    full = aggregate_records(aggregates(app, "BTC-USD", "month"))
    latest = aggregate_records(aggregates(app, "BTC-USD", "month", last=3))

    assert latest == full[-3:]
    assert datetime.fromtimestamp(latest[0]["period_start"], UTC) == datetime(
        2024, 4, 1, tzinfo=UTC
    )
    assert np.isfinite(latest[0]["return"])
    assert latest[-1]["bars"] == 17  # June 1 .. June 17


def test_aggregates_refuse_an_unknown_period_and_a_symbol_with_no_daily_candles(app):
    with pytest.raises(InputError, match="unknown period 'year'"):
        aggregates(app, "BTC-USD", "year")
    with pytest.raises(NoDataError, match="nothing stored for NOPE-USD 1d"):
        aggregates(app, "NOPE-USD", "week")


# ------------------------------------------------------------------------------ comparison


def test_comparison_matches_pandas_corr_and_cov_on_the_stored_daily_closes(app):
    result = comparison(app, SYMBOLS, 30, "ETH-USD")

    closes = pd.concat(
        [stored_frame(app, s)["close"].rename(s) for s in SYMBOLS], axis=1, join="inner"
    )
    returns = np.log(closes / closes.shift(1)).iloc[1:].tail(30)
    cov, corr = returns.cov(), returns.corr()
    per_year = {"BTC-USD": 365, "ETH-USD": 365, "AAPL": 252}
    assert result.returns_used == 30 and result.benchmark == "ETH-USD"
    assert result.symbols == tuple(SYMBOLS)
    for s in SYMBOLS:
        roi = closes[s].iloc[-1] / closes[s].iloc[-31] - 1
        assert result.roi[s] == pytest.approx(roi, rel=1e-9)
        vol = returns[s].std() * np.sqrt(per_year[s])
        assert result.volatility[s] == pytest.approx(vol, rel=1e-9)
        beta = cov.loc[s, "ETH-USD"] / cov.loc["ETH-USD", "ETH-USD"]
        assert result.beta[s] == pytest.approx(beta, rel=1e-9)
        bench_roi = result.roi["ETH-USD"]
        assert result.relative_performance[s] == pytest.approx(roi - bench_roi, abs=1e-12)
        for other in SYMBOLS:
            assert result.correlation[s][other] == pytest.approx(corr.loc[s, other], abs=1e-12)


def test_comparison_uses_what_the_symbols_share_when_the_window_is_longer(app):
    result = comparison(app, ["BTC-USD", "AAPL"], 10_000)

    common = len(stored_frame(app, "AAPL"))  # every AAPL weekday is a BTC day too
    assert result.window == 10_000 and result.returns_used == common - 1
    assert result.benchmark == "BTC-USD"


def test_comparison_refuses_one_symbol_a_stray_benchmark_and_a_short_window(app):
    with pytest.raises(InputError, match="at least two symbols, got 1"):
        comparison(app, ["BTC-USD", "btc-usd"])
    with pytest.raises(InputError, match="benchmark AAPL is not among"):
        comparison(app, ["BTC-USD", "ETH-USD"], benchmark="aapl")
    with pytest.raises(InputError, match="--window must be at least 2"):
        comparison(app, ["BTC-USD", "ETH-USD"], window=1)


def test_comparison_with_unstored_symbols_names_them_all(app):
    with pytest.raises(NoDataError) as caught:
        comparison(app, ["BTC-USD", "NOPE-USD", "ZED"])
    assert caught.value.one_line() == (
        "nothing stored for NOPE-USD, ZED 1d: "
        "run `marketdata ingest --symbols NOPE-USD,ZED --interval 1d` first"
    )


def test_comparison_without_two_common_returns_is_no_data(app):
    run_ingest(app, IngestRequest(symbols=["SOL-USD"], since=TODAY))

    with pytest.raises(NoDataError, match=r"have 0 daily return\(s\) in common"):
        comparison(app, ["BTC-USD", "SOL-USD"])


# --------------------------------------------------------------------------------- rebuild


def tamper(app, symbol: str) -> None:
    with connect(app.engine(), app.target) as conn, conn.begin():
        conn.execute(update(candles).where(candles.c.symbol == symbol).values(sma_20=123.0))


def test_rebuild_dry_run_writes_nothing_and_a_real_rebuild_fixes_tampered_values(app):
    run_ingest(app, IngestRequest(symbols=["BTC-USD"], intervals=[Interval.M5], lookback_days=1))
    tamper(app, "BTC-USD")
    rows = len(stored_frame(app, "BTC-USD"))

    dry = rebuild_analytics(app, dry_run=True)

    assert [(p.symbol, p.interval, p.updated) for p in dry] == [
        ("AAPL", "1d", 0),
        ("BTC-USD", "1d", rows),  # the 5m pair is not in ANALYTICS_INTERVALS
        ("ETH-USD", "1d", 0),
    ]
    assert (stored_frame(app, "BTC-USD")["sma_20"] == 123.0).all()

    real = rebuild_analytics(app, ["BTC-USD"])

    assert [(p.symbol, p.interval, p.rows, p.updated) for p in real] == [
        ("BTC-USD", "1d", rows, rows)
    ]
    frame = stored_frame(app, "BTC-USD")
    expected = pandas_indicators(frame["close"], 365)["sma_20"]
    np.testing.assert_allclose(frame["sma_20"].astype(float), expected, rtol=1e-9)
    assert [p.updated for p in rebuild_analytics(app)] == [0, 0, 0]


def test_rebuild_leaves_a_pair_being_ingested_alone(app):
    with (
        connect(app.engine(), app.target) as holder,
        pair_lock(holder, "ETH-USD", "1d", app.lock_dir()) as taken,
    ):
        assert taken
        done = rebuild_analytics(app)
    assert [(p.symbol, p.locked) for p in done] == [
        ("AAPL", False),
        ("BTC-USD", False),
        ("ETH-USD", True),
    ]


def test_rebuild_of_symbols_with_nothing_stored_is_no_data(app):
    with pytest.raises(NoDataError, match="nothing stored for NOPE-USD"):
        rebuild_analytics(app, ["NOPE-USD"])


def test_show_report_gives_roi_as_of_the_newest_candle_it_shows_not_a_newer_one_read_since():
    from marketdata.analytics.indicators import compute_indicators
    from marketdata.analytics.roi import roi
    from marketdata.domain import Candles
    from marketdata.reports import show_report

    ts = TODAY - DAY * np.arange(400)[::-1]
    close = 100 + np.arange(400.0)
    bare = Candles.from_columns("BTC-USD", Interval.D1, "synthetic", ts, *[close] * 5)
    history = bare.with_indicators(compute_indicators(close, periods_per_year=365).columns())
    shown = history.take(slice(-11, -1))  # a write landed after these were read: one more
    report = show_report("BTC-USD", Interval.D1, history, shown, 10)
    assert report.roi == roi(ts[:-1], close[:-1]) != roi(ts, close)
    assert report.candles is shown
    newest = show_report("BTC-USD", Interval.D1, history, history.take(slice(-10, None)), 10)
    assert newest.roi == roi(ts, close)
