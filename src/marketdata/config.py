"""Settings: flags > environment > env file > defaults, validated once, secrets masked.

This is the only module that reads `os.environ`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, FilePath, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from marketdata.errors import ConfigError, InputError
from marketdata.observability.logfile import DEFAULT_RETENTION, DEFAULT_ROTATION
from marketdata.redact import mask_url, register_secret, url_secrets

SYSTEM_ENV_FILE = Path("/etc/marketdata/marketdata.env")
LOCAL_ENV_FILE = Path(".env")

CommaList = Annotated[list[str], NoDecode]
Severity = Literal["info", "warning", "error", "critical"]

# Settings whose whole value, or part of it, is a secret; shown masked everywhere.
_URL_WITH_PASSWORD = ("database_url", "redis_url")
_URL_WITH_TOKEN = ("alert_webhook_url",)
PROVIDER_NAMES = ("coinbase", "kraken", "binance", "coingecko", "yahoo", "stooq")
# RETENTION_<INTERVAL>, one per interval of domain.Interval (a test keeps them in step)
RETENTION_SETTINGS = tuple(f"retention_{i}" for i in ("1m", "5m", "15m", "1h", "6h", "1d"))


class Settings(BaseSettings):
    """Every setting of the tool; names match the environment variables (upper-cased)."""

    model_config = SettingsConfigDict(
        case_sensitive=False, extra="ignore", env_file_encoding="utf-8", validate_default=True
    )

    database_url: str | None = None
    redis_url: str | None = None
    ingestion_provider: CommaList = Field(default_factory=lambda: ["coinbase"])
    ingestion_symbols: CommaList = Field(default_factory=list)
    ingestion_lookback_days: int = Field(default=90, ge=1, le=36_500)
    ingestion_cron_expression: str = "*/15 * * * *"
    ingestion_concurrency: int = Field(default=4, ge=1, le=64)
    ingestion_batch_size: int = Field(default=100, ge=1, le=100_000)
    ingestion_disabled_symbols: CommaList = Field(default_factory=list)
    analytics_intervals: CommaList = Field(default_factory=lambda: ["1h", "1d"])
    cache_dir: Path | None = None
    cache_prefix: str = ""
    cache_bars: int = Field(default=50, ge=1, le=1_000)
    alert_webhook_url: str | None = None
    alert_min_severity: Severity = "warning"
    alert_stale_after: str = "2h"
    statsd_host: str | None = None
    statsd_port: int = Field(default=8125, ge=1, le=65_535)
    statsd_prefix: str = "marketdata"
    log_level: Literal["TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    log_file: Path | None = None
    log_rotation: str = DEFAULT_ROTATION
    log_retention: str = DEFAULT_RETENTION
    coinbase_base_url: str = "https://api.exchange.coinbase.com"
    kraken_base_url: str = "https://api.kraken.com"
    binance_base_url: str = "https://api.binance.com"
    coingecko_base_url: str = "https://api.coingecko.com/api/v3"
    yahoo_base_url: str = "https://query1.finance.yahoo.com"
    stooq_base_url: str = "https://stooq.com"
    coingecko_api_key: SecretStr | None = None
    stooq_api_key: SecretStr | None = None
    http_timeout: float = Field(default=10.0, gt=0, le=300)
    http_retry_attempts: int = Field(default=4, ge=1, le=20)
    http_retry_wait_max: float = Field(default=8.0, ge=0, le=300)
    # CA certificates (PEM) to trust for HTTPS instead of the default store; verification
    # itself cannot be turned off (tls.py)
    http_ca_bundle: FilePath | None = None
    db_connect_timeout: int = Field(default=5, ge=1, le=120)
    # Server-side limits on PostgreSQL, in seconds (0 turns one off); migrations lift the
    # statement timeout, since a data migration may rewrite a big table.
    db_statement_timeout: float = Field(default=300.0, ge=0, le=86_400)
    db_lock_timeout: float = Field(default=30.0, ge=0, le=86_400)
    db_idle_in_transaction_timeout: float = Field(default=300.0, ge=0, le=86_400)
    # TCP keepalive on PostgreSQL connections: a dead peer is noticed after idle + 3 x 10 s
    db_keepalives_idle: int = Field(default=30, ge=1, le=7_200)
    # How long an SQLite writer waits for another process's write lock
    db_busy_timeout: float = Field(default=30.0, gt=0, le=3_600)
    # how long candles of each interval are kept (90d, 2w ...); unset: forever
    retention_1m: str | None = None
    retention_5m: str | None = None
    retention_15m: str | None = None
    retention_1h: str | None = None
    retention_6h: str | None = None
    retention_1d: str | None = None
    synthetic_latency_ms: int = Field(default=0, ge=0, le=60_000)
    worker_heartbeat_seconds: float = Field(default=10.0, gt=0, le=3_600)
    worker_stall_seconds: float = Field(default=60.0, gt=0, le=86_400)
    worker_retry_attempts: int = Field(default=3, ge=0, le=100)
    worker_retry_backoff: int = Field(default=5, ge=0, le=3_600)
    worker_keep_hours: int = Field(default=24, ge=1, le=8_760)

    @field_validator(
        "ingestion_provider",
        "ingestion_symbols",
        "ingestion_disabled_symbols",
        "analytics_intervals",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator(
        "alert_stale_after",
        *RETENTION_SETTINGS,
    )
    @classmethod
    def _a_duration(cls, value: str | None) -> str | None:
        from marketdata.domain import parse_duration

        if value is None:
            return None
        try:
            parse_duration(value)
        except InputError as exc:
            raise ValueError(exc.hint) from None
        return value

    def retention(self, interval: str) -> int | None:
        """RETENTION_<INTERVAL> in seconds (e.g. RETENTION_1M=90d), None when unset: the
        candles of that interval older than this are pruned by `marketdata db prune`."""
        from marketdata.domain import parse_duration

        raw = getattr(self, f"retention_{interval}")
        if raw is None:
            return None
        return parse_duration(raw, name=f"RETENTION_{interval.upper()}")

    @property
    def stale_after_seconds(self) -> int:
        """ALERT_STALE_AFTER in seconds."""
        from marketdata.domain import parse_duration

        return parse_duration(self.alert_stale_after, name="ALERT_STALE_AFTER")

    @field_validator("alert_webhook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        from marketdata.observability.alerts import check_webhook_url

        return None if value is None else check_webhook_url(value)

    @field_validator("log_rotation")
    @classmethod
    def _a_rotation(cls, value: str) -> str:
        from marketdata.observability.logfile import parse_rotation

        parse_rotation(value)
        return value

    @field_validator("log_retention")
    @classmethod
    def _a_retention(cls, value: str) -> str:
        from marketdata.observability.logfile import parse_retention

        parse_retention(value)
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", "alert_min_severity", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator(
        "database_url",
        "redis_url",
        "alert_webhook_url",
        "statsd_host",
        *RETENTION_SETTINGS,
        mode="before",
    )
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    def base_url(self, provider: str) -> str:
        """The base URL configured for an HTTP provider."""
        return str(getattr(self, f"{provider}_base_url")).rstrip("/")

    def api_key(self, provider: str) -> str | None:
        """The API key configured for a provider, if any."""
        secret = getattr(self, f"{provider}_api_key", None)
        return secret.get_secret_value() if secret else None

    def masked(self, name: str) -> str:
        """The value of one setting as it may be shown to people (secrets masked)."""
        value = getattr(self, name)
        if value is None:
            return ""
        if isinstance(value, SecretStr):
            return "***"
        if name in _URL_WITH_PASSWORD or name.endswith("_base_url"):
            return mask_url(str(value))
        if name in _URL_WITH_TOKEN:
            return mask_url(str(value), hide_path=True)
        if isinstance(value, list):
            return ",".join(value)
        return str(value)

    def register_secrets(self) -> None:
        """Teach the scrubber every secret these settings hold."""
        for name in (*_URL_WITH_PASSWORD, *(f"{p}_base_url" for p in PROVIDER_NAMES)):
            for secret in url_secrets(getattr(self, name)):
                register_secret(secret)
        for secret in url_secrets(self.alert_webhook_url, path_is_secret=True):
            register_secret(secret)
        for provider in PROVIDER_NAMES:
            register_secret(self.api_key(provider))


@dataclass(frozen=True)
class LoadedSettings:
    """Settings together with where each value came from (flag, env, a file, default)."""

    settings: Settings
    sources: Mapping[str, str]
    env_files: tuple[Path, ...]
    # things to tell the operator once logging is set up (an env file others can read ...)
    warnings: tuple[str, ...] = ()


def default_env_files(explicit: Path | None) -> tuple[Path, ...]:
    """The env files to read: the explicit one, else /etc/... and ./.env where they exist."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"--env-file {explicit} does not exist or is not a file")
        return (explicit,)
    return tuple(p for p in (SYSTEM_ENV_FILE, LOCAL_ENV_FILE) if p.is_file())


