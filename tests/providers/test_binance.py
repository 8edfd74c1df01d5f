"""Binance provider against a fake Binance spot API on a loopback socket."""

from __future__ import annotations

import httpx
import pytest

from marketdata.domain import Interval, Window
from marketdata.errors import (
    AccessRefusedError,
    BadPayloadError,
    ProviderUnavailableError,
    SymbolNotListedError,
)
from marketdata.observability.metrics import RecordingMetrics
from marketdata.providers.binance import BinanceProvider
from marketdata.providers.ratelimit import RateLimit
from tests.fakes.binance import FakeBinance, banned, encode, error, rate_limited
from tests.fakes.market import walk
from tests.fakes.server import Reply
from tests.providers.expect import told

HOUR = 3_600
DAY = 86_400
START = 1_704_067_200  # 2024-01-01
CLOCK = START + 30.0  # 30 s into a minute


@pytest.fixture
def fake() -> FakeBinance:
    fake = FakeBinance()
    fake.add("BTCUSDT", "1h", walk(START, HOUR, 2500))
    fake.add("BTCUSDT", "1d", walk(START, DAY, 30, seed=2))
    return fake


@pytest.fixture
def provider_for(provider_context):
    def build(url: str, overrides: dict[str, str] | None = None, **settings) -> BinanceProvider:
        ctx = provider_context(binance_base_url=url, **settings)
        if overrides:
            ctx.symbol_overrides = {"binance": overrides}
        provider = BinanceProvider(ctx)
        provider.clock = lambda: CLOCK
        return provider

    return build


def test_a_long_window_is_paged_by_1000_klines_complete_and_ordered(serve_fake, fake, provider_for):
    end = START + 2500 * HOUR
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch("BTC-USDT", Interval.H1, Window(START, end))
    assert candles.ts.tolist() == list(range(START, end, HOUR))
    expected = walk(START, HOUR, 2500)
    assert candles.close.tolist() == [r[4] for r in expected]
    starts = [int(r.query["startTime"]) for r in server.requests]
    # each page starts one interval after the last open time of the page before
    assert starts == [START * 1000, (START + 1000 * HOUR) * 1000, (START + 2000 * HOUR) * 1000]
    assert {r.query["limit"] for r in server.requests} == {"1000"}
    assert {r.query["endTime"] for r in server.requests} == {str(end * 1000 - 1)}
    assert {(r.query["symbol"], r.query["interval"]) for r in server.requests} == {
        ("BTCUSDT", "1h")
    }


def test_the_kline_fields_are_read_from_strings_and_milliseconds(serve_fake, fake, provider_for):
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch(
            "BTC-USDT", Interval.D1, Window(START, START + 5 * DAY)
        )
    expected = walk(START, DAY, 5, seed=2)
    assert list(candles.rows()) == expected
    assert candles.provider == "binance"
    assert candles.symbol == "BTC-USDT"


def test_a_window_of_exactly_1000_klines_takes_one_request(serve_fake, fake, provider_for):
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch(
            "BTC-USDT", Interval.H1, Window(START, START + 1000 * HOUR)
        )
    assert len(candles) == 1000
    assert len(server.requests) == 1


def test_data_ending_inside_the_window_is_confirmed_by_one_empty_page(serve_fake, provider_for):
    fake = FakeBinance()
    fake.add("BTCUSDT", "1h", walk(START, HOUR, 300))
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch(
            "BTC-USDT", Interval.H1, Window(START, START + 500 * HOUR)
        )
    assert len(candles) == 300
    assert [int(r.query["startTime"]) for r in server.requests] == [
        START * 1000,
        (START + 300 * HOUR) * 1000,
    ]


