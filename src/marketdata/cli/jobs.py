"""`jobs`, `jobs retry`, `jobs cancel`: the worker fleet's job queue."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from marketdata.cli import render
from marketdata.cli.options import Json
from marketdata.cli.state import build_app

if TYPE_CHECKING:
    from marketdata.fleet.jobs import JobsReport

app = typer.Typer(
    help="The worker fleet's job queue (PostgreSQL): what waits, runs, stalled and failed.",
    invoke_without_command=True,
    no_args_is_help=False,
)

Ids = Annotated[list[int] | None, typer.Argument(help="Job ids (see `marketdata jobs`).")]


@app.callback()
def jobs(
    context: typer.Context,
    limit: Annotated[int, typer.Option(help="Show at most this many failed jobs.", min=1)] = 50,
    json: Json = False,
) -> None:
    """Jobs by status, running jobs with their worker and age, stalled and failed jobs with
    their error, and workers with their last heartbeat."""
    if context.invoked_subcommand is not None:
        return
    from marketdata.fleet.jobs import report

    result = report(build_app(), limit=limit)
    if json:
        render.emit_json(result.__dict__)
        return
    _render(result)


@app.command("retry")
def retry(
    ids: Ids = None,
    all_failed: Annotated[bool, typer.Option("--all-failed", help="Every failed job.")] = False,
    json: Json = False,
) -> None:
    """Queue failed jobs again, now."""
    from marketdata.fleet.jobs import retry as retry_jobs

    done = retry_jobs(build_app(), list(ids or []), all_failed=all_failed)
    if json:
        render.emit_json({"retried": done})
        return
    render.note(f"{len(done)} jobs queued again: {', '.join(map(str, done)) or 'none'}")


@app.command("cancel")
def cancel(ids: Ids = None, json: Json = False) -> None:
    """Cancel waiting jobs (their pair is recorded as cancelled in its run)."""
    from marketdata.fleet.jobs import cancel as cancel_jobs

    done = cancel_jobs(build_app(), list(ids or []))
    if json:
        render.emit_json({"cancelled": done})
        return
    render.note(f"{len(done)} jobs cancelled: {', '.join(map(str, done)) or 'none'}")


def _render(result: JobsReport) -> None:
    counts = ", ".join(f"{k} {v}" for k, v in result.counts.items())
    render.note(f"jobs: {counts}")
    sections: list[tuple[str, list[dict[str, Any]], list[str]]] = [
        ("running", result.running, ["id", "symbol", "interval", "run_id", "worker", "age_s"]),
        ("stalled", result.stalled, ["id", "symbol", "interval", "worker", "heartbeat_age_s"]),
        ("failed", result.failed, ["id", "symbol", "interval", "attempts", "error"]),
        ("workers", result.workers, ["id", "last_heartbeat", "heartbeat_age_s"]),
    ]
    for title, rows, columns in sections:
        if rows:
            render.table(title, columns, [[r[c] for c in columns] for r in rows])
