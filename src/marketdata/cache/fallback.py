"""The cache a command uses: Redis when configured, the disk cache when Redis fails, else none.

Failures are decided once per run: the first Redis error logs ONE warning starting with
`Redis client error:`, counts `cache.fallback`, sends a warning alert, and every later call
goes to the disk cache without trying Redis again. A disk cache that cannot be used either
gives one more warning, and the run goes on uncached. A cache never fails a command.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from loguru import logger

from marketdata.cache.base import Cache, CacheStats

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

    from marketdata.cache.refresher import Refresher
    from marketdata.config import Settings
    from marketdata.observability.alerts import Alerts
    from marketdata.observability.metrics import Metrics

T = TypeVar("T")

CONSEQUENCE = (
    "carrying on without Redis for the rest of this run: the disk cache instead, provider "
    "rate limits kept in this process (`marketdata cache rebuild` once Redis is back)"
)
HITS = "stats:hits"
MISSES = "stats:misses"
FALLBACKS = "stats:fallbacks"


class RedisOutage:
    """Reports that Redis failed, once per command, for every user of Redis (cache, limiter)."""

    def __init__(self, metrics: Metrics, alerts: Alerts) -> None:
        self._metrics = metrics
        self._alerts = alerts
        self._lock = threading.Lock()
        self.cause: str | None = None
        # set on the first failure: the rate limiters stop asking Redis too
        self.event = threading.Event()

    @property
    def down(self) -> bool:
        """True once a Redis failure was reported."""
        return self.event.is_set()

    def report(self, exc: BaseException) -> bool:
        """Log, count and alert the first failure; True only for that first one."""
        from marketdata.observability.alerts import Alert
        from marketdata.redact import scrub

        with self._lock:
            if self.cause is not None:
                return False
            self.cause = scrub(describe(exc))
            self.event.set()
        message = f"Redis client error: {self.cause}; {CONSEQUENCE}"
        logger.warning("{}", message)
        self._metrics.incr("cache.fallback")
        self._alerts.send(Alert("warning", "Redis unavailable", message))
        return True


def describe(exc: BaseException) -> str:
    """The cause in a few words: the exception's kind and its first line (without the
    pipelined command redis-py puts in front, which would quote a cached value)."""
    import re

    lines = str(exc).strip().splitlines()
    text = re.sub(
        r"^Command # \d+ \(.*?\) of pipeline caused error: ", "", lines[0] if lines else ""
    )
    kind = type(exc).__name__
    return f"{kind}: {text}" if text else kind


class NoCache:
    """Nothing cached: reads miss, writes vanish (the disk cache could not be used)."""

    name = "none"
    location = ""
    errors: tuple[type[BaseException], ...] = ()

    def get(self, key: str) -> Any | None:
        """Always a miss."""
        return None

    def get_many(self, keys: Sequence[str], *, raw: bool = False) -> dict[str, Any]:
        """Always misses."""
        return {}

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Nothing is kept."""

    def set_many(
        self, values: Mapping[str, Any], ttl: float | None = None, *, drop: Iterable[str] = ()
    ) -> None:
        """Nothing is kept."""

    def scan(self, pattern: str) -> Iterator[str]:
        """No keys."""
        return iter(())

    def delete_pattern(self, pattern: str) -> int:
        """Nothing to delete."""
        return 0

    def count(self, pattern: str = "*") -> int:
        """No keys."""
        return 0

    def incr(self, key: str, amount: int = 1) -> None:
        """Not counted."""

    def counter(self, key: str) -> int:
        """Zero."""
        return 0

    def used_bytes(self) -> int | None:
        """Nothing in use."""
        return None

    def close(self) -> None:
        """Nothing to release."""


