"""CoinGecko provider against a fake CoinGecko API on a loopback socket."""

from __future__ import annotations

import httpx
import pytest

from marketdata.domain import Interval, Window, utc_from_epoch
from marketdata.errors import (
    AccessRefusedError,
    BadPayloadError,
    OutOfReachError,
    ProviderUnavailableError,
    SymbolNotListedError,
    UnsupportedIntervalError,
)
from marketdata.providers.coingecko import CoinGeckoProvider
from tests.fakes.coingecko import RATE_LIMITED, FakeCoinGecko, hourly_points
from tests.fakes.limits import no_wait
from tests.fakes.server import Reply
from tests.providers.expect import told

HOUR = 3600
DAY = 86_400
NOW = 1_717_200_000 + 12 * HOUR  # 2024-06-01 12:00 UTC
FIRST = NOW - 12 * HOUR - 300 * DAY  # a UTC midnight, 300 days back
POINTS = hourly_points(FIRST, 300 * 24 + 12)


def expected_daily(points, start, end):
    """Daily (ts, open, high, low, close, volume) from hourly points, days in [start, end)."""
    days: dict[int, list] = {}
    for ms, price, volume in sorted(points):
        day = ms // 1000 // DAY * DAY
        days.setdefault(day, []).append((price, volume))
    return [
        (day, v[0][0], max(p for p, _ in v), min(p for p, _ in v), v[-1][0], v[-1][1])
        for day, v in sorted(days.items())
        if start <= day < end
    ]


@pytest.fixture
def fake() -> FakeCoinGecko:
    return FakeCoinGecko(now=NOW, coins={"bitcoin": POINTS, "ethereum": POINTS[:100]})


@pytest.fixture
def provider_for(provider_context):
    def build(url: str, **overrides) -> CoinGeckoProvider:
        symbols = overrides.pop("symbols", {})
        ctx = provider_context(coingecko_base_url=url, **overrides)
        ctx.limiter_factory = no_wait
        ctx.symbol_overrides = {"coingecko": symbols}
        provider = CoinGeckoProvider(ctx)
        provider.now = lambda: NOW
        return provider

    return build


def test_a_200_day_window_comes_in_90_day_hourly_pages_as_complete_daily_candles(
    serve_fake, fake, provider_for
):
    window = Window(FIRST + 50 * DAY, FIRST + 250 * DAY)
    with serve_fake(fake) as server:
        provider = provider_for(server.url)
        candles = provider.fetch("BTC-USD", Interval.D1, window)
    assert len(server.requests) == 3 == provider.requests_needed(Interval.D1, window)
    spans = [(int(r.query["from"]), int(r.query["to"])) for r in server.requests]
    assert spans[0] == (window.start, window.start + 90 * DAY - 1)
    assert spans[1][0] == window.start + 90 * DAY
    assert all(to - frm < 90 * DAY for frm, to in spans)
    assert candles.ts.tolist() == [window.start + i * DAY for i in range(200)]
    assert list(candles.rows()) == expected_daily(POINTS, window.start, window.end)


def test_one_day_of_hourly_prices_becomes_first_max_min_last_with_the_last_volume(
    serve_fake, provider_for
):
    day = FIRST + 10 * DAY
    prices = [100.0 + i for i in range(24)]
    prices[5], prices[17] = 150.0, 90.0
    body = {
        "prices": [[(day + i * HOUR + 30) * 1000, p] for i, p in enumerate(prices)],
        "market_caps": [],
        "total_volumes": [[(day + i * HOUR + 30) * 1000, 1000.0 + i] for i in range(24)],
    }
    fake = FakeCoinGecko(now=NOW, coins={"bitcoin": []}, body_override=body)
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch("BTC-USD", Interval.D1, Window(day, day + DAY))
    assert list(candles.rows()) == [(day, 100.0, 150.0, 90.0, 123.0, 1023.0)]


def test_an_unaligned_window_end_still_asks_for_the_whole_last_day(serve_fake, fake, provider_for):
    window = Window(FIRST + 20 * DAY + 5 * HOUR, FIRST + 24 * DAY + 3 * HOUR)
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch("BTC-USD", Interval.D1, window)
    assert server.requests[0].query["from"] == str(FIRST + 20 * DAY)
    assert server.requests[0].query["to"] == str(FIRST + 25 * DAY - 1)
    # days starting inside the window: 21st..24th; the 24th is a full day of 24 points
    expected = expected_daily(POINTS, FIRST + 21 * DAY, FIRST + 25 * DAY)
    assert list(candles.rows()) == expected
    assert candles.close[-1] == [p[1] for p in POINTS if p[0] < (FIRST + 25 * DAY) * 1000][-1]


