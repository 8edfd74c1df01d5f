"""Stooq provider against a fake Stooq CSV download on a loopback socket."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import httpx
import pytest

from marketdata.domain import Interval, Window
from marketdata.errors import (
    AccessRefusedError,
    BadPayloadError,
    ProviderUnavailableError,
    SymbolNotListedError,
    UnsupportedIntervalError,
)
from marketdata.observability.metrics import RecordingMetrics
from marketdata.providers.stooq import APIKEY_PAGE as KEY_URL
from marketdata.providers.stooq import StooqProvider, _parse_date
from tests.fakes.limits import no_wait
from tests.fakes.market import walk
from tests.fakes.server import Reply
from tests.fakes.stooq import APIKEY_PAGE, FakeStooq, Series
from tests.providers.expect import told

DAY = 86_400
EPOCH = date(1970, 1, 1)
SECRET = "stq-K3y-0123456789"


def midnight(day: date) -> int:
    return (day - EPOCH).days * DAY


def weekdays(first: date, last: date) -> list[date]:
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    return [d for d in days if d.weekday() < 5]


DAYS = weekdays(date(2024, 1, 2), date(2024, 3, 28))
AAPL = [
    (d.isoformat(), *r[1:5], int(r[5] * 1000))
    for d, r in zip(DAYS, walk(0, DAY, len(DAYS)), strict=True)
]
SPX = [
    (d.isoformat(), *r[1:5], 0)
    for d, r in zip(DAYS, walk(0, DAY, len(DAYS), seed=5, price=4700), strict=True)
]
FEB = Window(midnight(date(2024, 2, 1)), midnight(date(2024, 3, 1)))


@pytest.fixture
def fake() -> FakeStooq:
    return FakeStooq(
        series={"aapl.us": Series(list(AAPL)), "^spx": Series(list(SPX), volume=False)}
    )


@pytest.fixture
def provider_for(provider_context):
    def build(url: str, **overrides) -> StooqProvider:
        symbols = overrides.pop("symbols", {})
        ctx = provider_context(stooq_base_url=url, **overrides)
        ctx.limiter_factory = no_wait
        ctx.symbol_overrides = {"stooq": symbols}
        return StooqProvider(ctx)

    return build


def test_a_window_comes_in_one_request_started_two_weeks_early_and_cut_to_the_window(
    serve_fake, fake, provider_for
):
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch("AAPL", Interval.D1, FEB)
    assert len(server.requests) == 1
    query = server.requests[0].query
    assert query == {"s": "aapl.us", "i": "d", "d1": "20240118", "d2": "20240229"}
    expected = [r for r in AAPL if "2024-02-01" <= r[0] < "2024-03-01"]
    assert candles.ts.tolist() == [midnight(date.fromisoformat(r[0])) for r in expected]
    assert next(candles.rows())[1:] == tuple(float(v) for v in expected[0][1:])
    assert candles.volume.tolist() == [float(r[5]) for r in expected]


def test_an_index_without_a_volume_column_gets_volume_zero(serve_fake, fake, provider_for):
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch("^GSPC", Interval.D1, FEB)
    assert server.requests[0].query["s"] == "^spx"
    assert len(candles) == 21
    assert set(candles.volume.tolist()) == {0.0}
    assert candles.close[0] == next(r[4] for r in SPX if r[0] == "2024-02-01")


def test_a_weekend_window_of_a_listed_symbol_is_empty_not_an_error(serve_fake, fake, provider_for):
    weekend = Window(midnight(date(2024, 2, 3)), midnight(date(2024, 2, 5)))
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch("AAPL", Interval.D1, weekend)
    assert len(candles) == 0
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("symbol", "expected"),
    [
        ("AAPL", "aapl.us"),
        ("BRK.B", "brk-b.us"),
        ("TSCO.UK", "tsco.uk"),
        ("VOD.L", "vod.uk"),
        ("7203.T", "7203.jp"),
        ("^GSPC", "^spx"),
        ("^IXIC", "^ndq"),
        ("^FTSE", "^ftse"),
        ("EURUSD=X", "eurusd"),
        ("ABCDEFGH", "abcdefgh.us"),  # eight letters without =X are no FX pair
        ("BT.A.L", "bt.a.uk"),  # the market is the last dot's suffix
    ],
)
def test_symbols_map_to_stooq_names(provider_for, symbol, expected):
    assert provider_for("http://127.0.0.1:9").provider_symbol(symbol) == expected


def test_an_override_is_sent_as_the_stooq_name(serve_fake, fake, provider_for):
    fake.series["^dax"] = Series(list(SPX), volume=False)
    with serve_fake(fake) as server:
        candles = provider_for(server.url, symbols={"^GDAXI": "^dax"}).fetch(
            "^GDAXI", Interval.D1, FEB
        )
    assert server.requests[0].query["s"] == "^dax"
    assert len(candles) == 21


def test_crypto_pairs_are_not_listed_before_any_request(serve_fake, fake, provider_for):
    with serve_fake(fake) as server, pytest.raises(SymbolNotListedError, match="crypto") as caught:
        provider_for(server.url).fetch("BTC-USD", Interval.D1, FEB)
    assert len(server.requests) == 0
    assert "--provider-symbol stooq=" in (caught.value.hint or "")


def test_no_data_names_both_possibilities_and_is_not_retried(serve_fake, fake, provider_for):
    with (
        serve_fake(fake) as server,
        pytest.raises(
            SymbolNotListedError, match=r"no data for ZZZZ \(zzzz.us\): it does not list it, or"
        ),
    ):
        provider_for(server.url).fetch("ZZZZ", Interval.D1, FEB)
    assert len(server.requests) == 1


def test_the_daily_limit_is_transient_not_retried_and_stops_later_requests(
    serve_fake, fake, provider_for
):
    fake.mode = "limit"
    with serve_fake(fake) as server:
        provider = provider_for(server.url)
        with pytest.raises(ProviderUnavailableError, match="daily download quota") as caught:
            provider.fetch("AAPL", Interval.D1, FEB)
        assert len(server.requests) == 1
        assert caught.value.transient
        with pytest.raises(ProviderUnavailableError, match="quota"):
            provider.fetch("^GSPC", Interval.D1, FEB)
    assert len(server.requests) == 1


def test_the_daily_limit_with_a_trailing_bang_is_recognised(serve_fake, fake, provider_for):
    fake.fail_next = [Reply(200, "Exceeded the daily hits limit!\n")]
    with serve_fake(fake) as server, pytest.raises(ProviderUnavailableError, match="quota"):
        provider_for(server.url).fetch("AAPL", Interval.D1, FEB)


def test_the_api_key_page_without_a_key_says_to_set_one(serve_fake, fake, provider_for):
    fake.mode = "apikey"
    with (
        serve_fake(fake) as server,
        pytest.raises(AccessRefusedError, match="requires an API key") as caught,
    ):
        provider_for(server.url).fetch("AAPL", Interval.D1, FEB)
    assert "STOOQ_API_KEY" in (caught.value.hint or "")
    assert "apikey" not in server.requests[0].query
    assert len(server.requests) == 1


def test_the_key_is_sent_as_apikey_and_a_refused_key_never_shows_in_the_error(
    serve_fake, fake, provider_for
):
    fake.required_key = SECRET
    with serve_fake(fake) as server:
        provider = provider_for(server.url, stooq_api_key=SECRET)
        assert len(provider.fetch("AAPL", Interval.D1, FEB)) == 21
        assert server.requests[0].query["apikey"] == SECRET
        fake.required_key = "another"
        with pytest.raises(AccessRefusedError, match="refused STOOQ_API_KEY") as caught:
            provider.fetch("AAPL", Interval.D1, FEB)
    assert SECRET not in caught.value.one_line()


def test_a_bot_check_page_is_named_as_such(serve_fake, fake, provider_for):
    fake.mode = "challenge"
    with serve_fake(fake) as server, pytest.raises(AccessRefusedError, match="bot-check"):
        provider_for(server.url).fetch("AAPL", Interval.D1, FEB)


def test_a_body_not_starting_with_the_csv_header_is_rejected_with_the_key_masked(
    serve_fake, fake, provider_for
):
    fake.raw_body = f"Warning: fopen(/q/d/l/?s=aapl.us&apikey={SECRET}) failed\nDate,Open\n"
    with serve_fake(fake) as server, pytest.raises(BadPayloadError, match="not its CSV") as caught:
        provider_for(server.url, stooq_api_key=SECRET).fetch("AAPL", Interval.D1, FEB)
    assert SECRET not in caught.value.one_line()
    assert "***" in caught.value.message


def test_server_errors_are_retried_then_succeed_and_never_show_the_key(
    serve_fake, fake, provider_for
):
    fake.fail_next = [Reply(503, f"busy; apikey={SECRET}"), Reply(502, "bad gateway")]
    with serve_fake(fake) as server:
        candles = provider_for(server.url, stooq_api_key=SECRET).fetch("AAPL", Interval.D1, FEB)
    assert len(server.requests) == 3
    assert len(candles) == 21


def test_retries_give_up_with_a_transient_error_without_the_key(serve_fake, fake, provider_for):
    fake.fail_next = [Reply(503, f"busy; apikey={SECRET}")] * 5
    with (
        serve_fake(fake) as server,
        pytest.raises(ProviderUnavailableError, match="HTTP 503") as caught,
    ):
        provider_for(server.url, stooq_api_key=SECRET).fetch("AAPL", Interval.D1, FEB)
    assert len(server.requests) == 3
    assert SECRET not in caught.value.one_line()


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("2024-02-01,1.0,2.0,0.5", "wrong number of fields"),
        ("2024-02-01,1.0,abc,0.5,1.5,100", "not a number"),
        ("2024-02-01,1.0,,0.5,1.5,100", "not a number"),
        ("2024-02-01,1.0,nan,0.5,1.5,100", "not a number"),
        ("1 234.5,1.0,2.0,0.5,1.5,100", "date"),
        ("2024/02/01,1.0,2.0,0.5,1.5,100", "date"),
    ],
)
def test_a_bad_csv_row_fails_the_fetch_naming_the_row(serve_fake, fake, provider_for, line, match):
    fake.raw_body = f"Date,Open,High,Low,Close,Volume\r\n2024-01-31,1,2,0.5,1.5,10\r\n{line}\r\n"
    with serve_fake(fake) as server, pytest.raises(BadPayloadError, match=match) as caught:
        provider_for(server.url).fetch("AAPL", Interval.D1, FEB)
    assert line.split(",")[0] in caught.value.message and "AAPL" in caught.value.message


def test_a_header_without_a_price_column_fails_the_fetch(serve_fake, fake, provider_for):
    fake.raw_body = "Date,Open,High,Close\r\n2024-02-01,1,2,1.5\r\n"
    with serve_fake(fake) as server, pytest.raises(BadPayloadError, match="header"):
        provider_for(server.url).fetch("AAPL", Interval.D1, FEB)


def test_old_dates_empty_volumes_duplicates_and_disorder_are_handled(
    serve_fake, fake, provider_for
):
    fake.raw_body = (
        "Date,Open,High,Low,Close,Volume\n"
        "2024-02-05,3,4,2.5,3.5,\n"
        "20240202,1,2,0.5,1.5,10\n"
        "2024-02-05,5,6,4.5,5.5,30\n"
        "2024-03-01,9,9,9,9,9\n"
        "\n"
    )
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch("AAPL", Interval.D1, FEB)
    assert list(candles.rows()) == [
        (midnight(date(2024, 2, 2)), 1.0, 2.0, 0.5, 1.5, 10.0),
        (midnight(date(2024, 2, 5)), 5.0, 6.0, 4.5, 5.5, 30.0),
    ]


def test_unsupported_interval_raises_before_any_request(serve_fake, fake, provider_for):
    with serve_fake(fake) as server, pytest.raises(UnsupportedIntervalError, match="1h"):
        provider_for(server.url).fetch("AAPL", Interval.H1, FEB)
    assert len(server.requests) == 0


def test_check_downloads_two_weeks_of_the_sp500(serve_fake, fake, provider_for):
    fake.series["^spx"].rows = [(datetime.now(tz=UTC).date().isoformat(), 1, 2, 0.5, 1.5, 0)]
    with serve_fake(fake) as server:
        latency = provider_for(server.url).check()
    assert server.requests[0].query["s"] == "^spx"
    assert latency > 0


def test_a_window_ending_a_second_past_midnight_asks_for_that_day_too(
    serve_fake, fake, provider_for
):
    window = Window(midnight(date(2024, 2, 1)), midnight(date(2024, 2, 2)) + 1)
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch("AAPL", Interval.D1, window)
    assert server.requests[0].query["d2"] == "20240202"
    assert candles.ts.tolist() == [midnight(date(2024, 2, 1)), midnight(date(2024, 2, 2))]


def test_a_page_names_its_symbol_interval_and_provider(serve_fake, fake, provider_for):
    with serve_fake(fake) as server:
        page = provider_for(server.url).fetch_page("AAPL", Interval.D1, FEB)
    assert (page.symbol, page.interval, page.provider) == ("AAPL", Interval.D1, "stooq")
    assert len(page) == 31  # the two weeks before the window come too


def test_old_style_dates_read_every_digit_and_nothing_else_passes():
    assert _parse_date("20241112") == midnight(date(2024, 11, 12))
    assert _parse_date(" 2024-11-12 ") == midnight(date(2024, 11, 12))
    assert _parse_date("202411011") is None  # nine digits
    assert _parse_date("2024-2-1") is None
    assert _parse_date("20241340") is None


def test_no_data_behind_a_byte_order_mark_is_still_not_listed(provider_for):
    provider = provider_for("http://127.0.0.1:9")
    error = provider.classify(httpx.Response(200, text="\ufeffNo data\r\n"), "AAPL")
    assert told(error) == (
        "SymbolNotListedError",
        "stooq has no data for AAPL (aapl.us): it does not list it, or has no candles in or "
        "up to 14 days before the window",
        "check the symbol, or map it with `marketdata markets add SYMBOL "
        "--provider-symbol stooq=NAME` (e.g. aapl.us, ^spx)",
        "stooq",
        "AAPL",
    )
    assert provider.classify(httpx.Response(200, text="\ufeffDate,Open\r\n"), "AAPL") is None


def test_no_data_for_a_symbol_without_a_stooq_name_or_without_a_symbol(provider_for):
    provider = provider_for("http://127.0.0.1:9")
    crypto = provider.classify(httpx.Response(200, text="No data"), "BTC-USD")
    assert crypto.message.startswith("stooq has no data for BTC-USD: it does not list it")
    unnamed = provider.classify(httpx.Response(200, text="No data"), None)
    assert unnamed.message.startswith("stooq has no data for None: it does not list it")


BOT_HINT = "Stooq challenges non-browser clients at times; try later or another provider"
HTML_HINT = "STOOQ_API_KEY may be required or invalid, or a bot check blocked the request"


@pytest.mark.parametrize(
    ("body", "key", "message", "hint"),
    [
        (APIKEY_PAGE, None, "stooq requires an API key (it answered with its API-key page)",
         f"get one at {KEY_URL} and set STOOQ_API_KEY"),
        ("<html><p>Downloads need an API key.</p></html>", None,
         "stooq requires an API key (it answered with its API-key page)",
         f"get one at {KEY_URL} and set STOOQ_API_KEY"),
        ('<html><a href="/q/d/?get_apikey">Get</a></html>', SECRET,
         "stooq refused STOOQ_API_KEY (it answered with its API-key page)",
         f"check STOOQ_API_KEY; a new key comes from {KEY_URL}"),
        ('<!DOCTYPE html><form action="/__verify"></form>', None,
         "stooq answered with a bot-check page (/__verify) instead of CSV", BOT_HINT),
        ("<!DOCTYPE html><body>Maintenance</body>", None,
         "stooq answered with an HTML page instead of CSV", HTML_HINT),
        ("Notice: moved\n<HTML><body>Maintenance</body></HTML>", None,
         "stooq answered with an HTML page instead of CSV", HTML_HINT),
    ],
)  # fmt: skip
def test_each_html_page_is_named_with_what_to_do(provider_for, body, key, message, hint):
    provider = provider_for("http://127.0.0.1:9", stooq_api_key=key)
    error = provider.classify(httpx.Response(200, text=body), "AAPL")
    assert told(error) == ("AccessRefusedError", f"{message} for AAPL", hint, "stooq", "AAPL")


def test_an_http_error_names_the_symbol_and_hides_the_key_in_its_message(
    serve_fake, fake, provider_for
):
    fake.fail_next = [Reply(400, f"bad request; apikey={SECRET}")]
    with serve_fake(fake) as server, pytest.raises(BadPayloadError) as caught:
        provider_for(server.url, stooq_api_key=SECRET).fetch("AAPL", Interval.D1, FEB)
    assert told(caught.value) == (
        "BadPayloadError",
        "stooq refused the request with HTTP 400: bad request; apikey=***",
        None,
        "stooq",
        "AAPL",
    )
    fake.fail_next = [Reply(400, "bad request")]
    with serve_fake(fake) as server, pytest.raises(BadPayloadError) as caught:
        provider_for(server.url).fetch("AAPL", Interval.D1, FEB)
    assert caught.value.message == "stooq refused the request with HTTP 400: bad request"


def test_the_quota_and_crypto_errors_name_provider_and_symbol(serve_fake, fake, provider_for):
    fake.mode = "limit"
    with serve_fake(fake) as server, pytest.raises(ProviderUnavailableError) as caught:
        provider_for(server.url).fetch("AAPL", Interval.D1, FEB)
    assert told(caught.value)[3:] == ("stooq", "AAPL")
    with pytest.raises(SymbolNotListedError) as caught:
        provider_for("http://127.0.0.1:9").fetch("BTC-USD", Interval.D1, FEB)
    assert told(caught.value) == (
        "SymbolNotListedError",
        "stooq does not list BTC-USD: crypto pairs are not served",
        "map it with `marketdata markets add SYMBOL --provider-symbol stooq=NAME` "
        "(Stooq names look like aapl.us, ^spx, eurusd)",
        "stooq",
        "BTC-USD",
    )


def test_a_csv_or_a_spent_quota_behind_a_byte_order_mark_is_read_as_without_it(
    serve_fake, fake, provider_for
):
    fake.raw_body = "\ufeffDate,Open,High,Low,Close,Volume\r\n2024-02-01,1,2,0.5,1.5,10\r\n"
    with serve_fake(fake) as server:
        provider = provider_for(server.url)
        provider.ctx.metrics = metrics = RecordingMetrics()
        candles = provider.fetch("AAPL", Interval.D1, FEB)
        assert list(candles.rows()) == [(midnight(date(2024, 2, 1)), 1.0, 2.0, 0.5, 1.5, 10.0)]
        fake.fail_next = [Reply(200, "\ufeffExceeded the daily hits limit")]
        with pytest.raises(ProviderUnavailableError, match="quota"):
            provider.fetch("AAPL", Interval.D1, FEB)
    assert metrics.counters["provider.stooq.errors"] == 1


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        ("Warning: " + "w" * 100 + "\nmore", "Warning: " + "w" * 71),
        (" \r\n", ""),
        ("XNo data", "XNo data"),  # only a byte-order mark is taken off
    ],
)
def test_a_body_that_is_not_csv_shows_at_most_80_characters_of_its_first_line(
    provider_for, body, shown
):
    error = provider_for("http://127.0.0.1:9").classify(httpx.Response(200, text=body), "AAPL")
    assert told(error) == (
        "BadPayloadError",
        f"stooq sent a body that is not its CSV for AAPL (first line: {shown!r})",
        None,
        "stooq",
        "AAPL",
    )
