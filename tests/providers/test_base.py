"""What every provider shares: its errors' words, the interval check, paging and the cause of
an unreachable server."""

from __future__ import annotations

import socket
import time

import pytest

from marketdata.domain import DAY, Interval, Window
from marketdata.errors import ProviderUnavailableError, SymbolNotListedError
from marketdata.providers.base import (
    EPOCH_RANGE,
    BaseProvider,
    ProviderContext,
    bad_row,
    epoch_int,
    unsupported_interval,
)
from marketdata.providers.coinbase import CoinbaseProvider
from marketdata.providers.registry import provider_class
from tests.fakes.limits import no_wait
from tests.providers.expect import told


def test_a_symbol_not_listed_names_provider_symbol_and_the_mapping_to_add(provider_context):
    provider = CoinbaseProvider(provider_context())
    error = provider.not_listed("FOO-USD")
    assert isinstance(error, SymbolNotListedError)
    assert (error.provider, error.symbol) == ("coinbase", "FOO-USD")
    assert error.one_line() == (
        "coinbase does not list FOO-USD: check the symbol, or map it with "
        "`marketdata markets add FOO-USD --provider-symbol coinbase=PRODUCT`"
    )
    detailed = provider.not_listed(None, "delisted", hint="try kraken")
    assert (
        detailed.one_line() == "coinbase does not list the symbol asked for: delisted: try kraken"
    )


def test_an_interval_a_provider_does_not_serve_lists_those_it_does_in_length_order():
    error = unsupported_interval(provider_class("kraken"), Interval.H6)
    assert error.one_line() == "kraken does not serve 6h candles: it serves 1m, 5m, 15m, 1h, 1d"
    assert error.exit_code == 2


def test_pages_cover_the_window_from_the_bar_that_holds_its_start(provider_context):
    provider = BaseProvider(provider_context())
    provider.max_rows_per_request = 3
    pages = list(provider.pages(Interval.D1, Window(DAY + 5, 8 * DAY)))
    assert pages == [Window(DAY, 4 * DAY), Window(4 * DAY, 7 * DAY), Window(7 * DAY, 8 * DAY)]
    assert provider.requests_needed(Interval.D1, Window(DAY + 5, 8 * DAY)) == 3
    assert provider.check() == 0.0


def test_an_unreachable_server_is_reported_with_the_cause_in_its_own_words(settings_factory):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = settings_factory(coinbase_base_url=f"http://127.0.0.1:{port}", http_retry_attempts=1)
    with (
        ProviderContext(settings, limiter_factory=no_wait) as ctx,
        pytest.raises(ProviderUnavailableError) as raised,
    ):
        CoinbaseProvider(ctx).fetch("BTC-USD", Interval.D1, Window(0, DAY))
    line = raised.value.one_line()
    assert line.startswith(f"coinbase unreachable at http://127.0.0.1:{port}: ConnectError (")
    assert "refused" in line.lower() and line.endswith(")")


def test_the_cause_of_a_failure_is_its_class_and_its_words_on_one_short_line():
    from marketdata.providers.base import _cause

    assert _cause(OSError("Connection\n   refused  now")) == "OSError (Connection refused now)"
    assert _cause(TimeoutError()) == "TimeoutError"
    assert _cause(ValueError("x" * 200)) == f"ValueError ({'x' * 120})"


def test_a_latency_is_the_milliseconds_since_the_clock_reading_it_started_from():
    from marketdata.providers.base import elapsed_ms

    # 1000 s back: a mutated scale or sign is off by a second or more, far beyond any stall
    latency = elapsed_ms(time.perf_counter() - 1000.0)
    assert 1_000_000.0 <= latency < 1_000_500.0


@pytest.mark.parametrize(
    ("body", "message"),
    [("", "coinbase answered HTTP 503"), ("y" * 130, f"coinbase answered HTTP 503: {'y' * 120}")],
)
def test_an_http_error_shows_at_most_120_characters_of_a_body_and_nothing_for_none(
    provider_context, body, message
):
    import httpx

    error = CoinbaseProvider(provider_context()).classify(httpx.Response(503, text=body), None)
    assert error.message == message