def test_out_of_order_and_duplicate_points_give_the_same_candles_as_sorted_ones(
    serve_fake, provider_for
):
    day = FIRST + 30 * DAY
    points = [p for p in POINTS if day * 1000 <= p[0] < (day + 2 * DAY) * 1000]
    shuffled = points[::-1] + points[3:6]
    body = {
        "prices": [[p[0], p[1]] for p in shuffled],
        "total_volumes": [[p[0], p[2]] for p in shuffled],
    }
    fake = FakeCoinGecko(now=NOW, coins={"bitcoin": []}, body_override=body)
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch("BTC-USD", Interval.D1, Window(day, day + 2 * DAY))
    assert list(candles.rows()) == expected_daily(points, day, day + 2 * DAY)


def test_points_outside_the_window_are_dropped(serve_fake, provider_for):
    day = FIRST + 40 * DAY
    points = [p for p in POINTS if (day - DAY) * 1000 <= p[0] < (day + 3 * DAY) * 1000]
    body = {
        "prices": [[p[0], p[1]] for p in points],
        "total_volumes": [[p[0], p[2]] for p in points],
    }
    fake = FakeCoinGecko(now=NOW, coins={"bitcoin": []}, body_override=body)
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch("BTC-USD", Interval.D1, Window(day, day + DAY))
    assert candles.ts.tolist() == [day]


def test_daily_spaced_points_cannot_make_candles_and_fail_the_fetch(serve_fake, provider_for):
    day = FIRST + 10 * DAY
    body = {
        "prices": [[(day + i * DAY) * 1000, 100.0 + i] for i in range(5)],
        "total_volumes": [[(day + i * DAY) * 1000, 5.0] for i in range(5)],
    }
    fake = FakeCoinGecko(now=NOW, coins={"bitcoin": []}, body_override=body)
    with serve_fake(fake) as server, pytest.raises(BadPayloadError, match="hourly or finer"):
        provider_for(server.url).fetch("BTC-USD", Interval.D1, Window(day, day + 5 * DAY))


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({"prices": [[1_704_067_200_000, "42000.5"]], "total_volumes": []}, "not a number"),
        ({"prices": [[1_704_067_200_000, None]], "total_volumes": []}, "not a number"),
        ({"prices": [[1_704_067_200.5, 1.0]], "total_volumes": []}, "integer epoch milliseconds"),
        ({"prices": [[2**35 * 1000, 1.0]], "total_volumes": []}, "integer epoch milliseconds"),
        ({"prices": [[1_704_067_200_000]], "total_volumes": []}, r"\[ms, value\]"),
        ({"prices": [[1_704_067_200_000, 1.0]]}, "no total_volumes"),
        ({"prices": [[1_704_067_200_000, 1.0]], "total_volumes": []}, "without total_volumes"),
        ({"error": "something"}, "no prices"),
        ([[1_704_067_200_000, 1.0]], "expected an object"),
    ],
)
def test_malformed_bodies_fail_with_a_bad_payload_naming_the_row(
    serve_fake, provider_for, body, match
):
    fake = FakeCoinGecko(now=NOW, coins={"bitcoin": []}, body_override=body)
    with serve_fake(fake) as server, pytest.raises(BadPayloadError, match=match) as caught:
        provider_for(server.url).fetch("BTC-USD", Interval.D1, Window(FIRST, FIRST + DAY))
    assert "BTC-USD" in str(caught.value)


@pytest.mark.parametrize(
    "reply",
    [
        Reply(
            200,
            b'{"prices": [[1704067200000, 42000.1], [17040',
            {"Content-Type": "application/json"},
        ),
        Reply(200, "<html><body>Cloudflare: checking your browser</body></html>"),
    ],
)
def test_truncated_json_and_html_with_200_are_rejected(serve_fake, fake, provider_for, reply):
    fake.fail_next = [reply]
    with serve_fake(fake) as server, pytest.raises(BadPayloadError, match="not JSON"):
        provider_for(server.url).fetch("BTC-USD", Interval.D1, Window(FIRST, FIRST + DAY))


def test_tickers_map_to_coin_ids_and_quotes_to_vs_currencies(serve_fake, fake, provider_for):
    with serve_fake(fake) as server:
        provider = provider_for(server.url, symbols={"ETH-EUR": "ethereum"})
        assert provider.provider_symbol("BTC-USD") == "bitcoin"
        assert provider.provider_symbol("DOGE-USD") == "dogecoin"
        assert provider.provider_symbol("AVAX-USD") == "avalanche-2"
        provider.fetch("BTC-USD", Interval.D1, Window(FIRST, FIRST + DAY))
        provider.fetch("ETH-EUR", Interval.D1, Window(FIRST, FIRST + DAY))
    assert server.paths() == [
        "/coins/bitcoin/market_chart/range",
        "/coins/ethereum/market_chart/range",
    ]
    assert [r.query["vs_currency"] for r in server.requests] == ["usd", "eur"]