def test_a_gap_inside_the_window_stays_a_gap(serve_fake, provider_for):
    fake = FakeBinance()
    rows = walk(START, HOUR, 48)
    fake.add("BTCUSDT", "1h", rows[:10] + rows[14:])  # four hours of maintenance
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch(
            "BTC-USDT", Interval.H1, Window(START, START + 48 * HOUR)
        )
    assert len(candles) == 44
    assert START + 10 * HOUR not in candles.ts.tolist()
    assert len(server.requests) == 1


def test_usd_is_not_quietly_turned_into_usdt(serve_fake, fake, provider_for):
    with (
        serve_fake(fake) as server,
        pytest.raises(SymbolNotListedError, match="binance does not list BTC-USD") as caught,
    ):
        provider_for(server.url).fetch("BTC-USD", Interval.D1, Window(START, START + DAY))
    assert len(server.requests) == 0
    assert "marketdata markets add BTC-USD --provider-symbol binance=BTCUSDT" in (
        caught.value.hint or ""
    )


@pytest.mark.parametrize(
    ("symbol", "market"),
    [
        ("BTC-USDT", "BTCUSDT"),
        ("ETH-BTC", "ETHBTC"),
        ("SOL-FDUSD", "SOLFDUSD"),
        ("BTC-EUR", "BTCEUR"),
    ],
)
def test_pairs_with_a_quote_binance_has_map_to_basequote(symbol, market, provider_for):
    assert provider_for("http://127.0.0.1:9").provider_symbol(symbol) == market


@pytest.mark.parametrize("symbol", ["AAPL", "BTC-USD", "ETH-CAD"])
def test_symbols_without_a_binance_market_are_refused_by_the_mapping(symbol, provider_for):
    with pytest.raises(SymbolNotListedError, match=f"binance does not list {symbol}"):
        provider_for("http://127.0.0.1:9").provider_symbol(symbol)


def test_an_explicit_override_maps_btc_usd_to_btcusdt(serve_fake, fake, provider_for):
    with serve_fake(fake) as server:
        provider = provider_for(server.url, overrides={"BTC-USD": "BTCUSDT"})
        candles = provider.fetch("BTC-USD", Interval.D1, Window(START, START + 3 * DAY))
    assert server.requests[0].query["symbol"] == "BTCUSDT"
    assert candles.symbol == "BTC-USD"
    assert candles.close.tolist() == [r[4] for r in walk(START, DAY, 3, seed=2)]


def test_an_unknown_symbol_is_not_listed_and_not_retried(serve_fake, fake, provider_for):
    with (
        serve_fake(fake) as server,
        pytest.raises(SymbolNotListedError, match="binance does not list FOO-USDT") as caught,
    ):
        provider_for(server.url).fetch("FOO-USDT", Interval.D1, Window(START, START + DAY))
    assert len(server.requests) == 1
    assert "FOOUSDT" in caught.value.message


@pytest.mark.parametrize("reply", [rate_limited(7), banned(3)], ids=["429", "418"])
def test_rate_limit_answers_are_retried_then_succeed(reply, serve_fake, fake, provider_for):
    fake.fail_next = [reply]
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch(
            "BTC-USDT", Interval.D1, Window(START, START + 5 * DAY)
        )
    assert len(candles) == 5
    assert len(server.requests) == 2


def test_retries_on_429_give_up_with_the_retry_after_binance_asked_for(
    serve_fake, fake, provider_for
):
    fake.fail_next = [rate_limited(7)] * 5
    with (
        serve_fake(fake) as server,
        pytest.raises(ProviderUnavailableError, match="rate limit exceeded") as caught,
    ):
        provider_for(server.url).fetch("BTC-USDT", Interval.D1, Window(START, START + DAY))
    assert len(server.requests) == 3  # stamina testing mode: three attempts
    assert caught.value.retry_after == 7.0


def test_an_ip_ban_is_reported_as_a_ban(serve_fake, fake, provider_for):
    fake.fail_next = [banned(90)] * 5
    with (
        serve_fake(fake) as server,
        pytest.raises(ProviderUnavailableError, match="banned this IP") as caught,
    ):
        provider_for(server.url).fetch("BTC-USDT", Interval.D1, Window(START, START + DAY))
    assert caught.value.retry_after == 90.0


