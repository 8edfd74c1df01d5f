"""Yahoo chart v8 provider against a fake Yahoo on a loopback socket."""

from __future__ import annotations

from datetime import date, time, timedelta

import httpx
import pytest

from marketdata.domain import Interval, Window
from marketdata.errors import (
    BadPayloadError,
    OutOfReachError,
    ProviderError,
    ProviderUnavailableError,
    SymbolNotListedError,
    UnsupportedIntervalError,
)
from marketdata.providers.yahoo import YahooProvider
from tests.fakes.limits import no_wait
from tests.fakes.market import walk
from tests.fakes.server import Reply
from tests.fakes.yahoo import FakeYahoo, Listing, session_open
from tests.providers.expect import told

DAY = 86_400
EPOCH = date(1970, 1, 1)
NOW = 1_710_460_800 + 12 * 3600  # 2024-03-15 12:00 UTC
# Trading days around the US switch to summer time (2024-03-10): sessions open 14:30 UTC
# before it and 13:30 UTC after it.
TRADING_DAYS = [date(2024, 3, d) for d in (4, 5, 6, 7, 8, 11, 12, 13, 14, 15)]
HALTED = date(2024, 3, 8)  # Yahoo sends this bar as nulls


def midnight(day: date) -> int:
    return (day - EPOCH).days * DAY


def daily_rows(days: list[date], zone: str, at: time = time(9, 30), seed: int = 1) -> list[tuple]:
    """Session-open stamped daily rows as Yahoo sends them (integer volumes)."""
    candles = walk(0, DAY, len(days), seed=seed)
    return [
        (session_open(d, zone, at), *r[1:5], int(r[5])) for d, r in zip(days, candles, strict=True)
    ]


AAPL_DAILY = [
    (ts, None, None, None, None, None) if d == HALTED else (ts, *rest)
    for d, (ts, *rest) in zip(
        TRADING_DAYS, daily_rows(TRADING_DAYS, "America/New_York"), strict=True
    )
]
BTC_1M = [(r[0], *r[1:5], r[5]) for r in walk(NOW - 20 * DAY, 60, 20 * 1440, seed=3)]


@pytest.fixture
def fake() -> FakeYahoo:
    return FakeYahoo(
        now=NOW,
        listings={
            "AAPL": Listing(bars={"1d": list(AAPL_DAILY)}),
            "BTC-USD": Listing(timezone="UTC", gmtoffset=0, instrument="CRYPTOCURRENCY",
                               bars={"1m": list(BTC_1M)}),
        },
    )  # fmt: skip


@pytest.fixture
def provider_for(provider_context):
    def build(url: str, **overrides) -> YahooProvider:
        symbols = overrides.pop("symbols", {})
        ctx = provider_context(yahoo_base_url=url, **overrides)
        ctx.limiter_factory = no_wait
        ctx.symbol_overrides = {"yahoo": symbols}
        provider = YahooProvider(ctx)
        provider.now = lambda: NOW
        return provider

    return build


def test_daily_session_open_stamps_move_to_utc_midnight_of_the_new_york_date(
    serve_fake, fake, provider_for
):
    window = Window(midnight(date(2024, 3, 4)), midnight(date(2024, 3, 16)))
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch("AAPL", Interval.D1, window)
    kept = [d for d in TRADING_DAYS if d != HALTED]
    assert candles.ts.tolist() == [midnight(d) for d in kept]
    sent = [r for r in AAPL_DAILY if r[1] is not None]
    assert candles.close.tolist() == [r[4] for r in sent]
    assert candles.volume.tolist() == [float(r[5]) for r in sent]
    assert (candles.open[0], candles.high[0], candles.low[0]) == sent[0][1:4]
    # one extra day each side, for exchanges whose session opens on the previous UTC date
    query = server.requests[0].query
    assert (int(query["period1"]), int(query["period2"])) == (
        window.start - DAY,
        window.end + DAY,
    )
    assert query["interval"] == "1d"


def test_a_bar_sent_as_nulls_is_skipped_and_the_rest_kept(serve_fake, fake, provider_for):
    window = Window(midnight(date(2024, 3, 7)), midnight(date(2024, 3, 12)))
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch("AAPL", Interval.D1, window)
    assert candles.ts.tolist() == [midnight(date(2024, 3, d)) for d in (7, 11)]