def test_an_override_names_a_coin_the_table_does_not_know(serve_fake, fake, provider_for):
    fake.coins["pepe"] = POINTS[:48]
    with serve_fake(fake) as server:
        provider = provider_for(server.url, symbols={"PEPE-USD": "pepe"})
        candles = provider.fetch("PEPE-USD", Interval.D1, Window(FIRST, FIRST + 2 * DAY))
    assert server.paths() == ["/coins/pepe/market_chart/range"]
    assert len(candles) == 2


@pytest.mark.parametrize(
    ("symbol", "match"),
    [
        ("SHIB-USD", "no known CoinGecko id for SHIB"),
        ("BTC-USDT", "usdt is not a CoinGecko vs_currency"),
        ("AAPL", "crypto pairs"),
    ],
)
def test_unmapped_symbols_fail_before_any_request_with_the_override_hint(
    serve_fake, fake, provider_for, symbol, match
):
    with serve_fake(fake) as server, pytest.raises(SymbolNotListedError, match=match) as caught:
        provider_for(server.url).fetch(symbol, Interval.D1, Window(FIRST, FIRST + DAY))
    assert len(server.requests) == 0
    assert caught.value.hint is not None
    if symbol == "SHIB-USD":
        assert "--provider-symbol coingecko=ID" in caught.value.hint


def test_a_coin_id_coingecko_does_not_know_is_not_listed(serve_fake, fake, provider_for):
    with (
        serve_fake(fake) as server,
        pytest.raises(
            SymbolNotListedError,
            match="coingecko does not list XYZ-USD: it knows no coin id 'xyz-coin'",
        ),
    ):
        provider_for(server.url, symbols={"XYZ-USD": "xyz-coin"}).fetch(
            "XYZ-USD", Interval.D1, Window(FIRST, FIRST + DAY)
        )
    assert len(server.requests) == 1  # a 404 is not retried


def test_unsupported_interval_raises_before_any_request(serve_fake, fake, provider_for):
    with (
        serve_fake(fake) as server,
        pytest.raises(UnsupportedIntervalError, match="does not serve 1h"),
    ):
        provider_for(server.url).fetch("BTC-USD", Interval.H1, Window(FIRST, FIRST + DAY))
    assert len(server.requests) == 0


def test_a_window_older_than_365_days_is_out_of_reach_before_any_request(
    serve_fake, fake, provider_for
):
    with (
        serve_fake(fake) as server,
        pytest.raises(OutOfReachError, match="last 365 days") as caught,
    ):
        provider_for(server.url).fetch(
            "BTC-USD", Interval.D1, Window(NOW - 400 * DAY, NOW - 300 * DAY)
        )
    assert len(server.requests) == 0
    assert "2023-06-03" in (caught.value.hint or "")


def test_an_empty_window_beyond_the_reach_is_no_refusal(serve_fake, fake, provider_for):
    """Nothing asked is nothing out of reach: an empty window fetches nothing, raises nothing."""
    old = NOW - 12 * HOUR - 400 * DAY
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch("BTC-USD", Interval.D1, Window(old, old))
    assert len(candles) == 0 and len(server.requests) == 0


def test_the_servers_own_365_day_refusal_is_out_of_reach_too(serve_fake, fake, provider_for):
    fake.now = NOW + 200 * DAY  # the server's clock is ahead of ours
    with (
        serve_fake(fake) as server,
        pytest.raises(OutOfReachError, match=r"10012|allowed time range"),
    ):
        provider_for(server.url).fetch("BTC-USD", Interval.D1, Window(FIRST, FIRST + DAY))
    assert len(server.requests) == 1


def test_rate_limited_answers_are_retried_then_succeed(serve_fake, fake, provider_for):
    fake.fail_next = [
        Reply(429, RATE_LIMITED, {"retry-after": "7"}),
        Reply(503, "<html>Service Unavailable</html>"),
    ]
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch(
            "BTC-USD", Interval.D1, Window(FIRST, FIRST + 3 * DAY)
        )
    assert len(server.requests) == 3
    assert list(candles.rows()) == expected_daily(POINTS, FIRST, FIRST + 3 * DAY)


