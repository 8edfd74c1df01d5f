"""Coinbase provider against a fake Coinbase Exchange on a loopback socket."""

from __future__ import annotations

import pytest

from marketdata.domain import Interval, Window
from marketdata.errors import BadPayloadError, ProviderUnavailableError, SymbolNotListedError
from marketdata.providers.coinbase import CoinbaseProvider
from tests.fakes.coinbase import FakeCoinbase
from tests.fakes.market import walk
from tests.fakes.server import Reply, serve

DAY = 86_400
START = 1_704_067_200  # 2024-01-01


@pytest.fixture
def fake() -> FakeCoinbase:
    fake = FakeCoinbase()
    fake.add("BTC-USD", DAY, walk(START, DAY, 700))
    return fake


@pytest.fixture
def provider_for(provider_context):
    def build(url: str, **overrides) -> CoinbaseProvider:
        return CoinbaseProvider(provider_context(coinbase_base_url=url, **overrides))

    return build


def test_long_window_is_paged_within_300_buckets_complete_and_ordered(fake, provider_for):
    with serve(fake) as server:
        candles = provider_for(server.url).fetch(
            "BTC-USD", Interval.D1, Window(START, START + 700 * DAY)
        )
    assert len(server.requests) == 3
    assert len(candles) == 700
    assert candles.ts.tolist() == [START + i * DAY for i in range(700)]
    expected = walk(START, DAY, 700)
    assert candles.close.tolist() == [r[4] for r in expected]
    assert candles.open[5] == expected[5][1] and candles.low[5] == expected[5][3]


def test_rows_before_the_window_and_page_overlaps_are_dropped(fake, provider_for):
    fake.early_rows = 3
    with serve(fake) as server:
        candles = provider_for(server.url).fetch(
            "BTC-USD", Interval.D1, Window(START + 10 * DAY, START + 610 * DAY)
        )
    assert candles.ts[0] == START + 10 * DAY
    assert len(candles) == 600
    assert len(set(candles.ts.tolist())) == 600


def test_missing_buckets_stay_missing(provider_for):
    fake = FakeCoinbase()
    rows = [r for i, r in enumerate(walk(START, DAY, 10)) if i not in (3, 4)]
    fake.add("BTC-USD", DAY, rows)
    with serve(fake) as server:
        candles = provider_for(server.url).fetch(
            "BTC-USD", Interval.D1, Window(START, START + 10 * DAY)
        )
    assert len(candles) == 8


def test_unknown_product_is_a_clear_per_symbol_error(fake, provider_for):
    with (
        serve(fake) as server,
        pytest.raises(SymbolNotListedError, match="coinbase does not list BTC-XYZ"),
    ):
        provider_for(server.url).fetch("BTC-XYZ", Interval.D1, Window(START, START + DAY))


def test_server_errors_are_retried_then_succeed(fake, provider_for):
    fake.fail_next = [
        Reply(502, "bad gateway"),
        Reply(429, {"message": "Public rate limit exceeded"}),
    ]
    with serve(fake) as server:
        candles = provider_for(server.url).fetch(
            "BTC-USD", Interval.D1, Window(START, START + 5 * DAY)
        )
    assert len(candles) == 5
    assert len(server.requests) == 3


def test_retries_give_up_with_a_transient_error(fake, provider_for):
    fake.fail_next = [Reply(503, "down")] * 10
    with serve(fake) as server, pytest.raises(ProviderUnavailableError, match="HTTP 503"):
        provider_for(server.url).fetch("BTC-USD", Interval.D1, Window(START, START + 5 * DAY))
    assert len(server.requests) == 3  # stamina testing mode: three attempts


def test_html_body_with_200_is_rejected_not_parsed(fake, provider_for):
    fake.fail_next = [Reply(200, "<html>maintenance</html>")]
    with serve(fake) as server, pytest.raises(BadPayloadError, match="not JSON"):
        provider_for(server.url).fetch("BTC-USD", Interval.D1, Window(START, START + 5 * DAY))