def test_fx_daily_bars_stamped_at_london_midnight_land_on_the_london_date(
    serve_fake, fake, provider_for
):
    days = [date(2024, 3, 28), date(2024, 4, 2)]  # London is on UTC+1 from 2024-03-31
    fake.listings["EURUSD=X"] = Listing(
        timezone="Europe/London", gmtoffset=3600, currency="USD", instrument="CURRENCY",
        bars={"1d": daily_rows(days, "Europe/London", at=time(0, 0))},
    )  # fmt: skip
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch(
            "EURUSD=X", Interval.D1, Window(midnight(days[0]), midnight(days[1]) + DAY)
        )
    assert fake.listings["EURUSD=X"].bars["1d"][1][0] == midnight(days[1]) - 3600  # 23:00 UTC
    assert candles.ts.tolist() == [midnight(d) for d in days]
    assert server.paths() == ["/v8/finance/chart/EURUSD%3DX"]


def test_a_sydney_session_opening_the_utc_day_before_is_still_found_and_dated_right(
    serve_fake, fake, provider_for
):
    day = date(2024, 3, 14)  # Sydney is UTC+11 then: 10:00 local is 23:00 UTC on the 13th
    fake.listings["^AXJO"] = Listing(
        timezone="Australia/Sydney", gmtoffset=39600,
        bars={"1d": daily_rows([day], "Australia/Sydney", at=time(10, 0))},
    )  # fmt: skip
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch(
            "^AXJO", Interval.D1, Window(midnight(day), midnight(day) + DAY)
        )
    assert candles.ts.tolist() == [midnight(day)]
    assert server.paths() == ["/v8/finance/chart/%5EAXJO"]


def test_without_a_zone_name_the_gmt_offset_dates_daily_bars(serve_fake, fake, provider_for):
    fake.drop_meta_zone = True
    window = Window(midnight(date(2024, 3, 4)), midnight(date(2024, 3, 6)))
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch("AAPL", Interval.D1, window)
    assert candles.ts.tolist() == [midnight(date(2024, 3, 4)), midnight(date(2024, 3, 5))]


def test_without_any_zone_daily_bars_cannot_be_dated(serve_fake, fake, provider_for):
    fake.drop_meta_zone = True
    fake.listings["AAPL"].gmtoffset = None
    window = Window(midnight(date(2024, 3, 4)), midnight(date(2024, 3, 6)))
    with serve_fake(fake) as server, pytest.raises(BadPayloadError, match="time zone"):
        provider_for(server.url).fetch("AAPL", Interval.D1, window)


def test_one_minute_bars_are_paged_by_seven_days_complete_and_without_duplicates(
    serve_fake, fake, provider_for
):
    window = Window(NOW - 20 * DAY, NOW)
    with serve_fake(fake) as server:
        provider = provider_for(server.url)
        candles = provider.fetch("BTC-USD", Interval.M1, window)
    assert len(server.requests) == 3 == provider.requests_needed(Interval.M1, window)
    spans = [(int(r.query["period1"]), int(r.query["period2"])) for r in server.requests]
    assert spans == [
        (NOW - 20 * DAY, NOW - 13 * DAY),
        (NOW - 13 * DAY, NOW - 6 * DAY),
        (NOW - 6 * DAY, NOW),
    ]
    assert all(r.query["interval"] == "1m" for r in server.requests)
    assert candles.ts.tolist() == [r[0] for r in BTC_1M]
    assert candles.close.tolist() == [r[4] for r in BTC_1M]


def test_intraday_bars_keep_their_timestamps_and_skip_sparse_nulls(serve_fake, fake, provider_for):
    start = NOW - 2 * DAY + 30 * 60  # 12:30 UTC: on the 5m grid
    rows = [(start + i * 300, 10.0 + i, 11.0 + i, 9.0 + i, 10.5 + i, 100 + i) for i in range(6)]
    rows[2] = (rows[2][0], None, None, None, None, None)
    fake.listings["AAPL"].bars["5m"] = rows
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch(
            "AAPL", Interval.M5, Window(start, start + 6 * 300)
        )
    assert candles.ts.tolist() == [r[0] for i, r in enumerate(rows) if i != 2]
    assert candles.high.tolist() == [11.0, 12.0, 14.0, 15.0, 16.0]
    assert server.requests[0].query["interval"] == "5m"


