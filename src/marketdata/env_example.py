"""The example env file: every setting with its meaning, allowed values and default.

Generated from the Settings model, so a new setting cannot be left out: `DESCRIPTIONS` must
name every field (a test checks), and deploy/marketdata.env.example must equal the output.
"""

from __future__ import annotations

from typing import Any, Literal, get_args, get_origin

import annotated_types
from pydantic import SecretStr

from marketdata.config import SYSTEM_ENV_FILE, Settings

# What each setting means; the default and the allowed values come from the model.
DESCRIPTIONS: dict[str, str] = {
    "database_url": "postgresql://user:password@host:5432/dbname (also postgres://) or "
    "sqlite:///path/file.sqlite3. Unset: the embedded SQLite file in $STATE_DIRECTORY under "
    "systemd, else in the user's data directory.",
    "redis_url": "Redis, e.g. redis://:password@127.0.0.1:6379/0: the cache of market values "
    "and each provider's rate budget, shared between processes. Unset: the disk cache.",
    "ingestion_provider": "A provider, or a fallback chain such as coinbase,kraken.",
    "ingestion_symbols": "Symbols to ingest when --symbols is not given (comma-separated); "
    "unset: every enabled market.",
    "ingestion_lookback_days": "Days of history a new market starts with; replay's window.",
    "ingestion_cron_expression": "The ingestion schedule (five cron fields or @hourly, "
    "@daily, ...): `marketdata schedule render` turns it into the timer's OnCalendar=, and "
    "`marketdata schedule run` fires on it.",
    "ingestion_concurrency": "Pairs fetched at once.",
    "ingestion_batch_size": "Pairs per group, so memory stays flat on big universes.",
    "ingestion_disabled_symbols": "Symbols skipped with a note (comma-separated).",
    "analytics_intervals": "Intervals whose indicators are stored (comma-separated).",
    "cache_dir": "The disk cache's directory (the cache without Redis, or after Redis failed). "
    "Unset: a directory per database under $CACHE_DIRECTORY under systemd, else under the "
    "user's cache directory.",
    "cache_prefix": "Prefix of every Redis key the tool writes: one per database sharing a Redis.",
    "cache_bars": "Candles cached per (symbol, interval): `show --last` up to this and "
    "`compare --window` up to one less answer without the database. Each candle costs every "
    "pair's cache write and Redis memory (~260 bytes of JSON).",
    "alert_webhook_url": "Webhook that receives alerts as JSON (its path is a secret).",
    "alert_min_severity": "Alerts below this severity are not sent.",
    "alert_stale_after": "A market is stale (an error alert after each run, `marketdata "
    "status` exits 1) when a bar its calendar expects has been missing this long (90m, 2h, 1d).",
    "statsd_host": "statsd server; unset: no metrics are sent.",
    "statsd_port": "statsd UDP port.",
    "statsd_prefix": "Prefix of every metric name.",
    "log_level": "Log level on stderr.",
    "log_format": "Log lines as text or JSON.",
    "log_file": "Also write JSON log lines to this file. Unset: $LOGS_DIRECTORY/marketdata.log "
    "under systemd, else no file.",
    "log_rotation": "When LOG_FILE is rotated: a size (10 MB, 500 KB, 1 GB) or a period "
    "(1d: at 00:00 UTC, 1h, 1w).",
    "log_retention": "Rotated log files kept: a number of files (10 files) or an age (14d).",
    "coinbase_base_url": "Coinbase Exchange API (for proxies, mirrors and tests).",
    "kraken_base_url": "Kraken API.",
    "binance_base_url": "Binance API.",
    "coingecko_base_url": "CoinGecko API.",
    "yahoo_base_url": "Yahoo chart API.",
    "stooq_base_url": "Stooq.",
    "coingecko_api_key": "CoinGecko API key (optional; a secret).",
    "stooq_api_key": "Stooq API key (required by stooq; a secret).",
    "http_timeout": "Seconds before an HTTP request to a provider times out.",
    "http_retry_attempts": "Attempts per request on timeouts, 5xx and 429.",
    "http_retry_wait_max": "Longest wait between two attempts, in seconds.",
    "http_ca_bundle": "PEM file of CA certificates to trust for HTTPS (providers, webhook) "
    "instead of the default store; certificates are always verified.",
    "db_connect_timeout": "Seconds before an unreachable database server is reported.",
    "db_statement_timeout": "PostgreSQL: seconds one statement may run before the server "
    "cancels it (a transient error); 0: no limit. Migrations are not limited.",
    "db_lock_timeout": "PostgreSQL: seconds a statement waits for a row or table lock before "
    "giving up (a transient error); 0: no limit.",
    "db_idle_in_transaction_timeout": "PostgreSQL: seconds a session may sit idle inside a "
    "transaction before the server ends it (a stuck process cannot hold locks); 0: no limit.",
    "db_keepalives_idle": "PostgreSQL: seconds of silence before TCP keepalives probe the "
    "server (3 probes 10 s apart), so a dead server or network is noticed.",
    "db_busy_timeout": "SQLite: seconds a writer waits for another process's write lock "
    "before giving up (a transient error).",
    "retention_1m": "How long 1m candles are kept (90d, 26w ...): `marketdata db prune`, run "
    "by the maintenance timer, removes older ones (whole partitions on PostgreSQL). Unset: "
    "forever.",
    "retention_5m": "How long 5m candles are kept; unset: forever.",
    "retention_15m": "How long 15m candles are kept; unset: forever.",
    "retention_1h": "How long 1h candles are kept; unset: forever.",
    "retention_6h": "How long 6h candles are kept; unset: forever.",
    "retention_1d": "How long 1d candles are kept; unset: forever.",
    "synthetic_latency_ms": "Simulated network latency of the synthetic provider, in "
    "milliseconds per request (benchmarks that should be latency-bound like a real provider).",
    "worker_heartbeat_seconds": "How often a `marketdata worker` records that it is alive.",
    "worker_stall_seconds": "A job whose worker has not recorded a heartbeat for this long is "
    "stalled (the worker died) and is handed to another worker.",
    "worker_retry_attempts": "Retries of a failed job before it stays failed (`marketdata "
    "jobs retry` runs it again).",
    "worker_retry_backoff": "Seconds of the exponential backoff between a job's retries: this "
    "to the power 1, 2, 3, ... (0: retry at once).",
    "worker_keep_hours": "Succeeded and cancelled jobs are deleted from the queue this many "
    "hours after they ended (failed ones stay until retried); the run history keeps outcomes.",
}

