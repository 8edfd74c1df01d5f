"""TLS for every outgoing HTTPS request: certificates are always verified.

There is deliberately no setting that turns verification off. Where a proxy re-signs traffic
or a provider is reached through a mirror with a private CA, HTTP_CA_BUNDLE names a PEM file of
the CA certificates to trust instead of the system's.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Literal

from marketdata.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path


def ssl_context(bundle: Path | None) -> ssl.SSLContext | Literal[True]:
    """What an httpx client is given as `verify`: True (httpx's own verifying context, on
    certifi's CAs or SSL_CERT_FILE's) when no bundle is set, else a verifying context that
    trusts the bundle's CAs. Never False.

    Raises:
        ConfigError: HTTP_CA_BUNDLE cannot be read or holds no certificate.
    """
    if bundle is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(bundle))
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise ConfigError(
            f"HTTP_CA_BUNDLE={bundle} is not a readable PEM file of CA certificates: {reason}"
        ) from None


def untrusted_certificate(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind an HTTP client error, if that is its cause."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