def test_one_hour_is_sent_as_60m(serve_fake, fake, provider_for):
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch("AAPL", Interval.H1, Window(NOW - 700 * DAY, NOW))
    assert server.requests[0].query["interval"] == "60m"
    assert len(candles) == 0


@pytest.mark.parametrize(
    ("interval", "days"),
    [(Interval.M1, 31), (Interval.M5, 61), (Interval.M15, 61), (Interval.H1, 731)],
)
def test_intraday_windows_beyond_the_reach_are_refused_before_any_request(
    serve_fake, fake, provider_for, interval, days
):
    window = Window(NOW - days * DAY, NOW - (days - 1) * DAY)
    with serve_fake(fake) as server, pytest.raises(OutOfReachError, match="only") as caught:
        provider_for(server.url).fetch("AAPL", interval, window)
    assert len(server.requests) == 0
    assert f"last {days - 1} days" in caught.value.message


def test_the_servers_own_reach_refusal_is_out_of_reach_too(serve_fake, fake, provider_for):
    with serve_fake(fake) as server:
        provider = provider_for(server.url)
        provider.now = lambda: NOW - 5 * DAY  # our clock lags the server's
        with pytest.raises(OutOfReachError, match="within the last 30 days") as caught:
            provider.fetch("BTC-USD", Interval.M1, Window(NOW - 33 * DAY, NOW - 32 * DAY))
    assert len(server.requests) == 1  # not retried
    assert (caught.value.provider, caught.value.symbol) == ("yahoo", "BTC-USD")


def test_data_does_not_exist_for_the_range_means_no_candles(serve_fake, fake, provider_for):
    fake.empty_as_400 = True
    fake.listings["AAPL"].bars["1d"] = []
    window = Window(midnight(date(2024, 3, 9)), midnight(date(2024, 3, 10)))
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch("AAPL", Interval.D1, window)
    assert len(candles) == 0
    assert len(server.requests) == 1


def test_a_range_without_bars_comes_back_empty_not_failed(serve_fake, fake, provider_for):
    fake.listings["AAPL"].bars["1d"] = []
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch(
            "AAPL", Interval.D1, Window(midnight(date(2024, 3, 9)), midnight(date(2024, 3, 10)))
        )
    assert len(candles) == 0


def test_an_unknown_symbol_is_not_listed_and_not_retried(serve_fake, fake, provider_for):
    with (
        serve_fake(fake) as server,
        pytest.raises(SymbolNotListedError, match=r"yahoo does not list ZZZZ.*may be delisted"),
    ):
        provider_for(server.url).fetch("ZZZZ", Interval.D1, Window(NOW - DAY, NOW))
    assert len(server.requests) == 1


def test_a_not_found_error_inside_a_200_body_is_not_listed(serve_fake, fake, provider_for):
    fake.error_in_200 = {
        "code": "Not Found",
        "description": "No data found, symbol may be delisted",
    }
    with serve_fake(fake) as server, pytest.raises(SymbolNotListedError):
        provider_for(server.url).fetch("AAPL", Interval.D1, Window(NOW - DAY, NOW))


def test_another_error_inside_a_200_body_is_a_bad_payload(serve_fake, fake, provider_for):
    fake.error_in_200 = {"code": "Internal Server Error", "description": "boom"}
    with serve_fake(fake) as server, pytest.raises(BadPayloadError, match="boom"):
        provider_for(server.url).fetch("AAPL", Interval.D1, Window(NOW - DAY, NOW))


def test_symbols_pass_through_url_encoded_and_overrides_win(serve_fake, fake, provider_for):
    fake.listings["^GSPC"] = Listing(bars={"1d": []})
    fake.listings["BRK-B"] = Listing(bars={"1d": []})
    with serve_fake(fake) as server:
        provider = provider_for(server.url, symbols={"BRK.B": "BRK-B"})
        assert provider.provider_symbol("BTC-USD") == "BTC-USD"
        assert provider.provider_symbol("BRK.B") == "BRK-B"
        for symbol in ("^GSPC", "BRK.B"):
            provider.fetch(symbol, Interval.D1, Window(NOW - DAY, NOW))
    assert server.paths() == ["/v8/finance/chart/%5EGSPC", "/v8/finance/chart/BRK-B"]


