"""Kraken provider against a fake Kraken on a loopback socket, with both clocks fixed."""

from __future__ import annotations

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
from marketdata.providers.kraken import KrakenProvider
from marketdata.providers.ratelimit import RateLimit
from tests.fakes.kraken import FakeKraken, encode, error_body, zero_filled
from tests.fakes.limits import NoWait, no_wait
from tests.fakes.market import walk
from tests.fakes.server import Reply

DAY = 86_400
HOUR = 3_600
TODAY = 1_735_689_600  # 2025-01-01: the daily candle still open at NOW
NOW = TODAY + 3 * HOUR + 17
OLDEST = TODAY - 719 * DAY  # the oldest of the 720 daily rows Kraken serves at NOW


@pytest.fixture
def fake() -> FakeKraken:
    fake = FakeKraken(now=NOW)
    fake.fill("XXBTZUSD", 1440, 800)
    return fake


@pytest.fixture
def provider_for(provider_context):
    def build(url: str, overrides: dict[str, str] | None = None, **settings) -> KrakenProvider:
        ctx = provider_context(kraken_base_url=url, **settings)
        ctx.limiter_factory = no_wait
        if overrides:
            ctx.symbol_overrides = {"kraken": overrides}
        provider = KrakenProvider(ctx)
        provider.now = lambda: NOW
        return provider

    return build


def daily(fake: FakeKraken) -> dict[int, tuple]:
    return {r[0]: r for r in fake.candles["XXBTZUSD"][1440]}


def test_a_daily_window_is_fetched_complete_ordered_and_parsed_from_strings(
    serve_fake, fake, provider_for
):
    start, end = TODAY - 100 * DAY, TODAY - 50 * DAY
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch("BTC-USD", Interval.D1, Window(start, end))
    assert candles.ts.tolist() == list(range(start, end, DAY))
    rows = daily(fake)
    assert candles.close.tolist() == [rows[t][4] for t in range(start, end, DAY)]
    assert candles.open[7] == rows[start + 7 * DAY][1]
    assert candles.high[7] == rows[start + 7 * DAY][2]
    assert candles.low[7] == rows[start + 7 * DAY][3]
    assert candles.volume[7] == rows[start + 7 * DAY][5]
    assert candles.provider == "kraken"


def test_the_request_sends_the_altname_minutes_and_an_exclusive_since(
    serve_fake, fake, provider_for
):
    start = TODAY - 10 * DAY
    with serve_fake(fake) as server:
        provider_for(server.url).fetch("BTC-USD", Interval.D1, Window(start, TODAY))
    assert len(server.requests) == 1
    query = server.requests[0].query
    assert query == {"pair": "XBTUSD", "interval": "1440", "since": str(start - 1)}
    assert server.requests[0].path == "/0/public/OHLC"


def test_the_result_is_read_from_the_canonical_key_not_the_name_sent(
    serve_fake, fake, provider_for
):
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch(
            "BTC-USD", Interval.D1, Window(TODAY - 3 * DAY, TODAY)
        )
    # the fake keys its result by XXBTZUSD although XBTUSD was asked for
    assert server.requests[0].query["pair"] == "XBTUSD"
    assert len(candles) == 3


def test_the_still_open_candle_is_dropped_and_the_closed_ones_kept(serve_fake, fake, provider_for):
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch(
            "BTC-USD", Interval.D1, Window(TODAY - 5 * DAY, TODAY + 2 * DAY)
        )
    assert candles.ts.tolist() == [TODAY - i * DAY for i in range(5, 0, -1)]
    assert len(server.requests) == 1


def test_an_hourly_candle_is_kept_once_its_hour_has_closed(serve_fake, provider_for):
    fake = FakeKraken(now=NOW)
    rows = fake.fill("XXBTZUSD", 60, 50)
    current = NOW - NOW % HOUR
    with serve_fake(fake) as server:
        provider = provider_for(server.url)
        candles = provider.fetch(
            "BTC-USD", Interval.H1, Window(current - 10 * HOUR, current + HOUR)
        )
        # one second after the hour the fake still sends that candle as the open one
        provider.now = lambda: current + HOUR
        later = provider.fetch("BTC-USD", Interval.H1, Window(current - 2 * HOUR, current + HOUR))
    assert candles.ts.tolist()[-1] == current - HOUR
    assert len(candles) == 10
    assert later.ts.tolist() == [current - 2 * HOUR, current - HOUR, current]
    assert later.close[-1] == rows[-1][4]