def load_settings(
    flags: Mapping[str, Any] | None = None,
    *,
    env_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> LoadedSettings:
    """Load and validate settings; raise ConfigError naming the bad variable (masked).

    Args:
        flags: values given on the command line, by setting name; None values are ignored.
        env_file: an explicit env file (replaces the default ones).
        environ: the environment to read instead of `os.environ` (tests).
    """
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    environ = os.environ if environ is None else environ
    files = default_env_files(env_file)
    if env_file is None and environ.get("INVOCATION_ID"):
        files = _readable_under_systemd(files)
    file_values = _read_env_files(files)
    env_values = {
        name: environ[name.upper()] for name in Settings.model_fields if name.upper() in environ
    }
    defaults = _directory_defaults(environ)
    merged: dict[str, Any] = {**defaults, **file_values, **env_values, **flags}
    try:
        # Settings is given every value explicitly so that `environ` (not os.environ) counts.
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        raise _config_error(exc, merged) from None
    settings.register_secrets()
    sources = {}
    for name in Settings.model_fields:
        if name in flags:
            sources[name] = "flag"
        elif name in env_values:
            sources[name] = "env"
        elif name in file_values:
            sources[name] = f"file {file_values.source_of(name)}"
        elif name in defaults:
            sources[name] = "default (systemd)"
        else:
            sources[name] = "default"
    return LoadedSettings(settings, sources, files, _exposed_secrets(file_values, settings))


def _exposed_secrets(file_values: _FileValues, settings: Settings) -> tuple[str, ...]:
    """A warning per env file that holds a secret and that every user may read."""
    import stat

    holding: dict[Path, list[str]] = {}
    for name, path in file_values.origin.items():
        if _is_secret(name, settings):
            holding.setdefault(path, []).append(name.upper())
    warnings = []
    for path, names in holding.items():
        try:
            mode = path.stat().st_mode
        except OSError:
            continue
        if mode & stat.S_IROTH:
            warnings.append(
                f"env file {path} holds secrets ({', '.join(sorted(names))}) and every user "
                f"can read it: run `chmod o-r {path}` (0600 or 0640 suits it)"
            )
    return tuple(warnings)


def _is_secret(name: str, settings: Settings) -> bool:
    """True when this setting's value is, or contains, a secret."""
    if name.endswith("_api_key") or name in _URL_WITH_TOKEN:
        return getattr(settings, name) is not None
    if name in _URL_WITH_PASSWORD or name.endswith("_base_url"):
        return bool(url_secrets(getattr(settings, name)))
    return False


class _FileValues(dict[str, str]):
    def __init__(self) -> None:
        super().__init__()
        self.origin: dict[str, Path] = {}

    def source_of(self, name: str) -> str:
        return str(self.origin[name])


def _readable_under_systemd(files: tuple[Path, ...]) -> tuple[Path, ...]:
    """Leave out a system env file the service cannot read: the unit's EnvironmentFile= was
    read by systemd before it dropped privileges, so its values are in the environment."""
    return tuple(p for p in files if p != SYSTEM_ENV_FILE or os.access(p, os.R_OK))


def _read_env_files(files: tuple[Path, ...]) -> _FileValues:
    from dotenv import dotenv_values

    values = _FileValues()
    for path in files:  # later files win, like the environment over all of them
        try:
            parsed = dotenv_values(path)
        except OSError as exc:
            raise ConfigError(f"cannot read env file {path}: {exc.strerror}") from None
        for key, value in parsed.items():
            name = key.lower()
            if name in Settings.model_fields and value is not None:
                values[name] = value
                values.origin[name] = path
    return values


def _config_error(exc: ValidationError, given: Mapping[str, Any]) -> ConfigError:
    first = exc.errors()[0]
    name = str(first["loc"][0]) if first["loc"] else "?"
    shown = given.get(name)
    if name in _URL_WITH_PASSWORD or name.endswith("_base_url"):
        shown = mask_url(str(shown))
    elif name in _URL_WITH_TOKEN:
        shown = mask_url(str(shown), hide_path=True)
    elif name.endswith("_api_key"):
        shown = "***"
    return ConfigError(f"{name.upper()}={shown!s} is invalid: {first['msg']}")


AppDir = Literal["state", "cache", "logs"]
# The variables systemd sets for StateDirectory=, CacheDirectory= and LogsDirectory= (v240+).
_SYSTEMD_DIRS: dict[AppDir, str] = {
    "state": "STATE_DIRECTORY",
    "cache": "CACHE_DIRECTORY",
    "logs": "LOGS_DIRECTORY",
}


def app_dir(kind: AppDir, environ: Mapping[str, str] | None = None) -> Path:
    """The directory for the tool's state (the embedded SQLite file), cache or log files.

    Under systemd it is the one the unit's StateDirectory=, CacheDirectory= or LogsDirectory=
    made ($STATE_DIRECTORY, $CACHE_DIRECTORY, $LOGS_DIRECTORY; the first when a unit lists
    several); elsewhere the user's data, cache and log directories. A dynamic user's home is
    `/`, so the home-directory paths would not be writable inside the sandbox. A setting that
    names a path wins over this default (the disk cache: CACHE_DIR, else a directory per database
    under `app_dir("cache")`).
    """
    environ = os.environ if environ is None else environ
    given = environ.get(_SYSTEMD_DIRS[kind], "").split(":")[0]
    if given:
        return Path(given)
    import platformdirs

    dirs = platformdirs.PlatformDirs("marketdata", appauthor=False)
    if kind == "state":
        return dirs.user_data_path
    return dirs.user_cache_path if kind == "cache" else dirs.user_log_path


def _directory_defaults(environ: Mapping[str, str]) -> dict[str, Any]:
    """Defaults that depend on systemd's directories: a JSON log file in $LOGS_DIRECTORY."""
    if environ.get(_SYSTEMD_DIRS["logs"]):
        return {"log_file": app_dir("logs", environ) / "marketdata.log"}
    return {}


def systemd_invocation() -> bool:
    """True when started by systemd (a timer or service), for the run's trigger."""
    return bool(os.environ.get("INVOCATION_ID"))


def environment_with(settings: Mapping[str, str]) -> dict[str, str]:
    """This process's environment plus settings given by name (for a child process)."""
    return {**os.environ, **{name.upper(): value for name, value in settings.items()}}


def systemd_monitor() -> dict[str, str]:
    """What systemd tells an OnFailure= handler about the unit that failed ($MONITOR_*)."""
    return {k: v for k, v in os.environ.items() if k.startswith("MONITOR_")}


def stderr_is_journal() -> bool:
    """True when stderr is connected to journald (systemd's JOURNAL_STREAM matches fd 2)."""
    import sys

    value = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in value.split(":", 1))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)
