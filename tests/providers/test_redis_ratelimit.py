"""The Redis-shared rate limiter against a real Redis (TEST_REDIS_URL), and without one."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from marketdata.providers.ratelimit import RateLimit
from marketdata.providers.redis_ratelimit import RedisRateLimiter, redis_limiter_factory

CLOSED_PORT_URL = "redis://127.0.0.1:1/0"


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A client of the test Redis (the shared fixture skips, or fails under CI, without one)."""
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=2)
    yield client
    client.close()


@pytest.fixture
def prefix(client: redis.Redis) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"test:{uuid.uuid4().hex}:ratelimit:"
    yield prefix
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)


class RecordingSleep:
    """Records the waits it is asked for instead of sleeping (Redis time keeps running)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def granted_waits(
    limiters: list[RedisRateLimiter], sleep: RecordingSleep, count: int
) -> list[float]:
    """Acquire `count` tokens round-robin; the wait each acquisition had (0.0 for none)."""
    waits = []
    for i in range(count):
        before = len(sleep.waits)
        limiters[i % len(limiters)].acquire()
        waits.append(sleep.waits[-1] if len(sleep.waits) > before else 0.0)
    return waits


@pytest.mark.redis
def test_two_processes_share_one_bucket_five_at_once_then_two_per_second(client, prefix):
    sleep = RecordingSleep()
    limit = RateLimit(per_second=2.0, burst=5)
    first = RedisRateLimiter(client, "coinbase", limit, prefix=prefix, sleep=sleep)
    second = RedisRateLimiter(client, "coinbase", limit, prefix=prefix, sleep=sleep)
    waits = granted_waits([first, second], sleep, 10)
    assert waits[:5] == [0.0] * 5
    # each further token is reserved half a second after the previous one
    assert waits[5:] == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.5], abs=0.05)
    assert not first.degraded and not second.degraded
    assert client.exists(f"{prefix}coinbase") == 1


@pytest.mark.redis
def test_threads_with_their_own_limiters_are_paced_in_real_time(client, prefix):
    limit = RateLimit(per_second=20.0, burst=2)
    limiters = [RedisRateLimiter(client, "kraken", limit, prefix=prefix) for _ in range(2)]
    granted: list[float] = []
    lock = threading.Lock()

    def work(limiter: RedisRateLimiter) -> None:
        for _ in range(5):
            limiter.acquire()
            with lock:
                granted.append(time.perf_counter())

    # before any token is taken: the bucket is made (full) no earlier than this
    started = time.perf_counter()
    threads = [threading.Thread(target=work, args=(lim,)) for lim in limiters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(granted) == 10
    # never faster than the limit, however the threads were scheduled: the k-th grant comes
    # at least (k - burst) / rate after the start (a late thread only makes it later)
    since = [t - started for t in sorted(granted)]
    floors = [max(0, k - 2) / 20.0 for k in range(1, 11)]
    assert all(s >= f - 0.01 for s, f in zip(since, floors, strict=True)), since
    # and paced, not stalled: 8 tokens after the burst take 0.4 s; the bound leaves room for
    # a loaded machine while still catching a wait of a whole second per token
    assert since[-1] < 4.0


@pytest.mark.redis
def test_each_provider_has_its_own_bucket(client, prefix):
    sleep = RecordingSleep()
    limit = RateLimit(per_second=1.0, burst=2)
    busy = RedisRateLimiter(client, "binance", limit, prefix=prefix, sleep=sleep)
    for _ in range(3):
        busy.acquire()
    assert len(sleep.waits) == 1
    idle = RedisRateLimiter(client, "yahoo", limit, prefix=prefix, sleep=sleep)
    idle.acquire()
    idle.acquire()
    assert len(sleep.waits) == 1


@pytest.mark.redis
def test_the_bucket_refills_at_the_given_rate(client, prefix):
    sleep = RecordingSleep()
    limiter = RedisRateLimiter(
        client, "stooq", RateLimit(per_second=50.0, burst=2), prefix=prefix, sleep=sleep
    )
    limiter.acquire()
    limiter.acquire()
    time.sleep(0.1)  # 5 tokens' worth, capped at the burst of 2
    limiter.acquire()
    limiter.acquire()
    assert sleep.waits == []
    limiter.acquire()
    assert sleep.waits == [pytest.approx(0.02, abs=0.01)]


@pytest.mark.redis
def test_the_bucket_key_expires_once_it_would_be_full_again(client, prefix):
    limiter = RedisRateLimiter(
        client, "coingecko", RateLimit(per_second=0.5, burst=3), prefix=prefix
    )
    limiter.acquire()
    ttl_ms = client.pttl(f"{prefix}coingecko")
    assert 6_000 < ttl_ms <= 7_000  # refill 3 tokens at 0.5/s = 6 s, plus a second


@pytest.mark.redis
def test_the_factory_builds_limiters_on_the_given_prefix(client, prefix):
    factory = redis_limiter_factory(client, prefix)
    limiter = factory("coinbase", RateLimit(per_second=10.0, burst=15))
    assert isinstance(limiter, RedisRateLimiter)
    assert limiter.key == f"{prefix}coinbase"
    limiter.acquire()
    assert float(client.hget(f"{prefix}coinbase", "tokens")) == pytest.approx(14.0, abs=0.1)


@pytest.mark.redis
def test_a_redis_error_other_than_a_lost_connection_also_degrades_to_local(client, prefix):
    client.set(f"{prefix}coinbase", "not a hash")  # WRONGTYPE for HMGET
    limiter = RedisRateLimiter(
        client, "coinbase", RateLimit(per_second=5.0, burst=5), prefix=prefix
    )
    limiter.acquire()
    assert limiter.degraded


def test_a_limiter_whose_redis_is_down_from_the_start_paces_locally_without_a_burst():
    client = redis.Redis.from_url(CLOSED_PORT_URL, socket_connect_timeout=1)
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    limiter = RedisRateLimiter(client, "coinbase", RateLimit(per_second=20.0, burst=2), sleep=sleep)
    assert not limiter.degraded
    started = time.perf_counter()
    for _ in range(3):
        limiter.acquire()
    elapsed = time.perf_counter() - started
    assert limiter.degraded
    # the local bucket took over, empty: the shared burst may be spent by other processes,
    # so each request waits its 1/20 s
    assert slept == pytest.approx([0.05] * 3, abs=0.02)
    assert elapsed < 1.0


def test_one_failure_degrades_every_limiter_of_the_same_factory():
    client = redis.Redis.from_url(CLOSED_PORT_URL, socket_connect_timeout=1)
    factory = redis_limiter_factory(client, "marketdata:ratelimit:")
    first = factory("coinbase", RateLimit(per_second=100.0, burst=10))
    second = factory("kraken", RateLimit(per_second=100.0, burst=10))
    assert isinstance(first, RedisRateLimiter) and isinstance(second, RedisRateLimiter)
    first.acquire()
    assert first.degraded and second.degraded
    second.acquire()  # goes straight to its local bucket


class ManualClock:
    """A clock that moves only when the limiter sleeps (waits become exact figures)."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def test_losing_redis_is_logged_once_and_the_local_bucket_continues_from_the_spent_budget(
    tmp_path,
):
    from loguru import logger

    from marketdata.cache.fallback import RedisOutage
    from marketdata.cache.redis_backend import redis_client
    from marketdata.observability.alerts import RecordingAlerts
    from marketdata.observability.metrics import RecordingMetrics
    from tests.fakes.redis_server import private_redis

    lines: list[str] = []
    handler = logger.add(lambda m: lines.append(m.record["message"]), level="WARNING")
    limit = RateLimit(per_second=10.0, burst=15)
    clock = ManualClock()
    try:
        with private_redis(tmp_path) as server:
            client = redis_client(server.url())
            outage = RedisOutage(RecordingMetrics(), RecordingAlerts())
            limiters = [
                RedisRateLimiter(
                    client,
                    provider,
                    limit,
                    prefix="rl:",
                    sleep=clock.sleep,
                    clock=clock,
                    redis_down=outage.event,
                    on_error=outage.report,
                )
                for provider in ("coinbase", "kraken")
            ]
            for _ in range(15):  # the shared burst, spent through Redis
                limiters[0].acquire()
            assert not limiters[0].degraded
            server.stop()
            spent_through_redis = len(clock.waits)
            for _ in range(15):
                limiters[0].acquire()
            coinbase = clock.waits[spent_through_redis:]
            for _ in range(5):
                limiters[1].acquire()
            kraken = clock.waits[spent_through_redis + len(coinbase) :]
            client.close()
    finally:
        logger.remove(handler)
    assert limiters[0].degraded and limiters[1].degraded
    assert len([line for line in lines if line.startswith("Redis client error:")]) == 1
    # no fresh burst: the 15 requests after the outage are paced at 10/s from the first
    # (a full bucket would have let all 15 through at once); the shared bucket had refilled
    # at most a token while its burst was being spent
    assert len(coinbase) >= 14 and sum(coinbase) >= 1.3
    # kraken never reached Redis: it starts empty too, and its failure is not logged again
    assert kraken == pytest.approx([0.1] * 5)