def test_a_window_of_only_the_open_candle_sends_no_request(serve_fake, fake, provider_for):
    with serve_fake(fake) as server:
        provider = provider_for(server.url)
        candles = provider.fetch("BTC-USD", Interval.D1, Window(TODAY, TODAY + DAY))
        assert provider.requests_needed(Interval.D1, Window(TODAY, TODAY + DAY)) == 0
    assert len(candles) == 0
    assert len(server.requests) == 0


def test_paging_follows_last_until_the_window_end_without_gaps_or_duplicates(
    serve_fake, fake, provider_for
):
    fake.page_rows = 100
    start, end = TODAY - 300 * DAY, TODAY - 20 * DAY
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch("BTC-USD", Interval.D1, Window(start, end))
    assert candles.ts.tolist() == list(range(start, end, DAY))
    sinces = [int(r.query["since"]) for r in server.requests]
    # each page asks from the `last` of the page before: the last committed row it held
    assert sinces == [start - 1, start + 99 * DAY, start + 199 * DAY]
    assert candles.close.tolist() == [daily(fake)[t][4] for t in range(start, end, DAY)]


def test_paging_stops_when_kraken_has_nothing_newer_committed(serve_fake, provider_for):
    fake = FakeKraken(now=NOW)
    # the data ends 10 days ago (delisted): `last` stops moving
    rows = walk(TODAY - 100 * DAY, DAY, 90)
    fake.add("XXBTZUSD", 1440, rows)
    fake.page_rows = 50
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch(
            "BTC-USD", Interval.D1, Window(TODAY - 100 * DAY, TODAY)
        )
    assert len(candles) == 90
    assert len(server.requests) == 3  # two pages, then one that brings nothing new


def test_a_page_ending_on_the_window_s_last_bar_is_the_last_page_asked_for(
    serve_fake, fake, provider_for
):
    """Kraken holds bars after the window, but a page whose last bar is the window's last
    one completes it: no page beyond it is asked for."""
    fake.page_rows = 5
    start, end = TODAY - 20 * DAY, TODAY - 10 * DAY
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch("BTC-USD", Interval.D1, Window(start, end))
    assert candles.ts.tolist() == list(range(start, end, DAY))
    assert [int(r.query["since"]) for r in server.requests] == [start - 1, start + 4 * DAY]


def test_a_first_page_without_a_closed_bar_is_followed_from_its_last_when_last_moves_on(
    serve_fake, fake, provider_for
):
    """A first page holding only the still-open candle reaches no bar of the window; as its
    `last` moved on, the next page is asked for from there, and it brings the window's end."""
    first = TODAY - 2 * DAY
    fake.fail_next = [Reply(200, ohlc([good_row(TODAY)], last=first))]
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch("BTC-USD", Interval.D1, Window(first, TODAY))
    assert candles.ts.tolist() == [TODAY - DAY]
    assert [int(r.query["since"]) for r in server.requests] == [first - 1, first]


def test_a_window_older_than_the_latest_720_candles_is_out_of_reach_before_any_request(
    serve_fake, fake, provider_for
):
    with (
        serve_fake(fake) as server,
        pytest.raises(OutOfReachError) as caught,
    ):
        provider_for(server.url).fetch(
            "BTC-USD", Interval.D1, Window(OLDEST - DAY, TODAY - 10 * DAY)
        )
    assert len(server.requests) == 0
    message = caught.value.message
    assert (
        "kraken serves only the latest 720 1d candles (since 2023-01-13T00:00:00+00:00)" in message
    )
    assert "the window starts at 2023-01-12T00:00:00+00:00" in message
    assert (caught.value.provider, caught.value.symbol) == ("kraken", "BTC-USD")


def test_a_window_starting_at_the_oldest_served_candle_is_fetched_whole(
    serve_fake, fake, provider_for
):
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch("BTC-USD", Interval.D1, Window(OLDEST, TODAY))
    assert len(candles) == 719
    assert candles.ts[0] == OLDEST
    assert len(server.requests) == 1


