"""What a provider's error tells, in one comparable value."""

from __future__ import annotations

from marketdata.errors import ProviderError


def told(error: ProviderError) -> tuple[str, str, str | None, str, str | None]:
    """The error's class name, message, hint, provider and symbol."""
    return (type(error).__name__, error.message, error.hint, error.provider, error.symbol)
