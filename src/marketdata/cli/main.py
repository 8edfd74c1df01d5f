"""The `marketdata` command: global options, command groups, and the one place that exits."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from marketdata.cli import alert_cmd, config_cmd, db, ingest, markets, providers, schedule
from marketdata.cli import analytics as analytics_cli
from marketdata.cli import cache as cache_cli
from marketdata.cli import jobs as jobs_cli
from marketdata.cli import metrics as metrics_cli
from marketdata.cli import rejects as rejects_cli
from marketdata.cli import runs as runs_cli
from marketdata.cli import worker as worker_cli
from marketdata.cli.helptext import HELP_OPTION_NAMES
from marketdata.cli.state import OPTIONS

app = typer.Typer(
    name="marketdata",
    help="Keep a database of market data fresh and correct: fetch candles from public "
    "providers, validate and store them, compute analytics, and report what happened.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": HELP_OPTION_NAMES},
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"marketdata {version('marketdata')}")
        raise typer.Exit()


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
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Errors only: no notes, no warnings.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show INFO logs (with their time) too.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_version, is_eager=True
        ),
    ] = False,
) -> None:
    """Global options apply to every command."""
    from marketdata.cli import render

    OPTIONS.env_file = env_file
    OPTIONS.debug = debug
    OPTIONS.quiet = quiet
    OPTIONS.verbose = verbose
    render.quiet = quiet
    OPTIONS.flags = {
        "database_url": database_url,
        "log_level": "DEBUG" if debug else log_level,
        "log_format": log_format,
    }


ingest.register(app)
app.add_typer(rejects_cli.app, name="rejects")
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
cache_cli.register(app)
worker_cli.register(app)
app.add_typer(jobs_cli.app, name="jobs")


def run(argv: list[str] | None = None) -> NoReturn:
    """Console-script entry point: run the command and exit with the documented code.

    Every error, usage errors included, is one line `marketdata: error: ...` on stderr (plus
    at most one `hint:` line), and also a JSON object on stderr under --json; the exit code
    is the one its class carries; anything unexpected is one line and exit 1.
    """
    from marketdata.cli.helptext import polish
    from marketdata.errors import ExitCode, MarketdataError

    click = _click_exceptions()

    args = sys.argv[1:] if argv is None else argv
    OPTIONS.json = "--json" in args[: args.index("--")] if "--" in args else "--json" in args
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    command = typer.main.get_command(app)
    polish(command)
    try:
        try:
            code = command.main(args=args, prog_name="marketdata", standalone_mode=False)
        finally:
            if OPTIONS.app is not None:
                OPTIONS.app.close()
    except MarketdataError as exc:
        _fail(exc.message, exc.exit_code, exc, hint=exc.hint)
    except click.NoArgsIsHelpError:
        sys.exit(ExitCode.OK)  # the help was printed: a command group alone asks for it
    except click.UsageError as exc:
        _fail(exc.format_message(), ExitCode.USAGE, exc, hint=_usage_hint(exc))
    except click.ClickException as exc:  # a file option that cannot be opened, ...
        _fail(exc.format_message(), ExitCode.USAGE, exc)
    except (KeyboardInterrupt, typer.Abort) as exc:
        _fail("interrupted", ExitCode.SIGINT, exc)
    except BrokenPipeError:
        # the reader went away (`| head`): not an error of ours; keep Python quiet at exit
        sys.stderr.close()
        sys.exit(ExitCode.OK)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, exit 1
        _fail(f"unexpected error: {type(exc).__name__}: {exc}", ExitCode.FAILURE, exc)
    sys.exit(code if isinstance(code, int) else ExitCode.OK)


def _click_exceptions() -> Any:
    try:  # Typer >= 0.20 carries its own copy of click
        from typer._click import exceptions
    except ImportError:  # pragma: no cover - older Typer uses click itself
        from click import exceptions  # type: ignore[no-redef]
    return exceptions


def _usage_hint(exc: Any) -> str:
    path = exc.ctx.command_path if exc.ctx is not None else "marketdata"
    return f"see `{path} --help`"


def _on_signal(signum: int, _frame: Any) -> None:
    """While a run watches its cancel event, only set it (the run stops within a second and
    records itself once); otherwise interrupt the command where it is."""
    from marketdata.errors import RunInterruptedError

    app = OPTIONS.app
    if app is not None and app.cancel.watched:
        app.cancel.set(signum)
        return
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise RunInterruptedError(signum)


def _fail(
    message: str, code: int, exc: BaseException | None, *, hint: str | None = None
) -> NoReturn:
    from marketdata.config import stderr_is_journal
    from marketdata.observability.logging import journal_prefix
    from marketdata.redact import scrub

    if OPTIONS.debug and exc is not None:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    # under journald the line carries its priority, so `journalctl -p err` finds it
    prefix = journal_prefix("ERROR", journal=stderr_is_journal())
    message = scrub(" ".join(message.split()))
    hint = scrub(" ".join(hint.split())) if hint else None
    print(f"{prefix}marketdata: error: {message}", file=sys.stderr)
    if hint:
        print(f"{prefix}hint: {hint}", file=sys.stderr)
    if OPTIONS.json:
        from marketdata.cli.render import json_text

        print(json_text({"error": message, "hint": hint, "exit_code": int(code)}), file=sys.stderr)
    sys.stderr.flush()
    sys.exit(code)