def test_server_errors_are_retried_then_give_up(serve_fake, fake, provider_for):
    fake.fail_next = [Reply(503, "<html>Service Unavailable</html>")] * 5
    with (
        serve_fake(fake) as server,
        pytest.raises(ProviderUnavailableError, match="HTTP 503"),
    ):
        provider_for(server.url).fetch("BTC-USDT", Interval.D1, Window(START, START + DAY))
    assert len(server.requests) == 3


def test_a_geo_block_is_permanent_and_says_so(serve_fake, fake, provider_for):
    fake.geo_blocked = True
    with (
        serve_fake(fake) as server,
        pytest.raises(AccessRefusedError, match="restricted location") as caught,
    ):
        provider_for(server.url).fetch("BTC-USDT", Interval.D1, Window(START, START + DAY))
    assert len(server.requests) == 1
    assert caught.value.transient is False
    assert "another provider" in (caught.value.hint or "")


@pytest.mark.parametrize(
    "reply",
    [
        error(400, -1120, "Invalid interval."),
        error(400, -1130, "Data sent for parameter 'limit' is not valid."),
        error(
            400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
        ),
    ],
)
def test_other_refusals_are_permanent_and_carry_binances_message(
    reply, serve_fake, fake, provider_for
):
    fake.fail_next = [reply]
    with (
        serve_fake(fake) as server,
        pytest.raises(BadPayloadError) as caught,
    ):
        provider_for(server.url).fetch("BTC-USDT", Interval.D1, Window(START, START + DAY))
    assert len(server.requests) == 1
    assert reply.body["msg"] in caught.value.message
    assert str(reply.body["code"]) in caught.value.message


def kline(ts: int, step: int = DAY) -> list:
    return encode((ts, 1.0, 2.0, 0.5, 1.5, 10.0), step)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("<html><body>Checking your browser</body></html>", "not JSON"),
        ('[[1704067200000, "42283.58000000", "4418', "not JSON"),
        ({"code": 0, "msg": "System busy"}, "JSON array of klines"),
        ([kline(START)[:6]], "12-field"),
        (["1704067200000,1,2,0.5,1.5,10"], "12-field"),
        ([[START * 1000, None, *kline(START)[2:]]], "not a number"),
        ([[START * 1000, "1.0", "abc", *kline(START)[3:]]], "not a number"),
        (
            [[START * 1000, "1.0", "2.0", "0.5", "1.5", "Infinity", *kline(START)[6:]]],
            "not a number",
        ),
        ([[str(START * 1000), *kline(START)[1:]]], "open time is not integer epoch milliseconds"),
        ([[START * 1000 + 500, *kline(START)[1:]]], "not a whole second"),
    ],
)
def test_bad_bodies_fail_the_fetch_naming_the_problem(
    body, message, serve_fake, fake, provider_for
):
    fake.fail_next = [Reply(200, body)]
    with (
        serve_fake(fake) as server,
        pytest.raises(BadPayloadError, match=message) as caught,
    ):
        provider_for(server.url).fetch("BTC-USDT", Interval.D1, Window(START, START + DAY))
    assert len(server.requests) == 1
    assert caught.value.provider == "binance"


def test_a_bad_row_error_names_the_symbol_and_the_row(serve_fake, fake, provider_for):
    fake.fail_next = [
        Reply(200, [kline(START), [START * 1000 + DAY * 1000, "1", None, *kline(START)[3:]]])
    ]
    with (
        serve_fake(fake) as server,
        pytest.raises(BadPayloadError) as caught,
    ):
        provider_for(server.url).fetch("BTC-USDT", Interval.D1, Window(START, START + 2 * DAY))
    assert caught.value.message.startswith("binance sent a bad row for BTC-USDT")
    assert str((START + DAY) * 1000) in caught.value.message