def test_provider_is_given_up_after_repeated_failures(fake, provider_for):
    fake.fail_next = [Reply(500, "x")] * 100
    with serve(fake) as server:
        provider = provider_for(server.url)
        for symbol in ("BTC-USD", "ETH-USD", "SOL-USD"):
            with pytest.raises(ProviderUnavailableError):
                provider.fetch(symbol, Interval.D1, Window(START, START + DAY))
        sent = len(server.requests)
        with pytest.raises(ProviderUnavailableError, match="given up"):
            provider.fetch("ADA-USD", Interval.D1, Window(START, START + DAY))
        assert len(server.requests) == sent


def test_slow_answer_past_the_timeout_is_transient(fake, provider_for):
    fake.fail_next = [Reply(200, [], delay=1.0)] * 3
    with serve(fake) as server:
        provider = provider_for(server.url, http_timeout=0.3)
        with pytest.raises(ProviderUnavailableError, match="timed out"):
            provider.fetch("BTC-USD", Interval.D1, Window(START, START + DAY))


def test_a_retry_after_beyond_the_limit_is_not_waited_for(fake, provider_for):
    fake.fail_next = [Reply(429, {"message": "banned"}, headers={"Retry-After": "86400"})] * 3
    with serve(fake) as server, pytest.raises(ProviderUnavailableError, match="HTTP 429"):
        provider_for(server.url).fetch("BTC-USD", Interval.D1, Window(START, START + DAY))
    assert len(server.requests) == 1


