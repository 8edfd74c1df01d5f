"""The provider registry: name -> provider class, imported only when asked for."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import import_module
from typing import cast

from marketdata.errors import UnknownProviderError
from marketdata.providers.base import Provider, ProviderContext

# name -> "module:Class". A new provider is one module and one line here.
PROVIDERS: dict[str, str] = {
    "coinbase": "marketdata.providers.coinbase:CoinbaseProvider",
    "kraken": "marketdata.providers.kraken:KrakenProvider",
    "binance": "marketdata.providers.binance:BinanceProvider",
    "coingecko": "marketdata.providers.coingecko:CoinGeckoProvider",
    "yahoo": "marketdata.providers.yahoo:YahooProvider",
    "stooq": "marketdata.providers.stooq:StooqProvider",
    "csv": "marketdata.providers.csvfile:CsvProvider",
    "synthetic": "marketdata.providers.synthetic:SyntheticProvider",
}


def provider_names() -> list[str]:
    """Every registered provider name, in registry order."""
    return list(PROVIDERS)


def parse_chain(names: Sequence[str]) -> list[str]:
    """Validate a fallback chain such as ['coinbase', 'kraken'] (comma lists allowed)."""
    chain: list[str] = []
    for value in names:
        for raw in value.split(","):
            name = raw.strip().lower()
            if not name:
                continue
            if name not in PROVIDERS:
                raise UnknownProviderError(
                    f"unknown provider {raw.strip()!r}",
                    hint=f"choose from {', '.join(PROVIDERS)} (marketdata providers list)",
                )
            if name not in chain:
                chain.append(name)
    if not chain:
        raise UnknownProviderError("no provider given", hint="set INGESTION_PROVIDER or --provider")
    return chain


def provider_class(name: str) -> type[Provider]:
    """The class registered under `name`."""
    target = PROVIDERS.get(name)
    if target is None:
        parse_chain([name])  # raises the user-facing error
    module_name, _, class_name = cast(str, target).partition(":")
    return cast(type[Provider], getattr(import_module(module_name), class_name))


def build_provider(name: str, ctx: ProviderContext) -> Provider:
    """An instance of the named provider, handed the shared context."""
    return provider_class(name)(ctx)