def test_duplicate_and_out_of_order_rows_come_back_once_and_ascending(
    serve_fake, fake, provider_for
):
    a, b, c = START, START + DAY, START + 2 * DAY
    fake.fail_next = [Reply(200, [kline(b), kline(a), kline(c), kline(b)]), Reply(200, [])]
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch("BTC-USDT", Interval.D1, Window(a, c + 2 * DAY))
    assert candles.ts.tolist() == [a, b, c]


def test_rows_outside_the_window_are_dropped(serve_fake, fake, provider_for):
    rows = [kline(START + i * DAY) for i in range(6)]
    fake.fail_next = [Reply(200, rows)]
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch(
            "BTC-USDT", Interval.D1, Window(START + 2 * DAY, START + 4 * DAY)
        )
    assert candles.ts.tolist() == [START + 2 * DAY, START + 3 * DAY]
    assert len(server.requests) == 1


@pytest.mark.parametrize("last", [START - 2 * DAY, START - DAY])  # the latter ends at START
def test_a_reply_that_ignores_start_time_fails_instead_of_looping(
    serve_fake, fake, provider_for, last
):
    fake.fail_next = [Reply(200, [kline(START - 3 * DAY), kline(last)])]
    with (
        serve_fake(fake) as server,
        pytest.raises(BadPayloadError, match="before the requested startTime"),
    ):
        provider_for(server.url).fetch("BTC-USDT", Interval.D1, Window(START, START + 5 * DAY))
    assert len(server.requests) == 1


def test_nearly_spent_weight_pauses_until_the_next_minute_instead_of_hitting_429(
    serve_fake, fake, provider_for
):
    fake.used_weight = 5397  # other programs on this IP used most of the minute
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        fake.new_minute()

    with serve_fake(fake) as server:
        provider = provider_for(server.url)
        provider.ctx.sleep = sleep
        provider.ctx.metrics = metrics = RecordingMetrics()
        candles = provider.fetch("BTC-USDT", Interval.H1, Window(START, START + 2500 * HOUR))
    assert len(candles) == 2500
    assert slept == [31.0]  # 30 s left in the minute, plus one for clock skew
    assert [r.query["startTime"] for r in server.requests][1] == str((START + 1000 * HOUR) * 1000)
    assert metrics.gauges["provider.binance.used_weight_1m"] == 4


def test_weight_reported_in_an_earlier_minute_does_not_pause(serve_fake, fake, provider_for):
    fake.used_weight = 5399
    slept: list[float] = []
    with serve_fake(fake) as server:
        provider = provider_for(server.url)
        provider.ctx.sleep = slept.append
        provider.fetch("BTC-USDT", Interval.D1, Window(START, START + DAY))
        fake.new_minute()
        provider.clock = lambda: CLOCK + 60
        provider.fetch("BTC-USDT", Interval.D1, Window(START, START + DAY))
    assert slept == []
    assert len(server.requests) == 2


def test_the_fake_answers_like_binance_without_a_limit_and_over_the_cap(serve_fake, fake):
    with serve_fake(fake) as server:
        wide = {
            "symbol": "BTCUSDT",
            "interval": "1h",
            "startTime": START * 1000,
            "endTime": (START + 2000 * HOUR) * 1000,
        }
        default = httpx.get(f"{server.url}/api/v3/klines", params=wide)
        over = httpx.get(f"{server.url}/api/v3/klines", params={**wide, "limit": 1001})
    assert len(default.json()) == 500
    assert len(default.json()[0]) == 12
    assert default.headers["X-MBX-USED-WEIGHT-1M"] == "2"
    assert over.status_code == 400
    assert over.json()["code"] == -1130


def test_a_slow_answer_past_the_timeout_is_transient(serve_fake, fake, provider_for):
    fake.fail_next = [Reply(200, [], delay=1.0)] * 3
    with serve_fake(fake) as server:
        provider = provider_for(server.url, http_timeout=0.3)
        with pytest.raises(ProviderUnavailableError, match="timed out"):
            provider.fetch("BTC-USDT", Interval.D1, Window(START, START + DAY))