def test_the_browser_user_agent_gets_through_where_a_bare_client_gets_429(
    serve_fake, fake, provider_for
):
    with serve_fake(fake) as server:
        provider_for(server.url).fetch("AAPL", Interval.D1, Window(NOW - DAY, NOW))
        assert "Mozilla" in server.requests[0].headers["user-agent"]
        bare = httpx.get(server.url + "/v8/finance/chart/AAPL", headers={"User-Agent": "curl/8"})
    assert bare.status_code == 429 and bare.text == "Too Many Requests"


def test_throttling_is_retried_then_succeeds(serve_fake, fake, provider_for):
    fake.fail_next = [Reply(429, "Too Many Requests"), Reply(429, "Edge: Too Many Requests")]
    window = Window(midnight(date(2024, 3, 4)), midnight(date(2024, 3, 6)))
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch("AAPL", Interval.D1, window)
    assert len(server.requests) == 3
    assert len(candles) == 2


def test_retries_give_up_with_a_transient_error(serve_fake, fake, provider_for):
    fake.fail_next = [Reply(429, "Too Many Requests")] * 5
    with (
        serve_fake(fake) as server,
        pytest.raises(ProviderUnavailableError, match="HTTP 429: Too Many Requests"),
    ):
        provider_for(server.url).fetch("AAPL", Interval.D1, Window(NOW - DAY, NOW))
    assert len(server.requests) == 3


def test_unsupported_interval_raises_before_any_request(serve_fake, fake, provider_for):
    with serve_fake(fake) as server, pytest.raises(UnsupportedIntervalError, match="6h"):
        provider_for(server.url).fetch("AAPL", Interval.H6, Window(NOW - DAY, NOW))
    assert len(server.requests) == 0


@pytest.mark.parametrize(
    "reply",
    [
        Reply(200, "<!DOCTYPE html><html><title>Yahoo consent</title></html>"),
        Reply(200, b'{"chart":{"result":[{"meta":{"currency":"USD"},"timestamp":[1709562600',
              {"Content-Type": "application/json"}),
    ],
)  # fmt: skip
def test_html_and_truncated_bodies_with_200_are_rejected(serve_fake, fake, provider_for, reply):
    fake.fail_next = [reply]
    with serve_fake(fake) as server, pytest.raises(BadPayloadError, match="not JSON"):
        provider_for(server.url).fetch("AAPL", Interval.D1, Window(NOW - DAY, NOW))


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ((None, 1.0, 0.5, 0.8, 10), "partly null"),
        (("1.0", 1.0, 0.5, 0.8, 10), "not numbers"),
        ((1.0, 1.0, 0.5, 0.8, "10"), "volume is not a number"),
        ((True, 1.0, 0.5, 0.8, 10), "not numbers"),
    ],
)
def test_half_null_or_string_values_fail_the_fetch_naming_the_row(
    serve_fake, fake, provider_for, row, match
):
    ts = session_open(date(2024, 3, 5), "America/New_York")
    fake.listings["AAPL"].bars["1d"] = [(ts, *row)]
    window = Window(midnight(date(2024, 3, 5)), midnight(date(2024, 3, 6)))
    with serve_fake(fake) as server, pytest.raises(BadPayloadError, match=match) as caught:
        provider_for(server.url).fetch("AAPL", Interval.D1, window)
    assert str(ts) in caught.value.message and "AAPL" in caught.value.message


def test_a_null_volume_next_to_real_prices_is_zero(serve_fake, fake, provider_for):
    ts = session_open(date(2024, 3, 5), "America/New_York")
    fake.listings["AAPL"].bars["1d"] = [(ts, 1.0, 2.0, 0.5, 1.5, None)]
    window = Window(midnight(date(2024, 3, 5)), midnight(date(2024, 3, 6)))
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch("AAPL", Interval.D1, window)
    assert list(candles.rows()) == [(midnight(date(2024, 3, 5)), 1.0, 2.0, 0.5, 1.5, 0.0)]