def test_a_reply_cut_short_by_the_cap_is_reported_not_returned_partially(
    serve_fake, fake, provider_for
):
    fake.served_rows = 710  # as seen live: a few rows under 720
    with (
        serve_fake(fake) as server,
        pytest.raises(OutOfReachError, match="kraken served only 710 of 720 1d candles"),
    ):
        provider_for(server.url).fetch("BTC-USD", Interval.D1, Window(OLDEST, TODAY))


def test_a_pair_listed_inside_the_window_returns_what_exists(serve_fake, provider_for):
    fake = FakeKraken(now=NOW)
    fake.fill("XXBTZUSD", 1440, 40)
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch(
            "BTC-USD", Interval.D1, Window(TODAY - 100 * DAY, TODAY)
        )
    assert len(candles) == 39
    assert candles.ts[0] == TODAY - 39 * DAY


def test_zero_filled_empty_periods_are_kept_as_candles_with_volume_zero(serve_fake, provider_for):
    fake = FakeKraken(now=NOW)
    rows = walk(TODAY - 10 * DAY, DAY, 11)
    rows[4] = zero_filled(rows[4][0], rows[3][4])
    fake.add("XXBTZUSD", 1440, rows)
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch(
            "BTC-USD", Interval.D1, Window(TODAY - 10 * DAY, TODAY)
        )
    assert len(candles) == 10
    assert candles.volume[4] == 0.0
    assert candles.open[4] == candles.close[4] == rows[3][4]


@pytest.mark.parametrize(
    ("symbol", "pair"),
    [("BTC-USD", "XBTUSD"), ("DOGE-USD", "XDGUSD"), ("ETH-BTC", "ETHXBT"), ("SOL-EUR", "SOLEUR")],
)
def test_symbols_map_to_kraken_altnames(symbol, pair, provider_for):
    assert provider_for("http://127.0.0.1:9").provider_symbol(symbol) == pair


def test_a_mapped_pair_round_trips_through_its_canonical_result_key(serve_fake, provider_for):
    fake = FakeKraken(now=NOW)
    rows = fake.fill("XETHXXBT", 60, 30)
    current = NOW - NOW % HOUR
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch(
            "ETH-BTC", Interval.H1, Window(current - 5 * HOUR, current)
        )
    assert server.requests[0].query["pair"] == "ETHXBT"
    assert candles.close.tolist() == [r[4] for r in rows[-6:-1]]


def test_an_override_with_the_canonical_name_is_sent_as_given(serve_fake, fake, provider_for):
    with serve_fake(fake) as server:
        provider = provider_for(server.url, overrides={"BTC-USD": "XXBTZUSD"})
        candles = provider.fetch("BTC-USD", Interval.D1, Window(TODAY - 3 * DAY, TODAY))
    assert provider.provider_symbol("BTC-USD") == "XXBTZUSD"
    assert server.requests[0].query["pair"] == "XXBTZUSD"
    assert len(candles) == 3


def test_an_unknown_pair_is_not_listed_and_not_retried(serve_fake, fake, provider_for):
    with (
        serve_fake(fake) as server,
        pytest.raises(SymbolNotListedError, match="kraken does not list BTC-XYZ") as caught,
    ):
        provider_for(server.url).fetch("BTC-XYZ", Interval.D1, Window(TODAY - DAY, TODAY))
    assert len(server.requests) == 1
    assert "XBTXYZ" in caught.value.message
    assert "--provider-symbol kraken=" in (caught.value.hint or "")


def test_an_error_body_with_an_empty_result_is_read_as_an_error_too(serve_fake, fake, provider_for):
    fake.fail_next = [Reply(200, error_body("EQuery:Unknown asset pair", with_result=True))]
    with serve_fake(fake) as server, pytest.raises(SymbolNotListedError):
        provider_for(server.url).fetch("BTC-USD", Interval.D1, Window(TODAY - DAY, TODAY))


def test_a_stock_ticker_is_not_listed_before_any_request(serve_fake, fake, provider_for):
    with (
        serve_fake(fake) as server,
        pytest.raises(SymbolNotListedError, match="kraken does not list AAPL"),
    ):
        provider_for(server.url).fetch("AAPL", Interval.D1, Window(TODAY - DAY, TODAY))
    assert len(server.requests) == 0


def test_an_unsupported_interval_raises_before_any_request(serve_fake, fake, provider_for):
    with (
        serve_fake(fake) as server,
        pytest.raises(UnsupportedIntervalError, match="kraken does not serve 6h"),
    ):
        provider_for(server.url).fetch("BTC-USD", Interval.H6, Window(TODAY - DAY, TODAY))
    assert len(server.requests) == 0


