"""The `marketdata` command: global options, command groups, and the one place that exits."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from marketdata.cli import alert_cmd, config_cmd, db, ingest, markets, providers, schedule
from marketdata.cli import analytics as analytics_cli
from marketdata.cli import jobs as jobs_cli
from marketdata.cli import metrics as metrics_cli
from marketdata.cli import runs as runs_cli
from marketdata.cli import worker as worker_cli
from marketdata.cli.state import OPTIONS

app = typer.Typer(
    name="marketdata",
    help="Keep a database of market data fresh and correct: fetch candles from public "
    "providers, validate and store them, compute analytics, and report what happened.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


@app.callback()
def main(
    env_file: Annotated[
        Path | None,
        typer.Option(
            "--env-file",
            help="Read settings from this env file instead of /etc/marketdata/marketdata.env "
            "and ./.env.",
            dir_okay=False,
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", help="Overrides DATABASE_URL.", show_default=False),
    ] = None,
    log_level: Annotated[
        str | None, typer.Option("--log-level", help="Overrides LOG_LEVEL (DEBUG, INFO, ...).")
    ] = None,
    log_format: Annotated[
        str | None, typer.Option("--log-format", help="Overrides LOG_FORMAT (text or json).")
    ] = None,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks and debug logs on errors.")
    ] = False,
) -> None:
    """Global options apply to every command."""
    OPTIONS.env_file = env_file
    OPTIONS.debug = debug
    OPTIONS.flags = {
        "database_url": database_url,
        "log_level": "DEBUG" if debug else log_level,
        "log_format": log_format,
    }


ingest.register(app)
analytics_cli.register(app)
app.add_typer(markets.app, name="markets")
app.add_typer(providers.app, name="providers")
providers.register(app)
app.add_typer(db.app, name="db")
app.add_typer(config_cmd.app, name="config")
app.add_typer(alert_cmd.app, name="alert")
app.add_typer(schedule.app, name="schedule")
metrics_cli.register(app)
runs_cli.register(app)
worker_cli.register(app)
app.add_typer(jobs_cli.app, name="jobs")


def run(argv: list[str] | None = None) -> NoReturn:
    """Console-script entry point: run the command and exit with the documented code.

    Typer reports usage errors itself (exit 2); our errors become one line on stderr with
    the exit code their class carries; anything unexpected is one line and exit 1.
    """
    from marketdata.errors import ExitCode, MarketdataError

    signal.signal(signal.SIGTERM, _on_sigterm)
    command = typer.main.get_command(app)
    try:
        try:
            command.main(args=argv, prog_name="marketdata", standalone_mode=True)
        finally:
            if OPTIONS.app is not None:
                OPTIONS.app.close()
    except MarketdataError as exc:
        _fail(exc.one_line(), exc.exit_code, exc)
    except KeyboardInterrupt as exc:
        _fail("interrupted", ExitCode.SIGINT, exc)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, exit 1
        _fail(f"unexpected error: {type(exc).__name__}: {exc}", ExitCode.FAILURE, exc)
    sys.exit(ExitCode.OK)


def _on_sigterm(signum: int, _frame: Any) -> None:
    from marketdata.errors import RunInterruptedError

    raise RunInterruptedError(signum)


def _fail(message: str, code: int, exc: BaseException | None) -> NoReturn:
    from marketdata.config import stderr_is_journal
    from marketdata.observability.logging import journal_prefix
    from marketdata.redact import scrub

    if OPTIONS.debug and exc is not None:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    # under journald the line carries its priority, so `journalctl -p err` finds it
    prefix = journal_prefix("ERROR", journal=stderr_is_journal())
    print(f"{prefix}marketdata: error: {scrub(message)}", file=sys.stderr)
    sys.exit(code)