def test_retries_give_up_with_a_transient_error(serve_fake, fake, provider_for):
    fake.fail_next = [Reply(429, RATE_LIMITED, {"retry-after": "7"})] * 5
    with (
        serve_fake(fake) as server,
        pytest.raises(ProviderUnavailableError, match="HTTP 429") as caught,
    ):
        provider_for(server.url).fetch("BTC-USD", Interval.D1, Window(FIRST, FIRST + DAY))
    assert len(server.requests) == 3
    assert caught.value.retry_after == 7.0


def test_the_demo_key_goes_in_a_header_and_never_into_the_url_or_errors(
    serve_fake, fake, provider_for
):
    secret = "CG-s3cretDemoKey123"
    fake.required_key = secret
    with serve_fake(fake) as server:
        provider = provider_for(server.url, coingecko_api_key=secret)
        provider.fetch("BTC-USD", Interval.D1, Window(FIRST, FIRST + DAY))
        assert server.requests[0].headers["x-cg-demo-api-key"] == secret
        assert all(secret not in str(v) for v in server.requests[0].query.values())
        fake.required_key = "another"
        with pytest.raises(AccessRefusedError, match="error 10002") as caught:
            provider.fetch("BTC-USD", Interval.D1, Window(FIRST, FIRST + DAY))
    assert secret not in caught.value.one_line()
    assert "COINGECKO_API_KEY" in (caught.value.hint or "")


def test_without_a_key_no_key_header_is_sent(serve_fake, fake, provider_for):
    with serve_fake(fake) as server:
        provider_for(server.url).fetch("BTC-USD", Interval.D1, Window(FIRST, FIRST + DAY))
    assert "x-cg-demo-api-key" not in server.requests[0].headers


def test_check_pings_once(serve_fake, fake, provider_for):
    with serve_fake(fake) as server:
        latency = provider_for(server.url).check()
    assert server.paths() == ["/ping"]
    assert latency > 0


def spaced_points(day: int, hours: list[float]) -> dict:
    """A body with one price (and volume) at each of `hours` after `day`."""
    stamps = [int((day + h * HOUR) * 1000) for h in hours]
    return {
        "prices": [[ms, 100.0 + i] for i, ms in enumerate(stamps)],
        "total_volumes": [[ms, 5.0] for ms in stamps],
    }


@pytest.mark.parametrize(
    ("hours", "apart"),
    [
        ([0, 3, 6], 3),  # three points are enough to judge the spacing
        ([0, 1, 2, 5, 8], 3),  # the median gap, not the smaller ones
    ],
)
def test_prices_spaced_wider_than_two_hours_fail_the_fetch(serve_fake, provider_for, hours, apart):
    day = FIRST + 10 * DAY
    fake = FakeCoinGecko(now=NOW, coins={"bitcoin": []}, body_override=spaced_points(day, hours))
    with serve_fake(fake) as server, pytest.raises(BadPayloadError) as caught:
        provider_for(server.url).fetch("BTC-USD", Interval.D1, Window(day, day + DAY))
    assert told(caught.value) == (
        "BadPayloadError",
        f"coingecko sent prices for BTC-USD {apart * 3600} s apart; daily candles need hourly "
        "or finer points",
        None,
        "coingecko",
        "BTC-USD",
    )


@pytest.mark.parametrize("hours", [[0, 2, 4, 6], [0, 9]])
def test_two_hourly_prices_or_fewer_than_three_make_candles(serve_fake, provider_for, hours):
    day = FIRST + 10 * DAY
    fake = FakeCoinGecko(now=NOW, coins={"bitcoin": []}, body_override=spaced_points(day, hours))
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch("BTC-USD", Interval.D1, Window(day, day + DAY))
    prices = [100.0 + i for i in range(len(hours))]
    assert list(candles.rows()) == [(day, prices[0], max(prices), min(prices), prices[-1], 5.0)]


def refusal(code, message=None) -> httpx.Response:
    status = (
        {"error_code": code} if message is None else {"error_code": code, "error_message": message}
    )
    return httpx.Response(401, json={"error": {"status": status}})


def test_a_refusal_shows_coingeckos_message_on_one_line_of_at_most_200_characters(provider_for):
    provider = provider_for("http://127.0.0.1:9")
    long = provider.classify(refusal(10012, "Your request\n  exceeds " + "x" * 300), "BTC-USD")
    assert told(long) == (
        "OutOfReachError",
        "coingecko refused the window for BTC-USD: " + ("Your request exceeds " + "x" * 300)[:200],
        "keyless and Demo access reach back 365 days only",
        "coingecko",
        "BTC-USD",
    )
    bare = provider.classify(refusal(10002), "BTC-USD")
    assert told(bare) == (
        "AccessRefusedError",
        "coingecko refused the request (error 10002: )",
        "check COINGECKO_API_KEY: a Demo key for api.coingecko.com, or unset it",
        "coingecko",
        "BTC-USD",
    )


