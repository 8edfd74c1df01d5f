"""Logging: loguru configured once at the CLI root; text or JSON on stderr, secrets scrubbed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from marketdata.redact import scrub

if TYPE_CHECKING:
    from loguru import Record

# journald strips a leading <N> and uses it as the priority (sd-daemon(3))
_SYSLOG_PRIORITY = {"CRITICAL": 2, "ERROR": 3, "WARNING": 4, "SUCCESS": 5, "INFO": 6}


def configure_logging(
    level: str, fmt: str, log_file: Path | None = None, *, journal: bool = False
) -> None:
    """Send logs to stderr (and LOG_FILE as JSON lines), scrubbing secrets from every record."""
    from loguru import logger

    logger.remove()
    logger.configure(patcher=_scrub_record, extra={})
    serialize = fmt == "json"
    text_format = (
        "{time:YYYY-MM-DDTHH:mm:ss.SSSZ} {level: <7} {message}"
        if not journal
        else "{extra[priority]}{level: <7} {message}"
    )
    if journal:
        logger.configure(patcher=_journal_record)
    logger.add(
        sys.stderr,
        level=level,
        format=text_format if not serialize else "{message}",
        serialize=serialize,
        colorize=False if journal or serialize else None,
        backtrace=False,
        diagnose=False,  # diagnose would print local variables, secrets included
    )
    if log_file is not None:
        logger.add(log_file, level=level, serialize=True, backtrace=False, diagnose=False)


def _scrub_record(record: Record) -> None:
    record["message"] = scrub(record["message"])


def _journal_record(record: Record) -> None:
    _scrub_record(record)
    extra: dict[str, Any] = record["extra"]
    extra["priority"] = f"<{_SYSLOG_PRIORITY.get(record['level'].name, 7)}>"
