"""The Cache interface, its statistics, the JSON encoding of values and Redis-style globs."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

DELETE_BATCH = 500
"""Keys deleted per UNLINK (and per disk transaction): big deletes never block a server."""


@dataclass
class CacheStats:
    """What `cache stats` reports about one backend.

    Attributes:
        backend: "redis", "disk" or "none".
        location: The Redis URL (password masked) or the disk cache's directory.
        keys: Keys by kind ("latest", "show", "recent", "roi", "other") under `market:*`.
        hits: Reads answered by the cache, since the counters began.
        misses: Reads the cache could not answer.
        fallbacks: Times this host's runs fell back from Redis to the disk cache.
        used_bytes: Redis memory in use (the whole server), or the disk cache's size.
    """

    backend: str
    location: str
    keys: dict[str, int] = field(default_factory=dict)
    hits: int = 0
    misses: int = 0
    fallbacks: int = 0
    used_bytes: int | None = None


class Cache(Protocol):
    """A key-value cache of JSON values; keys are logical (the backend adds CACHE_PREFIX).

    Every method may raise the backend's own errors (listed in `errors`); the fallback
    wrapper catches exactly those.
    """

    name: str
    location: str
    errors: tuple[type[BaseException], ...]

    def get(self, key: str) -> Any | None:
        """The decoded value, None when the key is missing or expired, `Unreadable` when
        what is stored is not JSON."""
        ...

    def get_many(self, keys: Sequence[str], *, raw: bool = False) -> dict[str, Any]:
        """The keys that are present, with their decoded values (one round trip; `Unreadable`
        for those that are not JSON), or with what is stored, not decoded, when `raw`."""
        ...

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store a JSON-encodable value (bytes: JSON already encoded, stored as they are),
        expiring after `ttl` seconds (never when None)."""
        ...

    def set_many(
        self, values: Mapping[str, Any], ttl: float | None = None, *, drop: Iterable[str] = ()
    ) -> None:
        """Store several values and delete the `drop` keys, in one round trip."""
        ...

    def scan(self, pattern: str) -> Iterator[str]:
        """The logical keys matching a Redis-style glob, incrementally (never KEYS)."""
        ...

    def delete_pattern(self, pattern: str) -> int:
        """Delete the keys matching a glob, in batches; how many were deleted."""
        ...

    def count(self, pattern: str = "*") -> int:
        """How many keys match a glob."""
        ...

    def incr(self, key: str, amount: int = 1) -> None:
        """Add to an integer counter (created at 0)."""
        ...

    def counter(self, key: str) -> int:
        """An integer counter's value (0 when missing)."""
        ...

    def used_bytes(self) -> int | None:
        """Memory (Redis) or disk space (disk cache) in use."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...


def encode(value: Any) -> str:
    """`encode_bytes` as text."""
    return encode_bytes(value).decode()


def encode_bytes(value: Any) -> bytes:
    """Compact JSON in UTF-8; NaN and infinities become null so that any program can read it.

    orjson, not the standard library: a `show` value is ~1,700 floats and formatting them
    is most of a pair's cache write (the json module took ~20x as long, enough to slow an
    ingest with Redis by a tenth on its own). Bytes go to Redis as they are: as text, each
    value was copied twice more on its way (~6% of a first ingest's cache work).

    A bytes value is JSON its writer encoded (a `recent` value extended in place: see
    `market._spliced`) and is returned as it is.
    """
    if type(value) is bytes:
        return value
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY, default=_contiguous)


def _contiguous(value: Any) -> Any:
    """What orjson writes instead of a value it cannot: a numpy column that is a strided
    view (of a 2-D array, say) as a contiguous copy. Only those are copied: checking every
    column for it cost more than the copies."""
    import numpy as np  # only here: orjson writes contiguous columns without this

    if isinstance(value, np.ndarray) and not value.flags.c_contiguous:
        return np.ascontiguousarray(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def decode(raw: str | bytes) -> Any:
    """The value `encode` wrote."""
    return orjson.loads(raw)


@dataclass(frozen=True)
class Unreadable:
    """What a read returns for a stored value that is not JSON (another program, or a
    hand, wrote it under the prefix): readers take it for a miss, never for a value."""

    reason: str


def decode_stored(raw: object) -> Any:
    """The value `encode` wrote, or Unreadable when what is stored is not JSON text."""
    if not isinstance(raw, str | bytes):
        return Unreadable(f"a {type(raw).__name__}, not JSON text")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:  # not JSON, or bytes that are not UTF-8
        return Unreadable(f"not JSON ({type(exc).__name__})")


_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


def escape_glob(text: str) -> str:
    """`text` matched literally in a Redis glob (for CACHE_PREFIX in front of a pattern)."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A compiled regex matching exactly what Redis's MATCH glob matches (*, ?, [..], \\x)."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(char))
            else:
                body = pattern[i + 1 : end]
                negate = body.startswith("^")
                body = body[1:] if negate else body
                out.append(
                    f"[{'^' if negate else ''}{re.escape(body).replace(chr(92) + '-', '-')}]"
                )
                i = end + 1
                continue
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)
