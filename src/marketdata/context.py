"""The application context: settings, database, providers, metrics and clock for one command."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from marketdata.cancel import Cancel
from marketdata.config import LoadedSettings, Settings, load_settings
from marketdata.observability.alerts import Alerts, NullAlerts
from marketdata.observability.metrics import Metrics, NullMetrics

if TYPE_CHECKING:
    from redis import Redis
    from sqlalchemy import Engine

    from marketdata.cache.fallback import FallbackCache, RedisOutage
    from marketdata.providers.base import ProviderContext
    from marketdata.providers.ratelimit import RateLimit, RateLimiter
    from marketdata.storage.engine import Target


def utc_now() -> datetime:
    """The real clock."""
    return datetime.now(UTC)


@dataclass
class AppContext:
    """Built once per command; tests build one pointed at their own services."""

    loaded: LoadedSettings
    clock: Callable[[], datetime] = utc_now
    metrics: Metrics = field(default_factory=NullMetrics)
    alerts: Alerts = field(default_factory=NullAlerts)
    _target: Target | None = None
    _engine: Engine | None = None
    # replaces the rate limiters (tests pass one that never waits, as stamina's testing mode)
    limiter_factory: Callable[[str, RateLimit], RateLimiter] | None = None
    _schema_checked: bool = False
    _redis: Redis[Any] | None = None
    _cache: FallbackCache | None = None
    _redis_outage: RedisOutage | None = None
    # set by SIGTERM/SIGINT while a run watches it; every wait of the run observes it
    cancel: Cancel = field(default_factory=Cancel)
    # worker threads ask for the cache (and the Redis outage it reports to) at once: each is
    # built once per command under this lock, or every thread would build (and warn) its own
    _shared: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @classmethod
    def from_settings(
        cls,
        flags: Mapping[str, object] | None = None,
        *,
        env_file: Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> AppContext:
        """Load settings (flags > env > env file > defaults) and pick the metrics sink."""
        loaded = load_settings(flags, env_file=env_file, environ=environ)
        return cls(
            loaded, metrics=build_metrics(loaded.settings), alerts=build_alerts(loaded.settings)
        )

    @property
    def settings(self) -> Settings:
        """The validated settings."""
        return self.loaded.settings

    @property
    def target(self) -> Target:
        """Which database, resolved from DATABASE_URL (ConfigError when malformed)."""
        if self._target is None:
            from marketdata.storage.engine import resolve_target

            self._target = resolve_target(self.settings)
        return self._target

    def engine(self, *, migrate: bool = True) -> Engine:
        """The engine; on first use the schema is checked (the embedded file is migrated)."""
        if self._engine is None:
            from marketdata.storage.engine import create_engine

            self._engine = create_engine(self.settings, self.target)
        if migrate and not self._schema_checked:
            from marketdata.storage.migrate import ensure_schema

            ensure_schema(self._engine, self.target)
            self._schema_checked = True
        return self._engine

    @property
    def redis_outage(self) -> RedisOutage:
        """Reports the first Redis failure of this command, for the cache and the limiters."""
        with self._shared:
            if self._redis_outage is None:
                from marketdata.cache.fallback import RedisOutage

                self._redis_outage = RedisOutage(self.metrics, self.alerts)
            return self._redis_outage

    @property
    def cache(self) -> FallbackCache:
        """The cache: Redis (REDIS_URL), falling back to the disk cache, opened on first use."""
        with self._shared:
            if self._cache is None:
                from marketdata.cache.fallback import build_cache

                self._cache = build_cache(
                    self.settings, self.target.url, self.redis_outage, self.metrics
                )
            return self._cache

    def database_exists(self) -> bool:
        """False only for an embedded SQLite file not created yet (dry runs must not make it)."""
        target = self.target
        if target.dialect != "sqlite" or not target.url.database:
            return True
        return Path(target.url.database).exists()

    def lock_dir(self) -> Path | None:
        """Where SQLite pair locks live (beside the database file)."""
        database = self.target.url.database
        if self.target.dialect != "sqlite" or not database:
            return None
        return Path(database + ".locks")

    def provider_context(
        self,
        overrides: Mapping[str, Mapping[str, str]],
        calendars: Mapping[str, str] | None = None,
    ) -> ProviderContext:
        """A provider context sharing this command's metrics, with a fresh HTTP client."""
        from marketdata.providers.base import ProviderContext

        return ProviderContext(
            self.settings,
            metrics=self.metrics,
            symbol_overrides=overrides,
            calendars=calendars or {},
            limiter_factory=self._limiter_factory(),
            cancel=self.cancel,
            clock=lambda: self.clock().timestamp(),
        )

    def _limiter_factory(self) -> Callable[[str, RateLimit], RateLimiter]:
        from marketdata.providers.ratelimit import LocalRateLimiter

        if self.limiter_factory is not None:
            return self.limiter_factory
        sleep = self.cancel.sleep  # a limiter's wait ends when the run is asked to stop
        if not self.settings.redis_url:
            return lambda _provider, limit: LocalRateLimiter(limit, sleep=sleep)
        from marketdata.cache.redis_backend import redis_client
        from marketdata.providers.redis_ratelimit import redis_limiter_factory

        with self._shared:
            if self._redis is None:
                # short timeouts, no retries: a slow Redis must not slow requests; the limiter
                # degrades (once, with the cache: one RedisOutage per command)
                self._redis = redis_client(self.settings.redis_url)
        outage = self.redis_outage
        shared = redis_limiter_factory(
            self._redis,
            f"{self.settings.cache_prefix}marketdata:ratelimit:",
            sleep=sleep,
            redis_down=outage.event,
            on_error=outage.report,
        )

        def build(provider: str, limit: RateLimit) -> RateLimiter:
            if limit.shared:
                return shared(provider, limit)
            return LocalRateLimiter(limit, sleep=sleep)

        return build

    def close(self) -> None:
        """Release the engine's connections, the Redis client, and the alert and metrics
        sinks (queued alerts are delivered first, within their deadline)."""
        if self._cache is not None:  # first: its refresher still reads the database
            self._cache.close()
            self._cache = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        if self._redis is not None:
            self._redis.close()
            self._redis = None
        for sink in (self.alerts, self.metrics):  # alerts first: queued ones are delivered
            close_sink = getattr(sink, "close", None)
            if close_sink is not None:
                close_sink()


def build_metrics(settings: Settings) -> Metrics:
    """statsd when STATSD_HOST is set; metrics must never stop a run, so errors fall back."""
    if not settings.statsd_host:
        return NullMetrics()
    from marketdata.observability.metrics import StatsdMetrics

    try:
        return StatsdMetrics(settings.statsd_host, settings.statsd_port, settings.statsd_prefix)
    except OSError:
        from loguru import logger

        logger.warning("STATSD_HOST {} cannot be resolved; metrics are off", settings.statsd_host)
        return NullMetrics()


def build_alerts(settings: Settings) -> Alerts:
    """A webhook sink when ALERT_WEBHOOK_URL is set, filtered by ALERT_MIN_SEVERITY."""
    if not settings.alert_webhook_url:
        return NullAlerts()
    from marketdata.observability.alerts import WebhookAlerts

    return WebhookAlerts(
        settings.alert_webhook_url, settings.alert_min_severity, ca_bundle=settings.http_ca_bundle
    )