def test_columns_shorter_than_the_timestamps_fail_the_fetch(serve_fake, fake, provider_for):
    body = {"chart": {"error": None, "result": [{
        "meta": {"exchangeTimezoneName": "America/New_York"},
        "timestamp": [1709562600, 1709649000],
        "indicators": {"quote": [{"open": [1.0], "high": [1.0], "low": [1.0], "close": [1.0],
                                  "volume": [1]}]},
    }]}}  # fmt: skip
    fake.fail_next = [Reply(200, body)]
    with serve_fake(fake) as server, pytest.raises(BadPayloadError, match="open column"):
        provider_for(server.url).fetch("AAPL", Interval.D1, Window(NOW - DAY, NOW))


def test_a_repeated_live_bar_and_out_of_order_rows_come_out_once_and_ascending(
    serve_fake, fake, provider_for
):
    day = [date(2024, 3, 4), date(2024, 3, 5)]
    first, second = daily_rows(day, "America/New_York")
    live = (second[0] + 3 * 3600, 9.0, 9.5, 8.5, 9.25, 7)  # the same date, later in the day
    fake.listings["AAPL"].bars["1d"] = [second, first, live]
    window = Window(midnight(day[0]), midnight(day[1]) + DAY)
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch("AAPL", Interval.D1, window)
    assert candles.ts.tolist() == [midnight(day[0]), midnight(day[1])]
    assert candles.close.tolist() == [first[4], 9.25]


def test_bars_outside_the_window_are_dropped(serve_fake, fake, provider_for):
    window = Window(midnight(date(2024, 3, 6)), midnight(date(2024, 3, 7)))
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch("AAPL", Interval.D1, window)
    # the request asked a day more each side, so the 5th and 7th came back too
    assert candles.ts.tolist() == [midnight(date(2024, 3, 6))]


def test_check_asks_for_one_daily_bar(serve_fake, fake, provider_for):
    fake.listings["SPY"] = Listing(bars={"1d": daily_rows([date(2024, 3, 15)], "America/New_York")})
    with serve_fake(fake) as server:
        latency = provider_for(server.url).check()
    assert server.paths() == ["/v8/finance/chart/SPY"]
    assert server.requests[0].query == {"range": "1d", "interval": "1d"}
    assert latency > 0


def test_session_open_helper_follows_daylight_saving():
    before = session_open(date(2024, 3, 8), "America/New_York")
    after = session_open(date(2024, 3, 11), "America/New_York")
    assert before - midnight(date(2024, 3, 8)) == int(
        timedelta(hours=14, minutes=30).total_seconds()
    )
    assert after - midnight(date(2024, 3, 11)) == int(
        timedelta(hours=13, minutes=30).total_seconds()
    )


YAHOO_HINT = (
    "check the symbol (Yahoo spells indices ^GSPC and FX EURUSD=X), or map it with "
    "`marketdata markets add SYMBOL --provider-symbol yahoo=TICKER`"
)


@pytest.mark.parametrize(
    ("error", "message"),
    [
        ({"code": "Not Found", "description": "No data for that ticker"},
         "yahoo does not list AAPL (No data for that ticker)"),
        ({"code": "Bad Request", "description": "symbol may be Delisted"},
         "yahoo does not list AAPL (symbol may be Delisted)"),
        ({"code": "NOT FOUND"}, "yahoo does not list AAPL"),
    ],
)  # fmt: skip
def test_a_not_found_code_or_a_delisting_inside_a_200_body_is_not_listed(
    serve_fake, fake, provider_for, error, message
):
    fake.error_in_200 = error
    with serve_fake(fake) as server, pytest.raises(SymbolNotListedError) as caught:
        provider_for(server.url).fetch("AAPL", Interval.D1, Window(NOW - DAY, NOW))
    assert told(caught.value) == ("SymbolNotListedError", message, YAHOO_HINT, "yahoo", "AAPL")


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        ({"code": "Internal Server Error", "description": "  too\n   busy  "}, "'too busy'"),
        ({"code": "Internal Server Error", "description": ""}, "'internal server error'"),
        ({"description": None}, "{'description': None}"),
        ("boom", "'boom'"),
        ({"code": "Bad Request", "description": "x" * 300}, repr("x" * 200)),
    ],
)
def test_another_error_inside_a_200_body_shows_its_description_code_or_itself(
    serve_fake, fake, provider_for, error, shown
):
    fake.error_in_200 = error
    with serve_fake(fake) as server, pytest.raises(BadPayloadError) as caught:
        provider_for(server.url).fetch("AAPL", Interval.D1, Window(NOW - DAY, NOW))
    assert told(caught.value) == (
        "BadPayloadError",
        f"yahoo refused the request for AAPL: {shown}",
        None,
        "yahoo",
        "AAPL",
    )