def test_check_pings_once(serve_fake, fake, provider_for):
    with serve_fake(fake) as server:
        latency = provider_for(server.url).check()
    assert server.paths() == ["/api/v3/ping"]
    assert latency > 0


def test_the_declared_limits_fit_binances_weight_budget(provider_context):
    seen = {}
    ctx = provider_context()
    ctx.limiter_factory = lambda name, limit: seen.setdefault(name, limit)
    BinanceProvider(ctx)
    assert seen == {"binance": RateLimit(per_second=20.0, burst=20)}
    # 20 klines requests/s weigh 2400 per minute: well under the 6000 a minute allowed
    assert seen["binance"].per_second * 60 * 2 < 6000
    assert BinanceProvider.max_rows_per_request == 1000
    assert {i.value for i in BinanceProvider.intervals} == {"1m", "5m", "15m", "1h", "6h", "1d"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"code": -1100, "msg": "Illegal characters found in parameter 'symbol'."},
         "binance refused the request with HTTP 400: Illegal characters found in parameter "
         "'symbol'. (code -1100)"),
        ({"code": "-1121", "msg": "Invalid symbol."},
         "binance refused the request with HTTP 400: Invalid symbol. (code None)"),
        ({"code": -1100, "msg": 42},
         """binance refused the request with HTTP 400: {"code":-1100,"msg":42}"""),
        ([{"code": -1100, "msg": "x"}],
         """binance refused the request with HTTP 400: [{"code":-1100,"msg":"x"}]"""),
    ],
)  # fmt: skip
def test_a_refusal_shows_binances_msg_and_code_only_when_they_have_their_types(
    provider_for, body, message
):
    error = provider_for("http://127.0.0.1:9").classify(httpx.Response(400, json=body), "BTC-USDT")
    assert told(error) == ("BadPayloadError", message, None, "binance", "BTC-USDT")


def test_an_invalid_symbol_names_the_market_asked_for(provider_for):
    body = {"code": -1121, "msg": "Invalid symbol."}
    error = provider_for("http://127.0.0.1:9").classify(httpx.Response(400, json=body), "FOO-USDT")
    assert error.message == "binance does not list FOO-USDT: asked for FOOUSDT: Invalid symbol."


@pytest.mark.parametrize("headers", [{}, {"X-MBX-USED-WEIGHT-1M": "lots"}])
def test_a_reply_without_a_readable_weight_leaves_the_weight_unknown(
    serve_fake, provider_for, headers
):
    with serve_fake(lambda request: Reply(200, {}, headers)) as server:
        provider = provider_for(server.url)
        provider.ctx.metrics = metrics = RecordingMetrics()
        provider.check()
        provider.check()  # the weight of the minute is not consulted either
    assert metrics.gauges == {}
    assert len(server.requests) == 2


def test_an_invalid_symbol_without_a_symbol_or_a_msg_still_reads_as_one(provider_for):
    provider = provider_for("http://127.0.0.1:9")
    bare = provider.classify(httpx.Response(400, json={"code": -1121}), None)
    assert (
        bare.message == "binance does not list the symbol asked for: asked for ?: Invalid symbol."
    )
    worded = provider.classify(
        httpx.Response(400, json={"code": -1121, "msg": "Unknown pair"}), "FOO-USDT"
    )
    assert worded.message == "binance does not list FOO-USDT: asked for FOOUSDT: Unknown pair"


@pytest.mark.parametrize("status", [451, 418, 429])
def test_a_block_a_ban_or_a_limit_names_provider_and_symbol(provider_for, status):
    response = httpx.Response(status, json={"code": -1003, "msg": "Too much request weight"})
    error = provider_for("http://127.0.0.1:9").classify(response, "BTC-USDT")
    assert (error.provider, error.symbol) == ("binance", "BTC-USDT")


