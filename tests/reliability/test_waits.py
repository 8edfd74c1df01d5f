"""Every wait of a run (Retry-After, retry backoff, the rate limiter, Binance's weight
pause) goes through the run's cancellable clock: tests see the seconds asked for, and a stop
ends the wait at once."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from marketdata.cancel import Cancel
from marketdata.domain import Interval, Window
from marketdata.errors import ProviderUnavailableError, RunInterruptedError
from marketdata.providers.base import RETRY_AFTER_LIMIT
from marketdata.providers.binance import BinanceProvider
from marketdata.providers.coinbase import CoinbaseProvider
from marketdata.providers.ratelimit import LocalRateLimiter, RateLimit
from tests.fakes.binance import FakeBinance
from tests.fakes.coinbase import FakeCoinbase
from tests.fakes.market import walk
from tests.fakes.server import Reply, serve

DAY = 86_400
START = 1_704_067_200  # 2024-01-01
WINDOW = Window(START, START + 3 * DAY)


@pytest.fixture
def coinbase():
    fake = FakeCoinbase()
    fake.add("BTC-USD", DAY, walk(START, DAY, 3))
    with serve(fake) as server:
        yield fake, server


def provider_with_sleeper(provider_context, url: str, **settings):
    slept: list[float] = []
    ctx = provider_context(coinbase_base_url=url, http_retry_attempts=3, **settings)
    ctx.sleep = slept.append
    return CoinbaseProvider(ctx), slept


def test_retry_after_in_seconds_is_the_wait_before_the_retry(coinbase, provider_context):
    fake, server = coinbase
    fake.fail_next = [Reply(429, {"message": "slow down"}, headers={"Retry-After": "7"})]
    provider, slept = provider_with_sleeper(provider_context, server.url)
    candles = provider.fetch("BTC-USD", Interval.D1, WINDOW)
    assert len(candles) == 3
    assert slept == [7.0]
    assert len(server.requests) == 2


def test_retry_after_as_an_http_date_waits_until_that_moment(coinbase, provider_context):
    fake, server = coinbase
    moment = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=20)
    fake.fail_next = [Reply(503, "busy", headers={"Retry-After": format_datetime(moment, True)})]
    provider, slept = provider_with_sleeper(provider_context, server.url)
    provider.fetch("BTC-USD", Interval.D1, WINDOW)
    [wait] = slept
    assert 17.0 <= wait <= 20.0


def test_a_retry_after_beyond_the_cap_is_not_waited_for_nor_retried(coinbase, provider_context):
    fake, server = coinbase
    beyond = str(int(RETRY_AFTER_LIMIT) + 1)
    fake.fail_next = [Reply(429, {"message": "banned"}, headers={"Retry-After": beyond})] * 3
    provider, slept = provider_with_sleeper(provider_context, server.url)
    with pytest.raises(ProviderUnavailableError) as caught:
        provider.fetch("BTC-USD", Interval.D1, WINDOW)
    assert caught.value.retry_after == RETRY_AFTER_LIMIT + 1
    assert slept == []
    assert len(server.requests) == 1


def test_a_retry_after_at_the_cap_is_waited_for(coinbase, provider_context):
    fake, server = coinbase
    at_cap = str(int(RETRY_AFTER_LIMIT))
    fake.fail_next = [Reply(429, {"message": "wait"}, headers={"Retry-After": at_cap})]
    provider, slept = provider_with_sleeper(provider_context, server.url)
    provider.fetch("BTC-USD", Interval.D1, WINDOW)
    assert slept == [RETRY_AFTER_LIMIT]


def test_without_retry_after_the_backoff_goes_through_the_same_sleeper(coinbase, provider_context):
    fake, server = coinbase
    fake.fail_next = [Reply(500, "oops"), Reply(502, "oops")]
    provider, slept = provider_with_sleeper(provider_context, server.url)
    provider.fetch("BTC-USD", Interval.D1, WINDOW)
    assert len(slept) == 2  # one wait before each retry (0 s in stamina's testing mode)
    assert len(server.requests) == 3


def stop_soon(cancel: Cancel, after: float = 0.2) -> threading.Timer:
    timer = threading.Timer(after, cancel.set)
    timer.start()
    return timer


def test_a_stop_ends_a_retry_after_wait_at_once(coinbase, provider_context):
    fake, server = coinbase
    fake.fail_next = [Reply(429, {"message": "wait"}, headers={"Retry-After": "30"})]
    ctx = provider_context(coinbase_base_url=server.url, http_retry_attempts=3)
    ctx.sleep = None  # the real, cancellable wait
    provider = CoinbaseProvider(ctx)
    stop_soon(ctx.cancel)
    started = time.monotonic()
    with pytest.raises(RunInterruptedError):
        provider.fetch("BTC-USD", Interval.D1, WINDOW)
    assert time.monotonic() - started < 5  # not the 30 s asked for
    assert len(server.requests) == 1


def test_a_stop_ends_a_rate_limiter_wait_at_once():
    cancel = Cancel()
    limiter = LocalRateLimiter(RateLimit(per_second=0.01, burst=1), sleep=cancel.sleep)
    limiter.acquire()  # the burst; the next token is 100 s away
    stop_soon(cancel)
    started = time.monotonic()
    with pytest.raises(RunInterruptedError):
        limiter.acquire()
    assert time.monotonic() - started < 5


def test_a_stop_ends_binances_weight_pause_at_once(provider_context):
    fake = FakeBinance(used_weight=5500)  # the minute's weight is spent: pause to the next
    fake.add("BTCUSDT", "1d", walk(START, DAY, 3))
    with serve(fake) as server:
        ctx = provider_context(binance_base_url=server.url)
        ctx.sleep = None
        provider = BinanceProvider(ctx)
        provider.clock = lambda: START + 1.0  # one second into the minute: 60 s to wait
        provider.fetch("BTC-USDT", Interval.D1, WINDOW)  # learns the weight is spent
        stop_soon(ctx.cancel)
        started = time.monotonic()
        with pytest.raises(RunInterruptedError):
            provider.fetch("BTC-USDT", Interval.D1, WINDOW)
        assert time.monotonic() - started < 5
        assert len(server.requests) == 1


def test_the_retry_log_line_states_the_wait_actually_taken(coinbase, provider_context):
    from loguru import logger

    from marketdata.observability.logging import configure_logging

    fake, server = coinbase
    fake.fail_next = [Reply(429, {"message": "slow down"}, headers={"Retry-After": "7"})]
    provider, slept = provider_with_sleeper(provider_context, server.url)
    lines: list[str] = []
    configure_logging("INFO", "json", write=lines.append)
    try:
        provider.fetch("BTC-USD", Interval.D1, WINDOW)
    finally:
        logger.remove()
    records = [json.loads(line) for line in lines]
    [retry] = [r for r in records if "retry_num" in r]
    assert slept == [7.0]
    assert retry["retry_wait_s"] == 7.0
    assert retry["message"].endswith("in 7.00s")