@pytest.mark.parametrize("body", [[], {"chart": "gone"}, {"chart": {"error": None}}, "x"])
def test_a_404_without_a_chart_error_object_is_not_listed_without_detail(provider_for, body):
    provider = provider_for("http://127.0.0.1:9")
    error = provider.classify(httpx.Response(404, json=body), "ZZZZ")
    assert told(error) == ("SymbolNotListedError", "yahoo does not list ZZZZ", YAHOO_HINT,
                           "yahoo", "ZZZZ")  # fmt: skip
    plain = provider.classify(httpx.Response(404, text="<html>Not Found</html>"), "ZZZZ")
    assert plain.message == "yahoo does not list ZZZZ"


def test_a_page_names_its_symbol_interval_and_provider(serve_fake, fake, provider_for):
    window = Window(midnight(date(2024, 3, 4)), midnight(date(2024, 3, 6)))
    with serve_fake(fake) as server:
        page = provider_for(server.url).fetch_page("AAPL", Interval.D1, window)
    assert (page.symbol, page.interval, page.provider) == ("AAPL", Interval.D1, "yahoo")
    assert len(page) == 3  # a day more each side: `fetch` cuts pages to the window


def test_the_zone_name_dates_daily_bars_where_the_current_gmt_offset_would_not(
    serve_fake, fake, provider_for
):
    day = date(2024, 4, 2)  # London summer time; Yahoo's gmtoffset is the offset of today
    fake.listings["EURUSD=X"] = Listing(
        timezone="Europe/London", gmtoffset=0,
        bars={"1d": daily_rows([day], "Europe/London", at=time(0, 0))},
    )  # fmt: skip
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch(
            "EURUSD=X", Interval.D1, Window(midnight(day), midnight(day) + DAY)
        )
    assert candles.ts.tolist() == [midnight(day)]


def test_a_gmt_offset_of_a_whole_day_or_more_cannot_date_daily_bars(serve_fake, fake, provider_for):
    fake.drop_meta_zone = True
    fake.listings["AAPL"].gmtoffset = DAY
    window = Window(midnight(date(2024, 3, 4)), midnight(date(2024, 3, 6)))
    with serve_fake(fake) as server, pytest.raises(BadPayloadError, match="time zone"):
        provider_for(server.url).fetch("AAPL", Interval.D1, window)


def test_a_reply_without_a_volume_column_gives_zero_volumes(serve_fake, fake, provider_for):
    """Indices and FX come without volume: the prices are kept, with volume 0."""
    ts = session_open(date(2024, 3, 5), "America/New_York")
    body = {"chart": {"error": None, "result": [{
        "meta": {"exchangeTimezoneName": "America/New_York"},
        "timestamp": [ts],
        "indicators": {"quote": [{"open": [1.0], "high": [2.0], "low": [0.5], "close": [1.5]}]},
    }]}}  # fmt: skip
    fake.fail_next = [Reply(200, body)]
    window = Window(midnight(date(2024, 3, 5)), midnight(date(2024, 3, 6)))
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch("AAPL", Interval.D1, window)
    assert list(candles.rows()) == [(midnight(date(2024, 3, 5)), 1.0, 2.0, 0.5, 1.5, 0.0)]


def test_a_provider_symbol_holding_a_slash_stays_one_path_segment(serve_fake, fake, provider_for):
    fake.fail_next = [Reply(404, {"chart": {"result": None, "error": None}})]
    with serve_fake(fake) as server, pytest.raises(ProviderError):
        provider_for(server.url, symbols={"BRK-B": "BRK/B"}).fetch(
            "BRK-B", Interval.D1, Window(NOW - DAY, NOW)
        )
    assert server.paths() == ["/v8/finance/chart/BRK%2FB"]


