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
return string.format('%.6f %.17g', wait, tokens)
"""


class RedisRateLimiter:
    """A token bucket in Redis under `prefix + provider`, shared by all processes.

    If Redis fails (down, timing out, refusing), the limiter switches to an in-process
    LocalRateLimiter for the rest of its life and sets `degraded`: a run never fails because
    the limiter's Redis is unavailable. The first failure is handed to `on_error` (which
    logs it once per command). The local bucket carries on from the budget the shared one
    had left at its last answer, refilled since; with no answer ever, it starts empty: other
    processes may have spent the shared burst, so none is granted again.
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
        on_error: Callable[[Exception], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.key = f"{prefix}{provider}"
        self._sleep = sleep
        self._script = client.register_script(_TAKE)
        # Shared by the limiters of one factory: once Redis failed for one provider, the others
        # do not wait for their own connection errors (or timeouts) to find out.
        self._redis_down = redis_down if redis_down is not None else threading.Event()
        self._on_error = on_error
        self._clock = clock
        self._fallback: LocalRateLimiter | None = None
        self._lock = threading.Lock()
        # (tokens left, clock time) at the shared bucket's last answer; None: never answered
        self._last: tuple[float, float] | None = None

    @property
    def degraded(self) -> bool:
        """True once this limiter works in-process because Redis failed."""
        return self._redis_down.is_set()

    def acquire(self) -> None:
        """Take a token from the shared bucket, sleeping until it is ours."""
        if not self._redis_down.is_set():
            try:
                answer = self._script(
                    keys=[self.key], args=[self.limit.per_second, self.limit.burst]
                )
                wait, tokens = (float(x) for x in answer.split())
            except (RedisError, OSError, ValueError, TypeError, AttributeError) as exc:
                if not self._redis_down.is_set():
                    self._redis_down.set()
                    if self._on_error is not None:
                        self._on_error(exc)
            else:
                with self._lock:
                    self._last = (tokens, self._clock())
                if wait > 0 and math.isfinite(wait):
                    self._sleep(wait)
                return
        self._local().acquire()

    def _local(self) -> LocalRateLimiter:
        with self._lock:
            if self._fallback is None:
                # never answered: empty from now on (others may have spent the shared burst)
                tokens, stamp = self._last or (0.0, self._clock())
                self._fallback = LocalRateLimiter(
                    self.limit, clock=self._clock, sleep=self._sleep, tokens=tokens, stamp=stamp
                )
            return self._fallback


def redis_limiter_factory(
    client: redis.Redis[Any],
    prefix: str = DEFAULT_PREFIX,
    *,
    sleep: Callable[[float], None] = time.sleep,
    redis_down: threading.Event | None = None,
    on_error: Callable[[Exception], object] | None = None,
) -> Callable[[str, RateLimit], RateLimiter]:
    """A ProviderContext.limiter_factory whose limiters share buckets through `client` and
    wait with `sleep` (the run's cancellable one).

    Its limiters share `redis_down` (once set, none asks Redis again) and report the first
    failure to `on_error`.
    """
    down = redis_down if redis_down is not None else threading.Event()

    def build(provider: str, limit: RateLimit) -> RateLimiter:
        return RedisRateLimiter(
            client,
            provider,
            limit,
            prefix=prefix,
            sleep=sleep,
            redis_down=down,
            on_error=on_error,
        )

    return build
