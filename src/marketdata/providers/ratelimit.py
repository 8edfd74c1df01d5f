"""Rate limiters: a token bucket per provider in this process (redis_ratelimit shares one)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class RateLimit:
    """A provider's documented public limit: sustained requests per second and burst size.

    `shared` is False for a local source (a file, a generator), whose limit is no service's
    budget: its limiter stays in the process even with REDIS_URL set, sparing a Redis round
    trip per request.
    """

    per_second: float
    burst: int
    shared: bool = True

    def __str__(self) -> str:
        return f"{self.per_second:g}/s burst {self.burst}"


class RateLimiter(Protocol):
    """Blocks until one more request may be sent."""

    def acquire(self) -> None:
        """Wait for a token."""


class LocalRateLimiter:
    """A thread-safe token bucket for one process."""

    def __init__(
        self,
        limit: RateLimit,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        tokens: float | None = None,
        stamp: float | None = None,
    ) -> None:
        """A full bucket, or one carrying on from `tokens` left at `stamp` (clock time; may
        be negative: tokens already reserved), as when a shared bucket becomes local."""
        self.limit = limit
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(limit.burst) if tokens is None else min(float(limit.burst), tokens)
        self._stamp = clock() if stamp is None else stamp
        self._lock = threading.Lock()

    @classmethod
    def create(cls, provider: str, limit: RateLimit) -> LocalRateLimiter:
        """Factory with the signature ProviderContext.limiter_factory expects."""
        return cls(limit)

    def acquire(self) -> None:
        """Take a token, sleeping until one has refilled when the bucket is empty."""
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(
                    float(self.limit.burst),
                    self._tokens + (now - self._stamp) * self.limit.per_second,
                )
                self._stamp = now
                # within rounding of a whole token: a refill computed from the wait just
                # slept can land a hair below 1.0, and a wait that small never advances a clock
                if self._tokens >= 1.0 - 1e-9:
                    self._tokens -= 1.0
                    return
                wait = (1.0 - self._tokens) / self.limit.per_second
            self._sleep(wait)
