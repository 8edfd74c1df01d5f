"""The disk cache backend (diskcache: SQLite plus files), used without Redis or after it fails."""

from __future__ import annotations

import re
import shutil
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import diskcache

from marketdata.cache.base import DELETE_BATCH, decode, decode_stored, encode, glob_regex

# diskcache waits this long for SQLite's lock (several processes share one directory)
SQLITE_TIMEOUT = 1.0
_LEGACY_FILES = ("cache.db", "cache.db-wal", "cache.db-shm")
_VALUE_DIR = re.compile(r"[0-9a-f]{2}")  # diskcache's directories of large values


def drop_legacy(root: Path) -> bool:
    """Remove the disk cache that versions before the per-database directories kept in
    `root` itself (the app's cache directory): nothing reads it any more, and its values
    may be any database's. Only diskcache's own files go (the `db-*` directories and
    anything else stay); True when there was one. Never raises: it costs a warning at most."""
    from loguru import logger

    if not (root / _LEGACY_FILES[0]).is_file():
        return False
    try:
        for name in _LEGACY_FILES:
            (root / name).unlink(missing_ok=True)
        for child in root.iterdir():
            if child.is_dir() and _VALUE_DIR.fullmatch(child.name):
                shutil.rmtree(child)
    except OSError as exc:
        logger.warning("the old disk cache in {} was not removed: {}", root, exc)
        return False
    logger.info("removed the old disk cache in {} (now one directory per database)", root)
    return True


class DiskCache:
    """Values as JSON text in a diskcache directory, keys carrying CACHE_PREFIX as in Redis."""

    name = "disk"
    errors: tuple[type[BaseException], ...] = (OSError, sqlite3.Error, diskcache.Timeout)

    def __init__(self, directory: Path, prefix: str) -> None:
        self.location = str(directory)
        self._prefix = prefix
        self._cache = diskcache.Cache(str(directory), timeout=SQLITE_TIMEOUT)

    def get(self, key: str) -> Any | None:
        """The decoded value (Unreadable when not JSON), or None."""
        raw = self._cache.get(self._prefix + key)
        return None if raw is None else decode_stored(raw)

    def get_many(self, keys: Sequence[str], *, raw: bool = False) -> dict[str, Any]:
        """Present keys with their values (the stored text when `raw`)."""
        found = {}
        for key in keys:
            stored = self._cache.get(self._prefix + key)
            if stored is not None:
                found[key] = stored if raw else decode_stored(stored)
        return found

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store with an expiry."""
        self._cache.set(self._prefix + key, encode(value), expire=ttl)

    def set_many(
        self, values: Mapping[str, Any], ttl: float | None = None, *, drop: Iterable[str] = ()
    ) -> None:
        """Store and delete in one SQLite transaction."""
        with self._cache.transact():
            for key, value in values.items():
                self._cache.set(self._prefix + key, encode(value), expire=ttl)
            for key in drop:
                self._cache.delete(self._prefix + key)

    def scan(self, pattern: str) -> Iterator[str]:
        """Matching unexpired keys (the glob applies after the prefix, as in Redis)."""
        self._cache.expire()
        regex = glob_regex(pattern)
        cut = len(self._prefix)
        for key in list(self._cache.iterkeys()):
            if isinstance(key, str) and key.startswith(self._prefix) and regex.match(key[cut:]):
                yield key[cut:]

    def delete_pattern(self, pattern: str) -> int:
        """Delete the matching keys, DELETE_BATCH per transaction."""
        deleted = 0
        keys = list(self.scan(pattern))
        for first in range(0, len(keys), DELETE_BATCH):
            with self._cache.transact():
                for key in keys[first : first + DELETE_BATCH]:
                    deleted += bool(self._cache.delete(self._prefix + key))
        return deleted

    def count(self, pattern: str = "*") -> int:
        """How many keys match."""
        return sum(1 for _ in self.scan(pattern))

    def incr(self, key: str, amount: int = 1) -> None:
        """Add to a counter stored as JSON text (so `get` reads it like any value)."""
        with self._cache.transact():
            raw = self._cache.get(self._prefix + key)
            self._cache.set(
                self._prefix + key, encode((0 if raw is None else decode(raw)) + amount)
            )

    def counter(self, key: str) -> int:
        """A counter's value."""
        value = self.get(key)
        return 0 if value is None else int(value)

    def used_bytes(self) -> int | None:
        """The directory's size on disk as diskcache estimates it."""
        return int(self._cache.volume())

    def close(self) -> None:
        """Close the SQLite connection."""
        self._cache.close()