@pytest.mark.parametrize(
    "error",
    [
        "EGeneral:Too many requests",
        "EAPI:Rate limit exceeded",
        "EService:Unavailable",
        "EService:Busy",
    ],
)
def test_transient_errors_in_a_200_body_are_retried_then_succeed(
    serve_fake, error, fake, provider_for
):
    fake.fail_next = [Reply(200, error_body(error))]
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch(
            "BTC-USD", Interval.D1, Window(TODAY - 5 * DAY, TODAY)
        )
    assert len(candles) == 5
    assert len(server.requests) == 2


def test_retries_give_up_with_a_transient_error(serve_fake, fake, provider_for):
    fake.fail_next = [Reply(200, error_body("EGeneral:Too many requests"))] * 10
    with (
        serve_fake(fake) as server,
        pytest.raises(ProviderUnavailableError, match="Too many requests") as caught,
    ):
        provider_for(server.url).fetch("BTC-USD", Interval.D1, Window(TODAY - 5 * DAY, TODAY))
    assert len(server.requests) == 3  # stamina testing mode: three attempts
    assert caught.value.retry_after == 5.0  # no Retry-After from Kraken: back off a few seconds


def test_an_edge_error_status_is_transient(serve_fake, fake, provider_for):
    fake.fail_next = [Reply(520, "<html>origin error</html>")]
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch(
            "BTC-USD", Interval.D1, Window(TODAY - 2 * DAY, TODAY)
        )
    assert len(candles) == 2
    assert len(server.requests) == 2


def test_other_errors_are_permanent_and_not_retried(serve_fake, fake, provider_for):
    fake.fail_next = [Reply(200, error_body("EGeneral:Invalid arguments"))] * 3
    with (
        serve_fake(fake) as server,
        pytest.raises(BadPayloadError, match="EGeneral:Invalid arguments"),
    ):
        provider_for(server.url).fetch("BTC-USD", Interval.D1, Window(TODAY - 2 * DAY, TODAY))
    assert len(server.requests) == 1


def test_a_warning_beside_a_result_is_not_an_error(serve_fake, fake, provider_for):
    row = encode(walk(TODAY - DAY, DAY, 1)[0])
    body = {
        "error": ["WGeneral:Something noted"],
        "result": {"XXBTZUSD": [row], "last": TODAY - DAY},
    }
    fake.fail_next = [Reply(200, body)]
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch("BTC-USD", Interval.D1, Window(TODAY - DAY, TODAY))
    assert candles.ts.tolist() == [TODAY - DAY]


def good_row(ts: int) -> list:
    return [ts, "42283.5", "44196.0", "42200.1", "44179.9", "43325.7", "1874.30514310", 30219]


def ohlc(rows: list, last: int = TODAY - DAY) -> dict:
    return {"error": [], "result": {"XXBTZUSD": rows, "last": last}}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("<html><body>Cloudflare: checking your browser</body></html>", "not JSON"),
        ('{"error": [], "result": {"XXBTZUSD": [[1704067200, "4228', "not JSON"),
        ({"error": []}, "`result` object"),
        ({"error": [], "result": {"last": 1}}, "exactly one pair"),
        ({"error": [], "result": {"XXBTZUSD": [], "XETHZUSD": [], "last": 1}}, "exactly one pair"),
        ({"error": [], "result": {"XXBTZUSD": []}}, "`last` is not"),
        ({"error": [], "result": {"XXBTZUSD": [], "last": "1704067200"}}, "`last` is not"),
        ({"error": [], "result": {"XXBTZUSD": {"0": 1}, "last": 1}}, "list of candles"),
        (ohlc([good_row(TODAY - DAY)[:5]]), "expected \\[time"),
        (ohlc([[TODAY - DAY, None, "1", "1", "1", "1", "1", 1]]), "not a number"),
        (ohlc([[TODAY - DAY, "1", "abc", "1", "1", "1", "1", 1]]), "not a number"),
        (ohlc([[TODAY - DAY, "1", "1", "1", "1", "1", "NaN", 1]]), "not a number"),
        (
            ohlc([[str(TODAY - DAY), "1", "1", "1", "1", "1", "1", 1]]),
            "time is not integer epoch seconds",
        ),
        (ohlc([[None, "1", "1", "1", "1", "1", "1", 1]]), "time is not integer epoch seconds"),
        (ohlc(["1704067200,1,1,1,1"]), "expected \\[time"),
    ],
)
def test_bad_bodies_fail_the_fetch_naming_the_problem(
    serve_fake, body, message, fake, provider_for
):
    fake.fail_next = [Reply(200, body)]
    with (
        serve_fake(fake) as server,
        pytest.raises(BadPayloadError, match=message) as caught,
    ):
        provider_for(server.url).fetch("BTC-USD", Interval.D1, Window(TODAY - DAY, TODAY))
    assert len(server.requests) == 1
    assert caught.value.provider == "kraken"