def test_a_server_error_with_a_binance_msg_is_still_transient(provider_for):
    body = {"code": -1000, "msg": "An unknown error occurred while processing the request."}
    error = provider_for("http://127.0.0.1:9").classify(httpx.Response(500, json=body), "BTC-USDT")
    assert type(error).__name__ == "ProviderUnavailableError"


def test_a_fetch_names_its_pair_and_a_body_that_is_not_json_names_the_symbol(
    serve_fake, fake, provider_for
):
    with serve_fake(fake) as server:
        provider = provider_for(server.url)
        candles = provider.fetch("BTC-USDT", Interval.D1, Window(START, START + 2 * DAY))
        assert (candles.symbol, candles.interval, candles.provider) == (
            "BTC-USDT",
            Interval.D1,
            "binance",
        )
        fake.fail_next = [Reply(200, "<html>maintenance</html>")]
        with pytest.raises(BadPayloadError) as caught:
            provider.fetch("BTC-USDT", Interval.D1, Window(START, START + 2 * DAY))
    assert (caught.value.provider, caught.value.symbol) == ("binance", "BTC-USDT")


def test_weight_that_leaves_exactly_one_request_does_not_pause(serve_fake, fake, provider_for):
    fake.used_weight = 5400 - 2 - 2  # after the first request, one more fits under 5400
    slept: list[float] = []
    with serve_fake(fake) as server:
        provider = provider_for(server.url)
        provider.ctx.sleep = slept.append
        provider.fetch("BTC-USDT", Interval.H1, Window(START, START + 2000 * HOUR))
    assert slept == []


@pytest.mark.parametrize(("symbol", "instead"), [("BTC-CAD", "ID"), ("BTC-USD", "BTCUSDT")])
def test_a_quote_binance_lacks_hints_the_mapping_to_add(provider_for, symbol, instead):
    with pytest.raises(SymbolNotListedError) as caught:
        provider_for("http://127.0.0.1:9").provider_symbol(symbol)
    assert caught.value.hint.endswith(f"--provider-symbol binance={instead}`")


def test_requests_woken_from_one_pause_all_count_in_the_minute_they_woke_in():
    """Two threads paused on a spent minute wake in the next one: the first starts it
    afresh, the second must not start it again (that would forget the first's request),
    and both requests count there, as does every later one of that minute."""
    from marketdata.providers.binance import KLINES_WEIGHT, WEIGHT_PAUSE_AT, WeightBudget

    now = [CLOCK]
    budget = WeightBudget(lambda: now[0])
    budget.note(WEIGHT_PAUSE_AT)  # this minute is spent
    first, second = budget.reserve(KLINES_WEIGHT), budget.reserve(KLINES_WEIGHT)
    assert first == second == (31.0, budget.generation)
    now[0] = CLOCK + 31.0  # the next minute, as the pause intended
    budget.after_pause(first[1], KLINES_WEIGHT)
    budget.after_pause(second[1], KLINES_WEIGHT)
    assert (budget.minute, budget.used) == (int(CLOCK + 31.0) // 60, 2 * KLINES_WEIGHT)
    assert budget.reserve(KLINES_WEIGHT) is None  # still the same minute: counted on
    assert budget.used == 3 * KLINES_WEIGHT


def test_a_fresh_minute_grants_its_whole_weight_budget_then_pauses():
    from marketdata.providers.binance import KLINES_WEIGHT, WEIGHT_PAUSE_AT, WeightBudget

    now = [CLOCK]
    budget = WeightBudget(lambda: now[0])
    granted = 0
    while budget.reserve(KLINES_WEIGHT) is None:
        granted += 1
    assert granted == WEIGHT_PAUSE_AT // KLINES_WEIGHT
    now[0] = CLOCK + 30.0  # the next minute: its whole budget again
    again = 0
    while budget.reserve(KLINES_WEIGHT) is None:
        again += 1
    assert again == granted