def test_a_local_sources_limit_stays_in_the_process_with_redis_configured(
    app_factory, redis_url, client, prefix
):
    """Synthetic and CSV sources spend no service's budget: with REDIS_URL set their runs ask
    Redis nothing for their limit, while a provider of a public service shares its bucket."""
    from marketdata.pipeline import IngestRequest, run_ingest
    from marketdata.providers.coinbase import CoinbaseProvider
    from marketdata.providers.csvfile import CsvProvider
    from marketdata.providers.synthetic import SyntheticProvider

    cache_prefix = prefix.removesuffix("ratelimit:")
    app = app_factory(redis_url=redis_url, cache_prefix=cache_prefix)
    try:
        run_ingest(app, IngestRequest(symbols=["BTC-USD"], providers=["synthetic"]))
        assert list(client.scan_iter(match=f"{cache_prefix}marketdata:ratelimit:*")) == []
        with app.provider_context({}) as ctx:
            for cls in (SyntheticProvider, CsvProvider):
                limiter = ctx.limiter_factory(cls.name, cls.rate_limit)
                assert not isinstance(limiter, RedisRateLimiter)
            shared = ctx.limiter_factory(CoinbaseProvider.name, CoinbaseProvider.rate_limit)
            assert isinstance(shared, RedisRateLimiter)
    finally:
        app.cache.delete_pattern("*")
        app.close()