HEADER = f"""\
# marketdata settings. Install as {SYSTEM_ENV_FILE} (owner root, mode 0600: the
# units' EnvironmentFile= is read by systemd before it drops privileges); a group of markets
# run by marketdata-ingest@GROUP reads {SYSTEM_ENV_FILE.parent}/GROUP.env on top of it.
# Every setting is listed with its default, commented out: uncomment what you change. The
# environment and command-line flags override this file.
# Generated from the settings model by `marketdata config example`."""


def env_example() -> str:
    """The example env file, one commented block per setting in the model's order."""
    blocks = [HEADER]
    for name, info in Settings.model_fields.items():
        if name not in DESCRIPTIONS:
            raise KeyError(f"setting {name.upper()} has no description in env_example.py")
        text = DESCRIPTIONS[name]
        allowed = _allowed(info.annotation, info.metadata)
        if allowed:
            text = f"{text} {allowed}"
        lines = _wrap(f"{name.upper()}: {text}")
        default = _shown(info.get_default(call_default_factory=True))
        lines.append(f"#{name.upper()}={default}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _allowed(annotation: Any, metadata: list[Any]) -> str:
    choices = [a for a in (get_args(annotation) or (annotation,)) if get_origin(a) is Literal]
    if get_origin(annotation) is Literal:
        choices = [annotation]
    if choices:
        return "One of: " + ", ".join(str(v) for v in get_args(choices[0])) + "."
    low = next(
        (m for m in metadata if isinstance(m, annotated_types.Ge | annotated_types.Gt)), None
    )
    high = next((m for m in metadata if isinstance(m, annotated_types.Le)), None)
    if low is None or high is None:
        return ""
    above = f"above {low.gt}" if isinstance(low, annotated_types.Gt) else f"from {low.ge}"
    return f"Allowed: {above} to {high.le}."


def _shown(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, SecretStr):
        return ""
    text = ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
    # systemd and python-dotenv both read a quoted value whole
    return f'"{text}"' if " " in text or "#" in text else text


def _wrap(text: str, width: int = 92) -> list[str]:
    lines, line = [], "#"
    for word in text.split():
        if len(line) + 1 + len(word) > width:
            lines.append(line)
            line = "#"
        line = f"{line} {word}"
    lines.append(line)
    return lines
