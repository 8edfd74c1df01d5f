"""Global options and building the AppContext for a command (the CLI's only link to the core)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from marketdata.context import AppContext


@dataclass
class GlobalOptions:
    """Options given before the command name."""

    env_file: Path | None = None
    debug: bool = False
    quiet: bool = False
    verbose: bool = False
    json: bool = False
    flags: dict[str, Any] = field(default_factory=dict)
    app: AppContext | None = None


OPTIONS = GlobalOptions()


def build_app(**flags: Any) -> AppContext:
    """The AppContext for this command: settings from flags > env > env file > defaults."""
    from marketdata.config import stderr_is_journal
    from marketdata.context import AppContext
    from marketdata.observability.logging import configure_logging

    merged = {**OPTIONS.flags, **{k: v for k, v in flags.items() if v is not None}}
    app = AppContext.from_settings(merged, env_file=OPTIONS.env_file)
    settings = app.settings
    if settings.log_level == "DEBUG":
        OPTIONS.debug = True
    journal = stderr_is_journal()
    level, terse = log_level(settings.log_level, app.loaded.sources["log_level"], journal)
    configure_logging(
        level,
        settings.log_format,
        settings.log_file,
        journal=journal,
        rotation=settings.log_rotation,
        retention=settings.log_retention,
        write=_console_line,
        terse=terse,
    )
    if app.loaded.warnings:
        from loguru import logger

        for warning in app.loaded.warnings:
            logger.warning(warning)
    OPTIONS.app = app
    return app


def log_level(configured: str, source: str, journal: bool) -> tuple[str, bool]:
    """The level logs are shown at, and whether lines drop their timestamp.

    A person at a terminal gets warnings and errors as `warning: ...` (the summary is the
    report, not INFO lines); `-v` shows INFO with timestamps, `-q` errors only. A level set
    on purpose (--log-level, LOG_LEVEL) wins over the terminal default; pipes and journald
    keep the configured level.
    """
    from marketdata.cli import render

    if OPTIONS.quiet:
        return "ERROR", render.err.is_terminal
    if OPTIONS.verbose:
        return ("DEBUG" if configured == "DEBUG" else "INFO"), False
    at_terminal = render.err.is_terminal and not journal
    if at_terminal and source == "default":
        return "WARNING", True
    return configured, False


def _console_line(line: str) -> None:
    # through the Rich console, so that a live progress bar stays below the lines
    from marketdata.cli import render

    render.err.print(line, markup=False, highlight=False, soft_wrap=True)
