"""Trading calendars: gaps and the synthetic source follow a market's sessions (24/7 crypto,
24/5 FX, an exchange's sessions, early closes, breaks and holidays for equities)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from marketdata.calendars import (
    ALWAYS,
    WEEKDAYS,
    calendar,
    default_calendar,
    guess_asset_class,
    parse_calendar,
)
from marketdata.domain import DAY, Interval, Window
from marketdata.errors import InputError
from marketdata.gaps import Gap, gaps_in, stored_gaps
from marketdata.markets import add_market
from marketdata.pipeline import IngestRequest, Mode, build_plan, run_ingest
from marketdata.storage.candles import stored_timestamps
from marketdata.storage.engine import connect

MONDAY = 1_712_534_400  # 2024-04-08T00:00Z
HOUR = 3600


def utc(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def days(*dates: str) -> np.ndarray:
    return np.array([utc(d) for d in dates], dtype=np.int64)


# ----------------------------------------------------------------------------- which calendar


@pytest.mark.parametrize(
    ("symbol", "asset_class", "expected"),
    [
        ("BTC-USD", None, ALWAYS),
        ("EURUSD=X", None, WEEKDAYS),
        ("AAPL", None, "XNYS"),
        ("BRK.B", None, "XNYS"),  # a class share, not an exchange suffix
        ("^GSPC", None, "XNYS"),
        ("^FTSE", None, "XLON"),
        ("VOD.L", None, "XLON"),
        ("7203.T", None, "XTKS"),
        ("0005.HK", None, "XHKG"),
        ("T.TO", None, "XTSE"),  # a one-letter ticker keeps its suffix
        ("BRK.B.TO", None, "XTSE"),  # a class share on an exchange: the last dot's suffix
        (".L", None, "XNYS"),  # a suffix alone is no ticker
        ("AAPL", "crypto", ALWAYS),  # the stored asset class wins over the symbol's shape
        ("BTC-USD", "equity", "XNYS"),
        ("GBPUSD", "fx", WEEKDAYS),
    ],
)
def test_a_market_without_a_stored_calendar_follows_its_asset_class_and_suffix(
    symbol, asset_class, expected
):
    assert default_calendar(symbol, asset_class) == expected


def test_asset_classes_are_guessed_from_the_symbol():
    assert [guess_asset_class(s) for s in ("ETH-USDT", "USDJPY=X", "MSFT")] == [
        "crypto",
        "fx",
        "equity",
    ]


def test_calendar_names_are_checked_and_aliases_resolved():
    assert parse_calendar(" xnys ") == "XNYS"
    assert parse_calendar("NYSE") == "XNYS"
    assert parse_calendar("24/7") == ALWAYS
    with pytest.raises(InputError, match="unknown trading calendar 'MARS'") as raised:
        parse_calendar("MARS")
    assert raised.value.exit_code == 2


# ------------------------------------------------------------------------------- sessions


def test_crypto_trades_every_bar_and_fx_every_weekday_bar():
    week = Window(MONDAY, MONDAY + 7 * DAY)
    assert len(calendar(ALWAYS).bars(week.start, week.end, Interval.H1)) == 7 * 24
    fx = calendar(WEEKDAYS).bars(week.start, week.end, Interval.H1)
    assert len(fx) == 5 * 24 and fx[-1] == MONDAY + 5 * DAY - HOUR


def test_new_york_skips_nights_weekends_and_holidays_and_closes_early_before_some():
    nyse = calendar("XNYS")
    # 2024-07-03 closes at 13:00 New York (17:00 UTC); the 4th is Independence Day
    bars = nyse.bars(utc("2024-07-01"), utc("2024-07-08"), Interval.D1)
    assert bars.tolist() == days("2024-07-01", "2024-07-02", "2024-07-03", "2024-07-05").tolist()
    quarter_hours = nyse.bars(utc("2024-07-03"), utc("2024-07-04"), Interval.M15)
    assert (quarter_hours[0], quarter_hours[-1]) == (
        utc("2024-07-03T13:30"),
        utc("2024-07-03T16:45"),
    )
    assert len(quarter_hours) == 14
    full_day = nyse.bars(utc("2024-07-02"), utc("2024-07-03"), Interval.M5)
    assert len(full_day) == 78  # 6.5 hours of 5-minute bars


@pytest.mark.parametrize("name", [ALWAYS, WEEKDAYS, "XNYS"])
def test_an_empty_range_has_no_bars_on_any_calendar(name):
    moment = utc("2024-07-03")
    assert calendar(name).bars(moment, moment, Interval.D1).tolist() == []
    assert calendar(name).trading(np.array([], dtype=np.int64), Interval.H1).tolist() == []


def test_a_single_bar_is_judged_by_the_exchanges_sessions_too():
    nyse = calendar("XNYS")
    assert nyse.trading(days("2024-07-04"), Interval.D1).tolist() == [False]  # a holiday
    assert nyse.trading(days("2024-07-05"), Interval.D1).tolist() == [True]


def test_an_hourly_bar_that_only_starts_before_the_open_still_trades():
    # 14:30 UTC open in winter: the 14:00 bar holds the first half hour
    bars = calendar("XNYS").bars(utc("2024-01-02"), utc("2024-01-03"), Interval.H1)
    assert bars.tolist() == [utc(f"2024-01-02T{h}:00") for h in range(14, 21)]


def test_a_lunch_break_has_no_bars():
    bars = calendar("XHKG").bars(utc("2024-01-02"), utc("2024-01-03"), Interval.H1)
    hours = [int(t % DAY // HOUR) for t in bars.tolist()]
    assert hours == [1, 2, 3, 5, 6, 7]  # 01:30-04:00 and 05:00-08:00 UTC


def test_a_session_that_opens_the_evening_before_counts_its_trading_date_for_daily_bars():
    # Sydney opens at 23:00 UTC the day before; its daily bar is dated by the session
    bars = calendar("XASX").bars(utc("2024-01-08"), utc("2024-01-13"), Interval.D1)
    assert bars.tolist() == days(*(f"2024-01-{d:02d}" for d in range(8, 13))).tolist()


# ------------------------------------------------------------------------------------ gaps


def test_a_weekend_is_no_gap_on_a_weekday_calendar_but_a_missing_weekday_is():
    friday, monday, tuesday = days("2024-04-05", "2024-04-08", "2024-04-09")
    fx = calendar(WEEKDAYS)
    assert gaps_in(np.array([friday, monday]), Interval.D1, fx) == []
    assert gaps_in(np.array([friday, tuesday]), Interval.D1, fx) == [Gap(monday, tuesday, 1)]
    assert gaps_in(np.array([friday, tuesday]), Interval.D1, calendar(ALWAYS)) == [
        Gap(friday + DAY, tuesday, 3)
    ]


def test_hourly_equity_history_has_no_gap_overnight_but_a_missing_hour_is_one():
    nyse = calendar("XNYS")
    stored = nyse.bars(MONDAY, MONDAY + 14 * DAY, Interval.H1)
    assert gaps_in(stored, Interval.H1, nyse) == []
    missing = stored[[10, 11, 30]]
    kept = stored[~np.isin(stored, missing)]
    assert gaps_in(kept, Interval.H1, nyse) == [
        Gap(int(missing[0]), int(missing[1]) + HOUR, 2),
        Gap(int(missing[2]), int(missing[2]) + HOUR, 1),
    ]


def test_a_missing_last_hour_and_first_hour_around_a_night_make_one_gap_of_two_bars():
    nyse = calendar("XNYS")
    stored = nyse.bars(MONDAY, MONDAY + 3 * DAY, Interval.H1)
    evening = int(np.flatnonzero(np.diff(stored) > HOUR)[0])  # the last bar of Monday
    kept = np.delete(stored, [evening, evening + 1])
    [gap] = gaps_in(kept, Interval.H1, nyse)
    assert (gap.start, gap.end, gap.bars) == (stored[evening], stored[evening + 1] + HOUR, 2)


def test_a_holiday_is_no_gap_in_daily_equity_history():
    nyse = calendar("XNYS")
    stored = days("2024-07-03", "2024-07-05", "2024-07-08")
    assert gaps_in(stored, Interval.D1, nyse) == []
    assert gaps_in(days("2024-07-03", "2024-07-08"), Interval.D1, nyse) == [
        Gap(utc("2024-07-05"), utc("2024-07-06"), 1)
    ]


def test_fewer_than_two_stored_bars_have_no_gaps():
    assert gaps_in(np.array([], dtype=np.int64), Interval.D1, calendar(ALWAYS)) == []
    assert gaps_in(days("2024-07-03"), Interval.D1, calendar(ALWAYS)) == []


# ----------------------------------------------- stored history, the synthetic source, backfill


@pytest.fixture
def synthetic_app(app_factory):
    def build():
        app = app_factory(ingestion_provider="synthetic", ingestion_lookback_days=14)
        app.clock = lambda: datetime.fromtimestamp(MONDAY + 14 * DAY + 22 * HOUR, UTC)
        return app

    return build


def test_synthetic_equity_bars_follow_new_york_so_fourteen_days_of_hours_have_no_gap(
    synthetic_app,
):
    app = synthetic_app()
    run_ingest(app, IngestRequest(symbols=["AAPL"], intervals=[Interval.H1]))
    with connect(app.engine(), app.target) as conn:
        stored = stored_timestamps(conn, "AAPL", Interval.H1)
        gaps = stored_gaps(conn, "AAPL", Interval.H1)
    assert gaps == []
    expected = calendar("XNYS").bars(stored[0], stored[-1] + HOUR, Interval.H1)
    assert stored.tolist() == expected.tolist()
    assert len(stored) == 10 * 7  # ten sessions of seven hourly bars (14:00 .. 20:00 UTC)
    plan = build_plan(
        app, IngestRequest(symbols=["AAPL"], intervals=[Interval.H1], mode=Mode.BACKFILL)
    )
    assert len(plan.pairs[0].windows) == 1  # the recent window only: no night is re-requested


def test_a_market_s_stored_calendar_decides_its_gaps_and_its_synthetic_bars(synthetic_app):
    app = synthetic_app()
    add_market(app, "AAA", None, [], None, calendar="24/7")  # another market, listed first
    add_market(app, "ACME", None, [], None, calendar="24/5")
    run_ingest(app, IngestRequest(symbols=["ACME"], intervals=[Interval.H1]))
    with connect(app.engine(), app.target) as conn:
        stored = stored_timestamps(conn, "ACME", Interval.H1)
        assert stored_gaps(conn, "ACME", Interval.H1) == []
    assert (
        stored.tolist() == calendar(WEEKDAYS).bars(stored[0], stored[-1] + 1, Interval.H1).tolist()
    )
    assert len(stored) > 10 * 23  # every weekday hour, nights included
    add_market(app, "ACME", None, [], None, calendar="XNYS")
    with connect(app.engine(), app.target) as conn:
        assert stored_gaps(conn, "ACME", Interval.H1) == []  # stored bars cover every session
        add_market(app, "ACME", "crypto", [], None)  # the calendar stays as it was stored
    with connect(app.engine(), app.target) as conn:
        assert stored_gaps(conn, "ACME", Interval.H1) == []


def test_the_stored_asset_class_is_read_for_gaps(synthetic_app):
    app = synthetic_app()
    run_ingest(app, IngestRequest(symbols=["AAPL"], intervals=[Interval.H1]))
    add_market(app, "AAPL", "crypto", [], None)  # nonsense on purpose: now it trades 24/7
    with connect(app.engine(), app.target) as conn:
        gaps = stored_gaps(conn, "AAPL", Interval.H1)
    assert len(gaps) == 9  # every night and weekend between the ten sessions
    assert sum(g.bars for g in gaps) == 13 * 24 + 7 - 10 * 7


def test_an_unknown_calendar_is_refused_before_anything_is_stored(synthetic_app):
    app = synthetic_app()
    with pytest.raises(InputError, match="unknown trading calendar"):
        add_market(app, "ACME", None, [], None, calendar="XXXX")
    from marketdata.storage.markets import list_markets

    with connect(app.engine(), app.target) as conn:
        assert list_markets(conn) == []


def test_crypto_and_fx_calendars_do_not_import_the_exchange_calendar_library():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from marketdata.calendars import calendar\n"
        "from marketdata.domain import Interval\n"
        "calendar('24/7').bars(0, 86400 * 10, Interval.H1)\n"
        "calendar('24/5').bars(0, 86400 * 10, Interval.H1)\n"
        "print(sorted(m for m in ('exchange_calendars', 'pandas') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


def test_bars_start_at_the_first_grid_point_at_or_after_the_start():
    assert calendar(ALWAYS).bars(1, 181, Interval.M1).tolist() == [60, 120, 180]
    assert calendar(ALWAYS).bars(-90, 60, Interval.M1).tolist() == [-60, 0]


def test_a_bar_after_the_last_known_session_or_between_sessions_does_not_trade():
    from marketdata.calendars import _Sessions

    day = np.array([0, 1], dtype=np.int64)
    sessions = _Sessions(
        days=day,
        opens=day * DAY + 10 * HOUR,
        closes=day * DAY + 16 * HOUR,
        break_starts=day * DAY + 12 * HOUR,
        break_ends=day * DAY + 13 * HOUR,
    )
    hours = np.arange(0, 3 * DAY, HOUR, dtype=np.int64)
    trading = hours[sessions.overlaps(hours, HOUR)]
    expected = [d * DAY + h * HOUR for d in (0, 1) for h in (10, 11, 13, 14, 15)]
    assert trading.tolist() == expected  # nothing in the break, nothing after day 1's close


def test_sessions_far_ahead_and_long_ago_are_known():
    """A bar decades away from today's usual range (2040, 1985) still gets its exchange's
    sessions: the years its bars span are built, not only the usual ones."""
    nyse = calendar("XNYS")
    for monday in ("2040-01-09", "1985-01-07"):  # neither a holiday
        week = nyse.bars(utc(monday), utc(monday) + 7 * DAY, Interval.D1)
        assert week.tolist() == [utc(monday) + d * DAY for d in range(5)]
