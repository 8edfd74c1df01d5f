"""`marketdata schedule render|install|status|run`: the ingestion schedule, under systemd or not."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from marketdata.cli import render
from marketdata.cli.options import Json
from marketdata.cli.state import build_app

if TYPE_CHECKING:
    from marketdata.cron import Cron
    from marketdata.systemd.status import SystemdStatus
    from marketdata.systemd.units import UnitSet

app = typer.Typer(
    help="The ingestion schedule: systemd units from the cron expression, or a foreground "
    "scheduler where there is no systemd.",
    no_args_is_help=True,
)

CronOption = Annotated[
    str | None,
    typer.Option(
        "--cron",
        help="A cron expression (five fields, or @hourly, @daily, ...); default: "
        "INGESTION_CRON_EXPRESSION.",
        show_default=False,
    ),
]
Instance = Annotated[
    str | None,
    typer.Option(
        "--instance",
        help="A group of markets with its own env file (/etc/marketdata/NAME.env) and "
        "schedule: adds the drop-ins of marketdata-ingest@NAME.",
        show_default=False,
    ),
]
Exec = Annotated[
    Path | None,
    typer.Option(
        "--exec",
        help="Absolute path of the marketdata command the units run (default: this one).",
        show_default=False,
    ),
]
ENV_EXAMPLE = "marketdata.env.example"


@app.command("render")
def render_cmd(
    cron: CronOption = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help=f"Write the units and {ENV_EXAMPLE} into this directory (default: print them).",
            file_okay=False,
            show_default=False,
        ),
    ] = None,
    instance: Instance = None,
    executable: Exec = None,
    json: Json = False,
) -> None:
    """Render the systemd units, with OnCalendar= converted from the cron expression."""
    from marketdata.env_example import env_example

    parsed, units = _units(cron, instance, executable, installing=False)
    if output is not None:
        for path in units.write(output):
            render.note(f"wrote {path}")
        (output / ENV_EXAMPLE).write_text(env_example())
        render.note(f"wrote {output / ENV_EXAMPLE}")
    if json:
        render.emit_json(
            {"cron": parsed.text, "on_calendar": parsed.on_calendar(), "files": units.files}
        )
    elif output is None:
        for name, text in units.files.items():
            render.out.print(f"### {name}\n{text}", markup=False, soft_wrap=True)


@app.command("install")
def install_cmd(
    cron: CronOption = None,
    instance: Instance = None,
    executable: Exec = None,
    unit_dir: Annotated[
        Path, typer.Option("--unit-dir", help="Where systemd reads units.", file_okay=False)
    ] = Path("/etc/systemd/system"),
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print each action instead of doing it.")
    ] = False,
    json: Json = False,
) -> None:
    """Copy the units to the unit directory, reload systemd and enable the timers."""
    from marketdata.config import SYSTEM_ENV_FILE
    from marketdata.systemd.install import install, plan_install, timers_to_enable

    _, units = _units(cron, instance, executable, installing=True)
    actions = plan_install(units, unit_dir, timers_to_enable(instance))
    group_env = SYSTEM_ENV_FILE.parent / f"{instance}.env"
    if instance is not None and not group_env.is_file():
        render.note(
            f"warning: {group_env} does not exist: marketdata-ingest@{instance} "
            "will not start until it does"
        )
    if not dry_run:
        install(units, unit_dir, actions)
    if json:
        render.emit_json(
            {
                "dry_run": dry_run,
                "actions": [{"action": a.kind, "target": a.target} for a in actions],
            }
        )
        return
    for action in actions:
        if dry_run:
            render.out.print(action.describe(), markup=False, soft_wrap=True)
        else:
            render.note(f"{'done' if action.kind != 'unchanged' else 'kept'}: {action.describe()}")


def _units(
    cron: str | None, instance: str | None, executable: Path | None, *, installing: bool
) -> tuple[Cron, UnitSet]:
    from marketdata.cron import parse
    from marketdata.systemd.install import check_executable, installed_executable
    from marketdata.systemd.units import check_instance, render_units

    settings = build_app().settings
    parsed = (
        parse(cron, source="--cron")
        if cron is not None
        else parse(settings.ingestion_cron_expression)
    )
    if instance is not None:
        check_instance(instance)
    from marketdata.errors import InputError

    exe = executable if executable is not None else installed_executable()
    try:
        check_executable(exe)
    except InputError as exc:
        if installing or not exe.is_absolute():
            raise
        render.note(f"warning: {exc.one_line()}")  # rendering for review is fine
    return parsed, render_units(parsed, exe, instance=instance)


@app.command("status")
def status_cmd(
    instance: Instance = None,
    limit: Annotated[
        int, typer.Option("--last", "-n", "--limit", help="Runs to show.", min=1)
    ] = 10,
    json: Json = False,
) -> None:
    """The timers' last and next run (from systemctl, when there is systemd) beside the last
    runs recorded in the database."""
    from marketdata.domain import format_duration
    from marketdata.storage.engine import connect
    from marketdata.storage.runs import recent_runs
    from marketdata.systemd.install import timers_to_enable
    from marketdata.systemd.status import timer_status

    ctx = build_app()
    systemd = timer_status(timers_to_enable(instance))
    if not json:  # shown before the database is asked: it may be what is down
        _render_timers(systemd)
    with connect(ctx.engine(), ctx.target) as conn:
        runs = recent_runs(conn, limit=limit)
    if json:
        render.emit_json(
            {
                "systemd": {
                    "available": systemd.unavailable is None,
                    "reason": systemd.unavailable,
                    "timers": [t.__dict__ for t in systemd.timers],
                },
                "runs": [r.__dict__ for r in runs],
            }
        )
        return
    render.table(
        f"last runs ({ctx.target.shown})",
        [
            "id",
            "trigger",
            "started at",
            "status",
            "rows inserted",
            "rows updated",
            "duration",
            "error",
        ],
        [
            (
                r.id,
                r.trigger,
                r.started_at,
                r.status,
                r.rows_inserted,
                r.rows_updated,
                None if r.duration_ms is None else format_duration(r.duration_ms / 1000),
                r.error,
            )
            for r in runs
        ],
        right=["id", "rows inserted", "rows updated", "duration"],
    )
    if not runs:
        render.note("no runs recorded yet")


def _render_timers(systemd: SystemdStatus) -> None:
    if systemd.unavailable:
        render.note(f"systemd: {systemd.unavailable}")
        return
    render.table(
        "timers (systemd)",
        ["timer", "state", "enabled", "last run", "next run", "last result"],
        [
            (
                t.timer,
                t.state,
                t.enabled,
                t.last_run,
                t.next_run,
                _result(t.last_result, t.last_exit_status),
            )
            for t in systemd.timers
        ],
    )


def _result(result: str, status: int | None) -> str:
    if not result:
        return ""
    return result if status is None else f"{result} (exit {status})"


@app.command("run")
def run_cmd(
    command: Annotated[
        list[str] | None,
        typer.Argument(
            help="The marketdata command to run, after -- (default: ingest --trigger timer).",
            show_default=False,
        ),
    ] = None,
    cron: CronOption = None,
) -> None:
    """Run the ingestion on the cron schedule in the foreground, for hosts without systemd
    (containers): one run at a time, one catch-up run after a pause, and on SIGTERM or
    Ctrl-C the run in flight rolls back its pair and the scheduler exits with its code."""
    import signal
    import sys

    from marketdata.cli.state import OPTIONS
    from marketdata.config import environment_with
    from marketdata.cron import parse
    from marketdata.scheduler import Scheduler

    settings = build_app().settings
    parsed = (
        parse(cron, source="--cron")
        if cron is not None
        else parse(settings.ingestion_cron_expression)
    )
    argv = [sys.executable, "-m", "marketdata"]
    if OPTIONS.env_file is not None:
        argv += ["--env-file", str(OPTIONS.env_file)]
    if OPTIONS.debug:
        argv.append("--debug")
    argv += command or ["ingest", "--trigger", "timer"]
    # the global flags travel as variables: a --database-url password stays off command lines
    given = {k: str(v) for k, v in OPTIONS.flags.items() if v is not None}
    scheduler = Scheduler(parsed, argv, env=environment_with(given))
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda received, _frame: scheduler.stop(received))
    raise typer.Exit(scheduler.run())
