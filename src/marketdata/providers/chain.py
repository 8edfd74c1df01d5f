"""The fallback chain: when a provider fails a symbol after its retries, the next one serves it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from marketdata.domain import Candles, Interval, Window
from marketdata.errors import InputError, ProviderError
from marketdata.providers.base import Provider, unsupported_interval


@dataclass
class Served:
    """Candles and who served them, plus what went wrong before that."""

    candles: Candles
    provider: str
    failures: list[str] = field(default_factory=list)

    @property
    def fell_back(self) -> bool:
        """True when the first provider in the chain did not serve it."""
        return bool(self.failures)


class FallbackChain:
    """Providers tried in order for each (symbol, interval, window)."""

    def __init__(self, providers: Sequence[Provider]) -> None:
        self.providers = list(providers)

    @property
    def names(self) -> list[str]:
        """Provider names in chain order."""
        return [p.name for p in self.providers]

    def fetch(self, symbol: str, interval: Interval, window: Window) -> Served:
        """The first successful fetch; the last error when every provider failed.

        Providers that do not serve the interval are passed over; if none serves it, the
        first one's UnsupportedIntervalError is raised (a usage error, before any request).
        """
        failures: list[str] = []
        last_error: ProviderError | None = None
        unsupported: InputError | None = None
        for provider in self.providers:
            if interval not in provider.intervals:
                unsupported = unsupported or unsupported_interval(provider, interval)
                continue
            try:
                return Served(provider.fetch(symbol, interval, window), provider.name, failures)
            except ProviderError as exc:
                failures.append(f"{provider.name}: {exc.one_line()}")
                last_error = exc
        if last_error is not None:
            if len(failures) > 1:
                last_error.message = "; ".join(failures)
            raise last_error
        assert unsupported is not None
        raise unsupported
