"""Logging: loguru configured once at the CLI root; text or JSON on stderr (plain lines with
syslog priorities under journald), JSON lines in LOG_FILE, secrets scrubbed, and the context
(run_id, trigger, symbol, interval, provider) every record of a run carries."""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from marketdata.observability.logfile import DEFAULT_RETENTION, DEFAULT_ROTATION, SharedLogFile
from marketdata.redact import scrub

if TYPE_CHECKING:
    from loguru import Record

# journald strips a leading <N> and uses it as the priority (sd-daemon(3))
_SYSLOG_PRIORITY = {"CRITICAL": 2, "ERROR": 3, "WARNING": 4, "SUCCESS": 5, "INFO": 6}


def configure_logging(
    level: str,
    fmt: str,
    log_file: Path | None = None,
    *,
    journal: bool = False,
    rotation: str = DEFAULT_ROTATION,
    retention: str = DEFAULT_RETENTION,
    write: Callable[[str], None] | None = None,
    terse: bool = False,
) -> None:
    """Send logs to stderr (and LOG_FILE as JSON lines), scrubbing secrets from every record.

    `fmt` json writes one flat JSON object per line (time, level, message, then the context).
    `write` replaces stderr for text lines (the CLI passes its console, so lines land above
    a progress bar); `terse` is for people at a terminal: no timestamp (`warning: ...`), and
    a pair's own records below ERROR are left to the run's summary, which reports each pair.
    Records of libraries logging through the standard library (httpx, stamina ...) go to
    the same sinks, filtered by the same level.
    """
    from loguru import logger

    logger.remove()
    logger.configure(patcher=_journal_record if journal else _scrub_record, extra={})
    if fmt == "json":
        logger.add(
            _JsonSink(write or _stderr_line),
            level=level,
            format="{message}",
            backtrace=False,
            diagnose=False,
        )
    else:
        if journal:
            text_format = "{extra[_priority]}{level: <7} {message}"
        elif terse:
            text_format = "{extra[_level]}: {message}"
        else:
            text_format = "{time:YYYY-MM-DDTHH:mm:ss.SSSZ} {level: <7} {message}"
        # diagnose would print local variables, secrets included
        logger.add(
            _TextSink(write) if write is not None else sys.stderr,
            level=level,
            filter=_not_a_pair_detail if terse else None,
            format=text_format,
            colorize=False,
            backtrace=False,
            diagnose=False,
        )
    add_log_file(log_file, level, rotation, retention)
    _route_standard_logging(level)


def _not_a_pair_detail(record: Record) -> bool:
    return "symbol" not in record["extra"] or record["level"].no >= logging.ERROR


class _JsonSink:
    """A loguru sink handing each record, as one flat JSON object, to `write`."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self._write = write

    def write(self, message: Any) -> None:
        import json

        from marketdata.observability.logfile import flat_record

        record = flat_record(message.record)
        self._write(json.dumps(record, ensure_ascii=False, default=str))


def _stderr_line(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class _TextSink:
    """A loguru sink handing each formatted line (without its newline) to `write`."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self._write = write

    def write(self, message: str) -> None:
        self._write(message.rstrip("\n"))


class _StandardLoggingHandler(logging.Handler):
    """Hands a standard-library record to loguru, keeping its level and logger name."""

    def emit(self, record: logging.LogRecord) -> None:
        from loguru import logger

        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno

        def named(entry: Record) -> None:
            entry["name"] = record.name

        logger.patch(named).opt(exception=record.exc_info or None).log(
            level, "{}", record.getMessage()
        )


_CHATTY_LIBRARIES = ("alembic", "httpx", "httpcore", "filelock", "asyncio")


def _route_standard_logging(level: str) -> None:
    import stamina.instrumentation

    root = logging.getLogger()
    if not any(isinstance(h, _StandardLoggingHandler) for h in root.handlers):
        root.addHandler(_StandardLoggingHandler())  # others (a test runner's) stay
    number = logging.DEBUG if level == "TRACE" else logging.getLevelName(level)
    root.setLevel(number)
    # chatty libraries say at INFO what we log ourselves (requests, plugin set-up); their
    # INFO shows with DEBUG
    for name in _CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(number if number <= logging.DEBUG else logging.WARNING)
    # stamina's own hook logs every scheduled retry as a WARNING with its details in
    # `extra`; ours logs it as INFO (a retry is not a problem yet: the final failure is
    # reported where it happens) with those details flat and scrubbed
    stamina.instrumentation.set_on_retry_hooks([_log_retry])