def test_retry_after_is_read_as_seconds_or_an_http_date():
    import httpx

    from marketdata.providers.base import retry_after_seconds

    now = 1_445_412_400.0  # 2015-10-21 07:26:40 UTC
    assert retry_after_seconds(httpx.Response(429, headers={"Retry-After": "7"}), now) == 7.0
    dated = httpx.Response(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert retry_after_seconds(dated, now) == 80.0
    assert retry_after_seconds(dated, now + 100) == 0.0  # in the past: retry now
    assert retry_after_seconds(httpx.Response(429), now) is None


def test_check_asks_for_the_btc_usd_ticker_once_and_times_it(fake, provider_for):
    with serve(fake) as server:
        latency = provider_for(server.url).check()
    assert server.paths() == ["/products/BTC-USD/ticker"]
    assert 0 < latency < 60_000


def test_a_page_names_its_pair_and_a_field_after_the_sixth_is_ignored(provider_for):
    rows = [[START, 9.0, 11.0, 10.0, 10.5, 3.0, "extra"]]  # time, low, high, open, close, volume
    with serve(lambda request: Reply(200, rows)) as server:
        page = provider_for(server.url).fetch_page(
            "BTC-USD", Interval.D1, Window(START, START + DAY)
        )
    assert (page.symbol, page.interval, page.provider) == ("BTC-USD", Interval.D1, "coinbase")
    assert list(page.rows()) == [(START, 10.0, 11.0, 9.0, 10.5, 3.0)]


def test_the_provider_is_given_up_at_the_third_failing_symbol_not_before(fake, provider_for):
    """BREAKER_THRESHOLD symbols in a row fail with their own answer (each asks the server);
    only the symbol after them is refused without a request."""
    fake.fail_next = [Reply(500, "x")] * 100
    with serve(fake) as server:
        provider = provider_for(server.url)
        for n, symbol in enumerate(("BTC-USD", "ETH-USD", "SOL-USD"), start=1):
            with pytest.raises(ProviderUnavailableError, match="HTTP 500"):
                provider.fetch(symbol, Interval.D1, Window(START, START + DAY))
            assert provider.breaker.failed_in_a_row == n
        asked = len(server.requests)
        with pytest.raises(ProviderUnavailableError, match="given up for the rest of this run"):
            provider.fetch("ADA-USD", Interval.D1, Window(START, START + DAY))
        assert len(server.requests) == asked


CLOCK = START + 3 * DAY + 0.25  # the run's clock, pinned for the Retry-After tests below


def _http_date(seconds_after_clock: int) -> str:
    from email.utils import formatdate

    return formatdate(int(CLOCK) + seconds_after_clock, usegmt=True)


def provider_that_sleeps(
    provider_for, url: str, **settings: object
) -> tuple[CoinbaseProvider, list[float]]:
    """A provider on a pinned run clock whose waits are recorded, not slept (three attempts
    unless `settings` say otherwise)."""
    provider = provider_for(url, **{"http_retry_attempts": 3, **settings})
    slept: list[float] = []
    provider.ctx.sleep = slept.append
    provider.ctx.clock = lambda: CLOCK
    return provider, slept


@pytest.mark.parametrize(
    ("retry_after", "waited"),
    [
        ("7", 7.0),  # delta-seconds
        ("60", 60.0),  # exactly the cap (RETRY_AFTER_LIMIT): still waited for
        (_http_date(20), 19.75),  # an HTTP date, measured from the run's clock
        (_http_date(60), 59.75),  # at the cap (RETRY_AFTER_LIMIT): still waited for
        (_http_date(-5), 0.0),  # a date already past: retried at once
    ],
)
def test_the_wait_before_a_retry_is_the_retry_after_asked_for(
    fake, provider_for, retry_after, waited
):
    fake.fail_next = [Reply(429, {"message": "slow down"}, headers={"Retry-After": retry_after})]
    with serve(fake) as server:
        provider, slept = provider_that_sleeps(provider_for, server.url)
        candles = provider.fetch("BTC-USD", Interval.D1, Window(START, START + 3 * DAY))
    assert slept == [waited]
    assert len(server.requests) == 2 and len(candles) == 3


def test_a_retry_after_date_beyond_the_cap_is_neither_waited_for_nor_retried(fake, provider_for):
    fake.fail_next = [Reply(503, "busy", headers={"Retry-After": _http_date(62)})] * 3
    with serve(fake) as server:
        provider, slept = provider_that_sleeps(provider_for, server.url)
        with pytest.raises(ProviderUnavailableError) as caught:
            provider.fetch("BTC-USD", Interval.D1, Window(START, START + 3 * DAY))
    assert caught.value.retry_after == 61.75
    assert slept == []
    assert len(server.requests) == 1


def test_without_retry_after_each_wait_is_the_backoff_plus_a_jitter_under_half_a_second(
    fake, provider_for
):
    """stamina's backoff (0.5 s, then doubled) plus a random jitter of less than
    BACKOFF_JITTER, so that many workers do not retry in step; in stamina's testing mode,
    as everywhere else in this suite, there is no backoff and no jitter at all."""
    import stamina

    fake.fail_next = [Reply(500, "oops"), Reply(502, "oops")]
    with serve(fake) as server:
        provider, slept = provider_that_sleeps(provider_for, server.url)
        provider.fetch("BTC-USD", Interval.D1, Window(START, START + DAY))
        assert slept == [0.0, 0.0]
        fake.fail_next = [Reply(500, "oops"), Reply(502, "oops")]
        slept.clear()
        stamina.set_testing(False)  # the autouse fixture's teardown leaves it off too
        try:
            provider.fetch("BTC-USD", Interval.D1, Window(START, START + DAY))
        finally:
            stamina.set_testing(True, attempts=3)
    [first, second] = slept
    assert 0.5 < first < 1.0  # a jitter of exactly 0 has a chance of about 2**-53
    assert 1.0 < second < 1.5


@pytest.mark.parametrize("attempts", [1, 4])
def test_a_request_is_sent_http_retry_attempts_times_its_backoff_held_at_http_retry_wait_max(
    fake, provider_for, attempts
):
    """Outside stamina's testing mode (which sets the attempts itself): HTTP_RETRY_ATTEMPTS
    requests, then the error, though the provider would answer the one after; each wait is
    the backoff (0.5 s, then doubled) held at HTTP_RETRY_WAIT_MAX, plus a jitter."""
    import stamina

    from marketdata.providers.base import BACKOFF_JITTER

    fake.fail_next = [Reply(503, "busy")] * attempts
    with serve(fake) as server:
        provider, slept = provider_that_sleeps(
            provider_for, server.url, http_retry_attempts=attempts, http_retry_wait_max=0.5
        )
        stamina.set_testing(False)  # the autouse fixture's teardown leaves it off too
        try:
            with pytest.raises(ProviderUnavailableError):
                provider.fetch("BTC-USD", Interval.D1, Window(START, START + DAY))
        finally:
            stamina.set_testing(True, attempts=3)
    assert len(server.requests) == attempts
    assert len(slept) == attempts - 1
    assert all(0.5 <= wait < 0.5 + BACKOFF_JITTER for wait in slept), slept


def test_outside_its_testing_mode_stamina_waits_nothing_itself_the_run_s_clock_waits(
    fake, provider_for
):
    """The wait before a retry is taken on the run's cancellable clock, which a stop ends at
    once; stamina is told to wait 0 s itself, as its own retry hooks report (an uncancellable
    second of its own would show as 1.0)."""
    import stamina
    import stamina.instrumentation

    scheduled: list[float] = []
    hooks = stamina.instrumentation.get_on_retry_hooks()
    fake.fail_next = [Reply(503, "busy", headers={"Retry-After": "3"}), Reply(500, "oops")]
    with serve(fake) as server:
        provider, slept = provider_that_sleeps(provider_for, server.url)
        stamina.set_testing(False)  # the autouse fixture's teardown leaves it off too
        stamina.instrumentation.set_on_retry_hooks([lambda retry: scheduled.append(retry.wait_for)])
        try:
            provider.fetch("BTC-USD", Interval.D1, Window(START, START + DAY))
        finally:
            stamina.instrumentation.set_on_retry_hooks(hooks)
            stamina.set_testing(True, attempts=3)
    assert slept[0] == 3.0
    assert 1.0 < slept[1] < 1.5  # the second backoff, 1 s, plus a jitter
    assert scheduled == [0.0, 0.0]


def test_a_retried_error_carries_the_wait_its_retry_is_logged_with(fake, provider_for):
    """A failure that Retry-After says to retry records the wait it asked for (the log record
    of a scheduled retry reads it); the error finally raised carries it too."""
    fake.fail_next = [Reply(429, {"message": "slow down"}, headers={"Retry-After": "7"})] * 3
    with serve(fake) as server:
        provider, slept = provider_that_sleeps(provider_for, server.url)
        with pytest.raises(ProviderUnavailableError) as caught:
            provider.fetch("BTC-USD", Interval.D1, Window(START, START + 3 * DAY))
    assert slept == [7.0, 7.0]
    assert (caught.value.retry_after, caught.value.retry_wait) == (7.0, 7.0)


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (Reply(200, "<html>maintenance</html>"), "BadPayloadError"),  # not JSON
        (Reply(500, "oops"), "ProviderUnavailableError"),
        (Reply(403, {"message": "Forbidden"}), "BadPayloadError"),
    ],
)
def test_every_kind_of_coinbase_error_names_the_symbol_asked_for(fake, provider_for, reply, kind):
    fake.fail_next = [reply] * 3
    with serve(fake) as server, pytest.raises(Exception) as caught:
        provider_for(server.url).fetch("ETH-USD", Interval.D1, Window(START, START + DAY))
    assert (type(caught.value).__name__, caught.value.provider, caught.value.symbol) == (
        kind,
        "coinbase",
        "ETH-USD",
    )