def test_a_body_that_is_not_json_names_the_symbol(serve_fake, fake, provider_for):
    fake.fail_next = [Reply(200, "<html>consent.yahoo.com</html>")]
    with serve_fake(fake) as server, pytest.raises(BadPayloadError) as caught:
        provider_for(server.url).fetch("AAPL", Interval.D1, Window(NOW - DAY, NOW))
    assert (caught.value.provider, caught.value.symbol) == ("yahoo", "AAPL")
    assert caught.value.message.startswith("yahoo sent a body that is not JSON")


def test_an_empty_window_asks_nothing(serve_fake, fake, provider_for):
    midnight = NOW - 12 * 3600
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch("AAPL", Interval.D1, Window(midnight, midnight))
    assert len(candles) == 0
    assert server.requests == []


def test_the_intraday_reach_is_refused_to_the_second_with_the_first_day_to_ask(
    serve_fake, fake, provider_for
):
    """1m candles reach 30 days back, less a 5-minute margin: a window starting exactly at
    that edge is asked for, one starting a minute earlier is refused before any request,
    naming the first whole day within reach; an empty window asks nothing and is no error."""
    edge = NOW - 30 * DAY + 300  # 2024-02-14 12:05 UTC
    with serve_fake(fake) as server:
        provider = provider_for(server.url)
        provider.fetch("AAPL", Interval.M1, Window(edge, edge + 60))
        assert len(server.requests) == 1
        with pytest.raises(OutOfReachError) as caught:
            provider.fetch("AAPL", Interval.M1, Window(edge - 60, edge))
        assert caught.value.message == (
            "yahoo serves 1m candles for the last 30 days only; the window for AAPL starts "
            "2024-02-14T12:04+00:00"
        )
        assert caught.value.hint == "start on or after 2024-02-15, or use a coarser interval"
        old = NOW - 40 * DAY
        assert len(provider.fetch("AAPL", Interval.M1, Window(old, old))) == 0
        assert len(server.requests) == 1


def test_the_intraday_reach_is_measured_on_the_run_s_clock(serve_fake, fake, provider_context):
    """Left as built, the provider tells Yahoo's intraday reach by the run's clock
    (ProviderContext.clock), so pinning the run's clock pins the reach: by the clock of the
    machine the window at the edge would be years out of reach."""
    edge = NOW - 30 * DAY + 300
    with serve_fake(fake) as server:
        ctx = provider_context(yahoo_base_url=server.url)
        ctx.limiter_factory = no_wait
        ctx.clock = lambda: NOW
        provider = YahooProvider(ctx)
        provider.fetch("AAPL", Interval.M1, Window(edge, edge + 60))
        with pytest.raises(OutOfReachError, match="starts 2024-02-14T12:04"):
            provider.fetch("AAPL", Interval.M1, Window(edge - 60, edge))
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("body", "kind", "message"),
    [
        (
            {
                "chart": {
                    "result": None,
                    "error": {"code": "Bad Request", "description": "Invalid input"},
                }
            },
            "BadPayloadError",
            "yahoo refused the request for AAPL: 'Invalid input'",
        ),
        (
            {
                "chart": {
                    "result": None,
                    "error": {
                        "code": "Not Found",
                        "description": "No data found, symbol may be delisted",
                    },
                }
            },
            "SymbolNotListedError",
            "yahoo does not list AAPL (No data found, symbol may be delisted)",
        ),
        ({"message": "bad"}, "BadPayloadError", "yahoo refused the request with HTTP 400"),
    ],
)
def test_a_400_is_told_by_its_chart_error_or_as_a_refusal(
    serve_fake, fake, provider_for, body, kind, message
):
    fake.fail_next = [Reply(400, body)]
    with serve_fake(fake) as server, pytest.raises(ProviderError) as caught:
        provider_for(server.url).fetch("AAPL", Interval.D1, Window(NOW - DAY, NOW))
    assert (type(caught.value).__name__, caught.value.provider, caught.value.symbol) == (
        kind,
        "yahoo",
        "AAPL",
    )
    assert caught.value.message.startswith(message)
