"""What `providers list` and `providers check` report."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from marketdata.errors import ProviderError
from marketdata.providers.registry import build_provider, parse_chain, provider_names

if TYPE_CHECKING:
    from marketdata.context import AppContext


def describe_providers(app: AppContext) -> list[dict[str, Any]]:
    """One row per registered provider."""
    rows = []
    with app.provider_context({}) as ctx:
        for name in provider_names():
            provider = build_provider(name, ctx)
            rows.append(
                {
                    "name": name,
                    "intervals": [
                        i.value for i in sorted(provider.intervals, key=lambda i: i.seconds)
                    ],
                    "max_rows_per_request": provider.max_rows_per_request,
                    "rate_limit": str(provider.rate_limit),
                    "base_url": app.settings.masked(f"{name}_base_url")
                    if hasattr(app.settings, f"{name}_base_url")
                    else "",
                }
            )
    return rows


def check_providers(app: AppContext, names: list[str] | None) -> list[dict[str, Any]]:
    """Reachability and latency of each provider (default: the configured chain)."""
    chain = parse_chain(names or app.settings.ingestion_provider)
    results: list[dict[str, Any]] = []
    with app.provider_context({}) as ctx:
        for name in chain:
            provider = build_provider(name, ctx)
            try:
                latency = provider.check()
            except ProviderError as exc:
                results.append(
                    {
                        "provider": name,
                        "status": "down",
                        "latency_ms": None,
                        "error": exc.one_line(),
                    }
                )
            else:
                results.append(
                    {
                        "provider": name,
                        "status": "up",
                        "latency_ms": round(latency, 1),
                        "error": None,
                    }
                )
    return results
