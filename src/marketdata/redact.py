"""Secret masking: URLs with passwords or tokens, API keys, and a scrubber for any text.

The scrubber masks secrets where they stand as values, not every equal substring: a
password `running` must not turn "is PostgreSQL running?" into "is PostgreSQL ***?". So:

- any URL's password (`scheme://user:PASSWORD@host`) and any secret-looking query value
  (`?token=...`, `&api_key=...`) is masked, registered or not;
- a registered secret is masked where it stands as a value: right after `:`, `=`, `/`, `@`,
  a quote or `Bearer `, and ending at a non-word character;
- a registered secret that looks like a token (digits and letters mixed, other signs, or
  12 characters and more) is also masked wherever it stands as a whole word.
"""

from __future__ import annotations

import re
import threading
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

MASK = "***"
_SECRET_QUERY_KEYS = ("password", "passwd", "pass", "token", "key", "apikey", "api_key", "secret")
_lock = threading.Lock()
_known: dict[str, re.Pattern[str]] = {}

# a token that reaches this length is masked as a whole word even when it is only letters
TOKEN_LENGTH = 12
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@/\s]+(?=@)")
_QUERY_SECRET = re.compile(
    r"(?P<head>[?&;](?:[\w.-]*(?:" + "|".join(_SECRET_QUERY_KEYS) + r")[\w.-]*)=)[^&#\s'\"]+",
    re.IGNORECASE,
)
_WORD = "A-Za-z0-9_"
_VALUE_START = r"(?:(?<=[:=/@\"'])|(?<=[Bb]earer )|(?<=[Tt]oken ))"


def register_secret(value: str | None) -> None:
    """Remember a secret so that `scrub` masks it where it stands as a value (see above)."""
    if not value or len(value) < 4:
        return
    for form in {value, quote(value, safe="")}:
        with _lock:
            _known[form] = _pattern(form)


def _pattern(secret: str) -> re.Pattern[str]:
    escaped = re.escape(secret)
    end = f"(?![{_WORD}])"
    if _looks_like_token(secret):
        return re.compile(f"(?<![{_WORD}]){escaped}{end}|{_VALUE_START}{escaped}")
    return re.compile(f"{_VALUE_START}{escaped}{end}")


def _looks_like_token(secret: str) -> bool:
    mixed = any(c.isdigit() for c in secret) and any(c.isalpha() for c in secret)
    signs = any(not c.isalnum() for c in secret)
    return mixed or signs or len(secret) >= TOKEN_LENGTH


def scrub(text: str) -> str:
    """`text` with URL passwords, secret query values and registered secrets masked."""
    text = _URL_PASSWORD.sub(lambda m: m["head"] + MASK, text)
    text = _QUERY_SECRET.sub(lambda m: m["head"] + MASK, text)
    with _lock:
        patterns = [_known[k] for k in sorted(_known, key=len, reverse=True)]
    for pattern in patterns:
        text = pattern.sub(MASK, text)
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