class FallbackCache:
    """Redis (when configured), then the disk cache, then nothing: see the module docstring.

    Also counts hits and misses (statsd `cache.hit` / `cache.miss` at once, the stored
    counters `cache stats` reports when the command closes the cache).
    """

    def __init__(
        self,
        primary: Callable[[], Cache] | None,
        disk: Callable[[], Cache],
        outage: RedisOutage,
        metrics: Metrics,
        database: str = "",
    ) -> None:
        self.database = database
        """Which database the values belong to (`database_id`): readers skip any other's."""
        self._primary = primary
        self._disk = disk
        self._outage = outage
        self._metrics = metrics
        self._lock = threading.Lock()
        self._active: Cache | None = None
        self._hits = 0
        self._misses = 0
        self._warned: set[str] = set()
        self._refresher: Refresher | None = None

    @property
    def backend(self) -> Cache:
        """The backend in use now (opening it on first use)."""
        with self._lock:
            if self._active is None:
                self._active = self._open_first()
            return self._active

    def _open_first(self) -> Cache:
        if self._primary is not None and not self._outage.down:
            try:
                return self._primary()
            except Exception as exc:  # noqa: BLE001 - any failure to build the client: degrade
                self._to_disk(exc)
        return self._open_disk()

    def _open_disk(self) -> Cache:
        import diskcache

        from marketdata.cache.disk import DiskCache

        try:
            return self._disk()
        except (OSError, diskcache.Timeout, *DiskCache.errors) as exc:
            self._to_nothing(exc)
            return NoCache()

    def _to_disk(self, exc: BaseException) -> None:
        if self._outage.report(exc):
            try:
                self._disk_count(FALLBACKS)
            except Exception as count_exc:  # noqa: BLE001 - a count must not stop a run
                logger.debug("fallback not counted: {}", count_exc)

    def _disk_count(self, key: str) -> None:
        disk = self._disk()
        try:
            disk.incr(key)
        finally:
            disk.close()

    def _to_nothing(self, exc: BaseException) -> None:
        from marketdata.redact import scrub

        logger.warning(
            "disk cache unusable: {}; running uncached (set CACHE_DIR to a writable directory)",
            scrub(describe(exc)),
        )

    def _call(self, op: Callable[[Cache], T]) -> T:
        """Run `op` on the active backend; on that backend's error, degrade and run it again."""
        while True:
            backend = self.backend
            try:
                return op(backend)
            except backend.errors as exc:
                self._degrade(backend, exc)

    def _degrade(self, failed: Cache, exc: BaseException) -> None:
        with self._lock:
            if self._active is not failed:
                return  # another thread degraded already
            self._active = None
        _close_quietly(failed)
        if failed.name == "redis":
            self._to_disk(exc)
            opened = self._open_disk()
        else:
            self._to_nothing(exc)
            opened = NoCache()
        with self._lock:
            if self._active is None:
                self._active = opened
            elif opened is not self._active:
                _close_quietly(opened)

    # ------------------------------------------------------------------------- the interface

    @property
    def name(self) -> str:
        """The active backend's name."""
        return self.backend.name

    def get(self, key: str) -> Any | None:
        """A value, counting a hit or a miss."""
        value = self._call(lambda c: c.get(key))
        self.count_read(value is not None)
        return value

    def get_many(self, keys: Sequence[str], *, raw: bool = False) -> dict[str, Any]:
        """Present keys (not counted: the caller decides what makes an answer); their stored
        bytes or text, not decoded, when `raw`."""
        return self._call(lambda c: c.get_many(keys, raw=raw))

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store a value."""
        self._call(lambda c: c.set(key, value, ttl))

    def set_many(
        self, values: Mapping[str, Any], ttl: float | None = None, *, drop: Iterable[str] = ()
    ) -> None:
        """Store several values and drop keys in one round trip."""
        dropped = list(drop)
        self._call(lambda c: c.set_many(values, ttl, drop=dropped))

    def scan(self, pattern: str) -> list[str]:
        """The matching keys."""
        return self._call(lambda c: list(c.scan(pattern)))

    def delete_pattern(self, pattern: str) -> int:
        """Delete matching keys."""
        return self._call(lambda c: c.delete_pattern(pattern))

    def count(self, pattern: str = "*") -> int:
        """Count matching keys."""
        return self._call(lambda c: c.count(pattern))

    def count_read(self, hit: bool) -> None:
        """Count one answer from (or not from) the cache."""
        self._metrics.incr("cache.hit" if hit else "cache.miss")
        with self._lock:
            if hit:
                self._hits += 1
            else:
                self._misses += 1

    def refresher(self, build: Callable[[], Refresher]) -> Refresher:
        """The background refresher of committed pairs' keys (built on first use)."""
        with self._lock:
            if self._refresher is None:
                self._refresher = build()
            return self._refresher

    def drain(self, *, abandon: bool = False) -> None:
        """Wait for the background refresher's queued pairs (see `Refresher.drain`)."""
        with self._lock:
            refresher = self._refresher
        if refresher is not None:
            refresher.drain(abandon=abandon)

    def warn_once(self, topic: str, message: str) -> None:
        """Log `message` as a warning the first time `topic` comes up in this command only
        (a reader meeting many unusable values says so once, not per key)."""
        with self._lock:
            if topic in self._warned:
                return
            self._warned.add(topic)
        logger.warning("{}", message)

    def stats(self, kinds: Callable[[Iterable[str]], dict[str, int]]) -> CacheStats:
        """Backend, keys by kind (`kinds` classifies the market keys), counters, space used."""
        self.flush()
        backend = self.backend
        keys = self._call(lambda c: kinds(c.scan("market:*")))
        backend = self.backend
        fallbacks = 0
        try:
            disk = self._disk()
            try:
                fallbacks = disk.counter(FALLBACKS)
            finally:
                disk.close()
        except Exception as exc:  # noqa: BLE001 - no disk cache: no fallbacks recorded
            logger.debug("no fallback count: {}", exc)
        return CacheStats(
            backend=backend.name,
            location=backend.location,
            keys=keys,
            hits=self._call(lambda c: c.counter(HITS)),
            misses=self._call(lambda c: c.counter(MISSES)),
            fallbacks=fallbacks,
            used_bytes=self._call(lambda c: c.used_bytes()),
        )

    def flush(self) -> None:
        """Add this command's hits and misses to the stored counters."""
        with self._lock:
            hits, misses = self._hits, self._misses
            self._hits = self._misses = 0
        if hits:
            self._call(lambda c: c.incr(HITS, hits))
        if misses:
            self._call(lambda c: c.incr(MISSES, misses))

    def close(self) -> None:
        """Write what the refresher still holds, flush the counters, release the backend."""
        self.drain()
        if self._active is None and not (self._hits or self._misses):
            return
        self.flush()
        with self._lock:
            active, self._active = self._active, None
        if active is not None:
            _close_quietly(active)


