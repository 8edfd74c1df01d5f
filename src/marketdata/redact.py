"""Secret masking: URLs with passwords or tokens, API keys, and a scrubber for any text."""

from __future__ import annotations

import threading
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
_SECRET_QUERY_KEYS = ("password", "passwd", "pass", "token", "key", "apikey", "api_key", "secret")
_lock = threading.Lock()
_known: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret so that `scrub` removes it from any text (logs, errors, output)."""
    if value and len(value) >= 4:
        with _lock:
            _known.add(value)


def scrub(text: str) -> str:
    """Replace every registered secret inside `text` with the mask."""
    with _lock:
        secrets = sorted(_known, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def mask_url(url: str, *, hide_path: bool = False) -> str:
    """The URL with its password, secret-looking query values and (optionally) path masked.

    `hide_path` is for webhook URLs, whose path is the token (Slack, Discord, Teams...).
    """
    try:
        parts = urlsplit(url)
        password = parts.password
        netloc = parts.netloc
    except ValueError:
        return MASK
    if password:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{hostport}"
    path = parts.path
    if hide_path and path not in ("", "/"):
        path = "/" + MASK
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        masked = [(k, MASK if _looks_secret(k) or hide_path else v) for k, v in pairs]
        query = urlencode(masked, safe="*") if masked != pairs else query
    if (netloc, path, query) == (parts.netloc, parts.path, parts.query):
        return url  # nothing secret: keep it exactly as written (sqlite:////abs/path)
    return urlunsplit((parts.scheme, netloc, path, query, parts.fragment))


def url_secrets(url: str | None, *, path_is_secret: bool = False) -> list[str]:
    """The secret pieces of a URL (password, token-like query values, secret path)."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
        found = [parts.password] if parts.password else []
    except ValueError:
        return [url]
    found += [v for k, v in parse_qsl(parts.query) if _looks_secret(k) or path_is_secret]
    if path_is_secret and parts.path not in ("", "/"):
        # the whole path, and each long segment on its own (tokens are often the last one)
        found.append(parts.path.lstrip("/"))
        found += [seg for seg in parts.path.split("/") if len(seg) >= 6]
    return [s for s in found if s]


def _looks_secret(key: str) -> bool:
    key = key.lower()
    return any(word in key for word in _SECRET_QUERY_KEYS)