@pytest.mark.parametrize(
    ("status", "transient"),
    [(429, True), (418, True), (500, True), (503, True), (400, False), (419, False), (499, False)],
)
def test_rate_limits_bans_and_server_errors_are_transient_other_refusals_are_not(
    provider_context, status, transient
):
    """429, 418 (the ban some exchanges send after repeated 429s) and 5xx are worth a retry
    or the next provider; any other 4xx is a refusal that asking again will not change."""
    import httpx

    from marketdata.errors import BadPayloadError

    error = CoinbaseProvider(provider_context()).classify(httpx.Response(status), "BTC-USD")
    assert type(error) is (ProviderUnavailableError if transient else BadPayloadError)
    assert CoinbaseProvider(provider_context()).classify(httpx.Response(200), None) is None


def test_a_bad_row_is_shown_whole_up_to_160_characters_then_cut_to_160():
    exact = "x" * 158  # its repr, quotes included, is 160 characters long
    assert bad_row("kraken", "BTC-USD", exact, "odd").message == (
        f"kraken sent a bad row for BTC-USD: odd in {exact!r}"
    )
    longer = "x" * 159
    message = bad_row("kraken", "BTC-USD", longer, "odd").message
    assert message == f"kraken sent a bad row for BTC-USD: odd in {repr(longer)[:157]}..."
    assert len(message.split(" in ", 1)[1]) == 160


def test_a_bad_row_error_carries_the_provider_and_symbol_and_names_both_on_one_line():
    error = bad_row("binance", "ETH-USDT", [1704067200000, None], "a value is not a number")
    assert told(error) == (
        "BadPayloadError",
        "binance sent a bad row for ETH-USDT: a value is not a number in [1704067200000, None]",
        None,
        "binance",
        "ETH-USDT",
    )
    assert error.one_line() == (
        "binance sent a bad row for ETH-USDT: a value is not a number in [1704067200000, None]"
    )


@pytest.mark.parametrize("per_second", [1, 1000])
def test_an_integer_time_is_taken_from_the_first_second_of_its_range_to_the_last(per_second):
    """Both ends of EPOCH_RANGE in seconds and in milliseconds (floored to seconds): the
    lower end is in, the upper end is out, and so is a unit past either."""
    low, high = EPOCH_RANGE
    assert epoch_int(low * per_second, per_second) == low
    assert epoch_int(high * per_second - 1, per_second) == high - 1
    for outside in (low * per_second - 1, high * per_second):
        with pytest.raises(ValueError):
            epoch_int(outside, per_second)


@pytest.mark.parametrize("value", [True, 1.0, "1", None])
def test_only_a_json_integer_is_an_integer_time(value):
    with pytest.raises(ValueError):
        epoch_int(value)


def test_the_http_client_sends_its_name_and_accepted_types_and_follows_a_redirect(
    settings_factory,
):
    """`build_http_client`, the one client every provider uses: User-Agent and Accept on
    every request, a redirect followed to its target, the read timeout the setting's and the
    connect timeout at most 5 s."""
    from marketdata.providers.base import USER_AGENT, build_http_client
    from tests.fakes.server import Reply, serve

    def handler(request):
        if request.path == "/moved":
            return Reply(301, headers={"Location": "/here"})
        return Reply(200, {"ok": True})

    with serve(handler) as server, build_http_client(settings_factory(http_timeout=7.5)) as http:
        reply = http.get(f"{server.url}/moved")
        assert http.timeout.read == 7.5
        assert http.timeout.connect == 5.0
    assert reply.status_code == 200 and reply.json() == {"ok": True}
    assert [r.path for r in server.requests] == ["/moved", "/here"]
    for request in server.requests:
        headers = {k.lower(): v for k, v in request.headers.items()}
        assert headers["user-agent"] == USER_AGENT
        assert headers["accept"] == "application/json, text/csv;q=0.9"
    with build_http_client(settings_factory(http_timeout=2.0)) as http:
        assert (http.timeout.read, http.timeout.connect) == (2.0, 2.0)


def test_a_success_closes_the_breaker_until_threshold_failures_in_a_row_again():
    from marketdata.providers.base import CircuitBreaker

    breaker = CircuitBreaker(threshold=3)
    for _ in range(3):
        breaker.failure()
    assert breaker.open_after() == 3
    breaker.success()
    assert (breaker.failed_in_a_row, breaker.open_after()) == (0, None)
    breaker.failure()
    breaker.failure()
    assert (breaker.failed_in_a_row, breaker.open_after()) == (2, None)
    breaker.failure()
    assert breaker.open_after() == 3