def _close_quietly(cache: Cache) -> None:
    try:
        cache.close()
    except Exception as exc:  # noqa: BLE001 - closing a broken backend must not raise
        logger.debug("closing the {} cache: {}", cache.name, exc)


def database_id(url: URL) -> str:
    """Which database cached values come from: a hash of its URL without the password
    (the absolute path of a SQLite file), so that values of one database are never served
    for another. Spellings of one URL that name the same server agree (driver, host case,
    the default port); anything else that differs makes another id, which costs misses only.
    """
    import hashlib

    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        where = database if database in ("", ":memory:") else str(Path(database).resolve())
        ident = f"sqlite:{where}"
    else:
        ident = url.set(
            drivername=url.get_backend_name(),
            host=(url.host or "localhost").lower(),
            port=url.port or 5432,
        ).render_as_string(hide_password=True)  # any password renders as ***
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def cache_dir(settings: Settings, database: str) -> Path:
    """Where the disk cache lives: CACHE_DIR, else a directory of the database's own under
    the app's cache directory (two databases on one host never share a default disk cache)."""
    from marketdata.config import app_dir

    return settings.cache_dir or app_dir("cache") / f"db-{database}"


def build_cache(
    settings: Settings, url: URL, outage: RedisOutage, metrics: Metrics
) -> FallbackCache:
    """The cache for one command on the database at `url`, from REDIS_URL, CACHE_DIR and
    CACHE_PREFIX (opened lazily)."""
    from marketdata.cache.disk import DiskCache, drop_legacy

    prefix = settings.cache_prefix
    database = database_id(url)
    directory = cache_dir(settings, database)

    def disk() -> Cache:
        if settings.cache_dir is None:  # the default directory: the old shared one goes
            drop_legacy(directory.parent)
        return DiskCache(directory, prefix)

    primary: Callable[[], Cache] | None = None
    redis_url = settings.redis_url
    if redis_url:

        def primary() -> Cache:
            from marketdata.cache.redis_backend import RedisCache, redis_client
            from marketdata.redact import mask_url

            return RedisCache(redis_client(redis_url), prefix, mask_url(redis_url))

    return FallbackCache(primary, disk, outage, metrics, database)