@pytest.mark.parametrize(
    "response",
    [
        refusal(10012.0, "not an integer code"),
        refusal("10012", "not an integer code"),
        httpx.Response(401, json=[{"status": {"error_code": 10012}}]),
        httpx.Response(401, json={"error": "Invalid API key"}),
        httpx.Response(401, text="<html>Unauthorized</html>"),
    ],
)
def test_a_refusal_without_an_integer_error_code_is_a_plain_http_refusal(provider_for, response):
    error = provider_for("http://127.0.0.1:9").classify(response, "BTC-USD")
    assert type(error).__name__ == "BadPayloadError"
    assert error.message.startswith("coingecko refused the request with HTTP 401")


def test_a_404_without_a_symbol_names_no_coin(provider_for):
    error = provider_for("http://127.0.0.1:9").classify(httpx.Response(404, json={}), None)
    assert error.message == "coingecko does not list the symbol asked for: it knows no coin id None"


def test_a_day_without_volumes_is_named_and_a_page_names_its_pair(serve_fake, provider_for):
    day = FIRST + 10 * DAY
    # two prices at the same millisecond: the later one in the reply is the close
    body = {
        "prices": [[day * 1000, 101.0], [(day + HOUR) * 1000, 103.0], [(day + HOUR) * 1000, 99.0]],
        "total_volumes": [[(day + HOUR) * 1000, 7.0]],
    }
    fake = FakeCoinGecko(now=NOW, coins={"bitcoin": []}, body_override=body)
    with serve_fake(fake) as server:
        page = provider_for(server.url).fetch_page("BTC-USD", Interval.D1, Window(day, day + DAY))
        assert (page.symbol, page.interval, page.provider) == ("BTC-USD", Interval.D1, "coingecko")
        assert list(page.rows()) == [(day, 101.0, 103.0, 99.0, 99.0, 7.0)]
        fake.body_override = {**body, "total_volumes": [[(day - HOUR) * 1000, 7.0]]}
        with pytest.raises(BadPayloadError) as caught:
            provider_for(server.url).fetch("BTC-USD", Interval.D1, Window(day, day + DAY))
    assert caught.value.message == (
        f"coingecko sent a bad row for BTC-USD: prices without total_volumes that day in "
        f"'{utc_from_epoch(day).date().isoformat()}'"
    )


def reach_refusal(status: int) -> httpx.Response:
    body = {"error": {"status": {"error_code": 10012, "error_message": "too far back"}}}
    return httpx.Response(status, json=body)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "OutOfReachError"),  # the first client error reads CoinGecko's code
        (499, "OutOfReachError"),
        (429, "ProviderUnavailableError"),  # a rate limit is waited, whatever the body says
        (500, "ProviderUnavailableError"),  # a server error is no refusal
    ],
)
def test_coingeckos_error_code_is_read_from_client_errors_other_than_429(
    provider_for, status, kind
):
    error = provider_for("http://127.0.0.1:9").classify(reach_refusal(status), "BTC-USD")
    assert (type(error).__name__, error.provider, error.symbol) == (kind, "coingecko", "BTC-USD")


def test_a_body_that_is_not_json_names_the_coin_s_symbol(serve_fake, fake, provider_for):
    fake.fail_next = [Reply(200, "<html><body>Cloudflare: checking your browser</body></html>")]
    with serve_fake(fake) as server, pytest.raises(BadPayloadError) as caught:
        provider_for(server.url).fetch("ETH-USD", Interval.D1, Window(FIRST, FIRST + DAY))
    assert (caught.value.provider, caught.value.symbol) == ("coingecko", "ETH-USD")
    assert caught.value.message.startswith("coingecko sent a body that is not JSON")


def test_a_window_starting_exactly_365_days_back_is_within_reach(serve_fake, provider_for):
    midnight = NOW - 12 * HOUR
    fake = FakeCoinGecko(now=midnight, coins={"bitcoin": POINTS})
    with serve_fake(fake) as server:
        provider = provider_for(server.url)
        provider.now = lambda: midnight
        oldest = midnight - 365 * DAY
        provider.fetch("BTC-USD", Interval.D1, Window(oldest, oldest + DAY))
        assert len(server.requests) == 1
        with pytest.raises(OutOfReachError, match="starts 2023-06-01"):
            provider.fetch("BTC-USD", Interval.D1, Window(oldest - DAY, oldest))
        assert len(server.requests) == 1
