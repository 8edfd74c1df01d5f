"""A rate limiter for tests: never waits (the real ones allow as little as 1 request/s)."""

from __future__ import annotations

from marketdata.providers.ratelimit import RateLimit


class NoWait:
    """Grants every request at once."""

    def acquire(self) -> None:
        pass


def no_wait(provider: str, limit: RateLimit) -> NoWait:
    """A ProviderContext.limiter_factory that never waits."""
    return NoWait()