def test_a_bad_row_error_names_the_symbol_and_the_row(serve_fake, fake, provider_for):
    fake.fail_next = [
        Reply(
            200, ohlc([good_row(TODAY - 2 * DAY), [TODAY - DAY, "1", None, "1", "1", "1", "1", 1]])
        )
    ]
    with (
        serve_fake(fake) as server,
        pytest.raises(BadPayloadError) as caught,
    ):
        provider_for(server.url).fetch("BTC-USD", Interval.D1, Window(TODAY - 2 * DAY, TODAY))
    assert caught.value.message.startswith("kraken sent a bad row for BTC-USD")
    assert str(TODAY - DAY) in caught.value.message


def test_plain_json_numbers_are_read_like_strings(serve_fake, fake, provider_for):
    fake.fail_next = [Reply(200, ohlc([[TODAY - DAY, 1.5, 2, 1, 1.75, 1.6, 10, 3]]))]
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch("BTC-USD", Interval.D1, Window(TODAY - DAY, TODAY))
    assert list(candles.rows()) == [(TODAY - DAY, 1.5, 2.0, 1.0, 1.75, 10.0)]


def test_duplicate_and_out_of_order_rows_come_back_once_and_ascending(
    serve_fake, fake, provider_for
):
    a, b, c = TODAY - 3 * DAY, TODAY - 2 * DAY, TODAY - DAY
    rows = [good_row(b), good_row(a), good_row(c), good_row(b)]
    fake.fail_next = [Reply(200, ohlc(rows))]
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch("BTC-USD", Interval.D1, Window(a, TODAY))
    assert candles.ts.tolist() == [a, b, c]


def test_rows_outside_the_window_are_dropped(serve_fake, fake, provider_for):
    rows = [good_row(TODAY - i * DAY) for i in range(6, 0, -1)]
    fake.fail_next = [Reply(200, ohlc(rows))]
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch(
            "BTC-USD", Interval.D1, Window(TODAY - 4 * DAY, TODAY - 2 * DAY)
        )
    assert candles.ts.tolist() == [TODAY - 4 * DAY, TODAY - 3 * DAY]


def test_a_slow_answer_past_the_timeout_is_transient(serve_fake, fake, provider_for):
    fake.fail_next = [Reply(200, ohlc([]), delay=1.0)] * 3
    with serve_fake(fake) as server:
        provider = provider_for(server.url, http_timeout=0.3)
        with pytest.raises(ProviderUnavailableError, match="timed out"):
            provider.fetch("BTC-USD", Interval.D1, Window(TODAY - DAY, TODAY))


def test_check_asks_for_the_server_time_once(serve_fake, fake, provider_for):
    with serve_fake(fake) as server:
        latency = provider_for(server.url).check()
    assert server.paths() == ["/0/public/Time"]
    assert latency > 0


def test_the_declared_limits_match_krakens_public_documentation(provider_context):
    seen = {}
    ctx = provider_context()
    ctx.limiter_factory = lambda name, limit: seen.setdefault(name, limit) and NoWait()
    KrakenProvider(ctx)
    assert seen == {"kraken": RateLimit(per_second=1.0, burst=1)}
    assert KrakenProvider.max_rows_per_request == 720
    assert {i.value for i in KrakenProvider.intervals} == {"1m", "5m", "15m", "1h", "1d"}


@pytest.mark.parametrize(
    "window", [Window(TODAY - DAY, TODAY + DAY), Window(TODAY - 30 * DAY, TODAY)]
)
def test_a_window_with_one_closed_bar_or_many_is_one_request(provider_for, window):
    assert provider_for("http://127.0.0.1:9").requests_needed(Interval.D1, window) == 1


