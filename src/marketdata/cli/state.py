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
    configure_logging(
        settings.log_level,
        settings.log_format,
        settings.log_file,
        journal=stderr_is_journal(),
        rotation=settings.log_rotation,
        retention=settings.log_retention,
    )
    if app.loaded.warnings:
        from loguru import logger

        for warning in app.loaded.warnings:
            logger.warning(warning)
    OPTIONS.app = app
    return app
