"""A token bucket per provider shared through Redis by every process that uses the same server."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from marketdata.providers.ratelimit import LocalRateLimiter, RateLimit, RateLimiter

if TYPE_CHECKING:
    import redis

DEFAULT_PREFIX = "marketdata:ratelimit:"

# Take one token, or reserve the next one: the bucket may go negative, and the caller then
# waits until its reserved token has refilled. One round trip per request, first come first
# served across processes, and no retry loop hammering Redis. Time comes from the Redis server
# so that every process agrees on it; TIME before a write is fine under effects replication
# (the default since Redis 5, the only mode since 7).
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(state[1])
local stamp = tonumber(state[2])
if tokens == nil or stamp == nil then
  tokens = burst
  stamp = now
end
tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate)
tokens = tokens - 1
local wait = 0
if tokens < 0 then
  wait = -tokens / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
           'stamp', string.format('%.6f', now))
-- once full again the bucket is the same as no key: let it expire
redis.call('PEXPIRE', KEYS[1], math.ceil((wait + burst / rate) * 1000) + 1000)
return string.format('%.6f', wait)
"""


class RedisRateLimiter:
    """A token bucket in Redis under `prefix + provider`, shared by all processes.

    If Redis fails (down, timing out, refusing), the limiter switches to an in-process
    LocalRateLimiter for the rest of its life and sets `degraded`: a run never fails because
    the limiter's Redis is unavailable.
    """

    def __init__(
        self,
        client: redis.Redis[Any],
        provider: str,
        limit: RateLimit,
        *,
        prefix: str = DEFAULT_PREFIX,
        sleep: Callable[[float], None] = time.sleep,
        redis_down: threading.Event | None = None,
    ) -> None:
        self.limit = limit
        self.key = f"{prefix}{provider}"
        self._sleep = sleep
        self._script = client.register_script(_TAKE)
        # Shared by the limiters of one factory: once Redis failed for one provider, the others
        # do not wait for their own connection errors (or timeouts) to find out.
        self._redis_down = redis_down if redis_down is not None else threading.Event()
        self._fallback: LocalRateLimiter | None = None
        self._lock = threading.Lock()

    @property
    def degraded(self) -> bool:
        """True once this limiter works in-process because Redis failed."""
        return self._redis_down.is_set()

    def acquire(self) -> None:
        """Take a token from the shared bucket, sleeping until it is ours."""
        if not self._redis_down.is_set():
            try:
                wait = float(
                    self._script(keys=[self.key], args=[self.limit.per_second, self.limit.burst])
                )
            except (RedisError, ValueError, TypeError):
                self._redis_down.set()
            else:
                if wait > 0 and math.isfinite(wait):
                    self._sleep(wait)
                return
        self._local().acquire()

    def _local(self) -> LocalRateLimiter:
        with self._lock:
            if self._fallback is None:
                self._fallback = LocalRateLimiter(self.limit, sleep=self._sleep)
            return self._fallback


def redis_limiter_factory(
    client: redis.Redis[Any],
    prefix: str = DEFAULT_PREFIX,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> Callable[[str, RateLimit], RateLimiter]:
    """A ProviderContext.limiter_factory whose limiters share buckets through `client`
    (and wait with `sleep`: the run's cancellable one)."""
    redis_down = threading.Event()

    def build(provider: str, limit: RateLimit) -> RateLimiter:
        return RedisRateLimiter(
            client, provider, limit, prefix=prefix, sleep=sleep, redis_down=redis_down
        )

    return build