def test_an_unknown_pair_answered_to_a_request_without_a_symbol_names_no_none(provider_for):
    """A request sent without a symbol (the health check's) that Kraken answers with an
    unknown pair is told as such, not as "does not list None"."""
    import httpx

    from tests.providers.expect import told

    provider = provider_for("http://127.0.0.1:9")
    reply = httpx.Response(200, json={"error": ["EQuery:Unknown asset pair"]})
    error = provider.classify(reply, None)
    assert error is not None
    assert told(error) == (
        "SymbolNotListedError",
        "kraken does not list the symbol asked for: asked for pair ?",
        "check the symbol, or map it with `marketdata markets add SYMBOL --provider-symbol "
        "kraken=ID`",
        "kraken",
        None,
    )


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (Reply(503, "<html>down</html>"), "ProviderUnavailableError"),
        (Reply(403, "forbidden"), "BadPayloadError"),
        (Reply(200, error_body("EService:Unavailable")), "ProviderUnavailableError"),
        (Reply(200, error_body("EGeneral:Invalid arguments")), "BadPayloadError"),
        (Reply(200, "<html>maintenance</html>"), "BadPayloadError"),  # not JSON
    ],
)
def test_every_kind_of_kraken_error_names_the_symbol_asked_for(
    serve_fake, fake, provider_for, reply, kind
):
    fake.fail_next = [reply] * 5
    with serve_fake(fake) as server:
        provider = provider_for(server.url)
        with pytest.raises(ProviderError) as caught:
            provider.fetch("ETH-USD", Interval.D1, Window(TODAY - DAY, TODAY))
    assert (type(caught.value).__name__, caught.value.provider, caught.value.symbol) == (
        kind,
        "kraken",
        "ETH-USD",
    )


@pytest.mark.parametrize(
    ("error", "retry_after"),
    [("EService:Unavailable", None), ("EService:Busy", None), ("EAPI:Rate limit exceeded", 5.0)],
)
def test_only_kraken_s_rate_limit_errors_ask_for_its_pause(
    serve_fake, fake, provider_for, error, retry_after
):
    """Kraken sends no Retry-After: its rate limit errors wait RATE_LIMIT_PAUSE; a service
    that is unavailable or busy is retried with the usual backoff instead."""
    fake.fail_next = [Reply(200, error_body(error))] * 5
    with serve_fake(fake) as server, pytest.raises(ProviderUnavailableError) as caught:
        provider_for(server.url).fetch("BTC-USD", Interval.D1, Window(TODAY - DAY, TODAY))
    assert caught.value.retry_after == retry_after


def test_a_reply_that_never_reaches_the_window_end_fails_after_a_bounded_number_of_pages(
    serve_fake, fake, provider_for
):
    """Each page must bring the window closer to its end; a server whose `last` creeps on by
    a second without ever sending a bar is asked a bounded number of times, then given up."""
    first = TODAY - 5 * DAY
    creeping = [
        Reply(200, {"error": [], "result": {"XXBTZUSD": [], "last": first + n}}) for n in range(10)
    ]
    fake.fail_next = creeping
    with (
        serve_fake(fake) as server,
        pytest.raises(BadPayloadError, match="kraken kept paging past") as caught,
    ):
        provider_for(server.url).fetch("BTC-USD", Interval.D1, Window(first, TODAY - 2 * DAY))
    assert len(server.requests) == 2 + 2  # (last bar - first bar) / a bar, plus 2
    assert caught.value.symbol == "BTC-USD"


def test_a_reply_30_rows_short_of_the_cap_is_still_cut_by_it_and_one_more_is_a_listing(
    serve_fake, fake, provider_for
):
    """A first reply of 690 rows (720 less the 30 of slack) that starts later than asked was
    cut by the cap; one of 689 rows is read as a pair listed inside the window."""
    fake.served_rows = 690
    with serve_fake(fake) as server, pytest.raises(OutOfReachError, match="served only 690"):
        provider_for(server.url).fetch("BTC-USD", Interval.D1, Window(OLDEST, TODAY))
    fake.served_rows = 689
    with serve_fake(fake) as server:
        candles = provider_for(server.url).fetch("BTC-USD", Interval.D1, Window(OLDEST, TODAY))
    assert len(candles) == 688  # the open bar is not a candle yet
    assert candles.ts[-1] == TODAY - DAY