def _log_retry(details: Any) -> None:
    from loguru import logger

    # an error that carries its own wait (a provider's, taken on the run's cancellable
    # clock after stamina's zero wait) states the wait that really comes
    wait = getattr(details.caused_by, "retry_wait", None)
    if wait is None:
        wait = details.wait_for
    logger.bind(
        retry_callable=details.name,
        retry_num=details.retry_num,
        retry_wait_s=round(wait, 2),
        caused_by=scrub(repr(details.caused_by)),
    ).info("retry {} of {} in {:.2f}s", details.retry_num, details.name, wait)


def _scrub_record(record: Record) -> None:
    record["message"] = scrub(record["message"])
    _add_context(record)
    record["extra"]["_level"] = record["level"].name.lower()


def _journal_record(record: Record) -> None:
    _scrub_record(record)
    extra: dict[str, Any] = record["extra"]
    extra["_priority"] = _priority(record["level"].name)


# ------------------------------------------------------------ LOG_FILE, journald, run context

_log_file: SharedLogFile | None = None


def add_log_file(path: Path | None, level: str, rotation: str, retention: str) -> None:
    """(Re)open LOG_FILE as a sink of flat JSON lines, rotated and pruned, safe to share
    between processes (see observability.logfile); None closes the previous one."""
    global _log_file
    from loguru import logger

    from marketdata.observability.logfile import SharedLogFile, parse_retention, parse_rotation

    if _log_file is not None:
        _log_file.close()
        _log_file = None
    if path is None:
        return
    sink = SharedLogFile(
        path,
        parse_rotation(rotation),
        parse_retention(retention),
    )
    logger.add(sink.write, level=level, format="{message}", backtrace=False, diagnose=False)
    _log_file = sink


def journal_prefix(level: str, *, journal: bool) -> str:
    """The `<N>` syslog priority journald reads at the start of a line ('' off journald)."""
    return _priority(level) if journal else ""


def _priority(level: str) -> str:
    return f"<{_SYSLOG_PRIORITY.get(level, 7)}>"


# The context of the run (and pair) this thread of work belongs to; a patcher copies it into
# every record's `extra`, so records logged deep inside a provider or the storage carry it.
_CONTEXT: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "marketdata_log_context", default=MappingProxyType({})
)


def _add_context(record: Record) -> None:
    extra = record["extra"]
    for key, value in _CONTEXT.get().items():
        extra.setdefault(key, value)


class RunLogContext:
    """Puts run_id and trigger on every record of a run, in this thread and in the pair
    tasks started from it (with_log_context); `close` ends it."""

    def __init__(self, run_id: int | None, trigger: str) -> None:
        self._token = _CONTEXT.set({**_CONTEXT.get(), "run_id": run_id, "trigger": trigger})

    def close(self) -> None:
        """Stop adding the run's context (call from the thread that opened it)."""
        _CONTEXT.reset(self._token)


def bind_pair(symbol: str, interval: str, provider: str | None = None) -> None:
    """Add the pair (and the provider serving it, once known) to every later record of the
    current pair task. Call only inside a task's own copy of the context (with_log_context),
    which ends with the task."""
    values: dict[str, Any] = {"symbol": symbol, "interval": interval}
    if provider is not None:
        values["provider"] = provider
    _CONTEXT.set({**_CONTEXT.get(), **values})


def unbind_pair() -> None:
    """Drop the pair and its provider from the current task's records: for a task started by a
    pair task that goes on to other pairs (the cache refresher)."""
    pair_keys = ("symbol", "interval", "provider")
    _CONTEXT.set({k: v for k, v in _CONTEXT.get().items() if k not in pair_keys})


P = ParamSpec("P")
T = TypeVar("T")


def with_log_context(task: Callable[P, T]) -> Callable[P, T]:
    """`task` to run in a copy of the caller's context (a worker thread starts with an empty
    one), so its records carry the run's context and what it binds stays its own."""
    context = contextvars.copy_context()

    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        return context.run(task, *args, **kwargs)

    return run
