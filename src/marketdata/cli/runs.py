"""`marketdata runs` and `marketdata status`: the run history and each market's state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from marketdata.cli import render
from marketdata.cli.options import Json, StoredSymbols, parse_symbol_flags
from marketdata.cli.state import build_app

if TYPE_CHECKING:
    from marketdata.context import AppContext
    from marketdata.storage.run_history import HistoryRow


def register(app: typer.Typer) -> None:
    """Add the commands of this module to the root app."""
    app.command("runs")(runs)
    app.command("status")(status)


def runs(
    last: Annotated[
        int, typer.Option("--last", "-n", help="Show the newest N runs.", min=1, max=100_000)
    ] = 20,
    status: Annotated[
        list[str] | None,
        typer.Option(
            "--status",
            help="Only runs with this status (running, success, partial, failure or failed, "
            "interrupted, ...); repeat or comma-separate for several.",
            show_default=False,
        ),
    ] = None,
    json: Json = False,
) -> None:
    """The run history, newest first: trigger, status, duration, rows, providers, error."""
    from marketdata.domain import format_duration
    from marketdata.storage.engine import connect
    from marketdata.storage.run_history import parse_run_states, run_history

    states = parse_run_states(status or [])
    ctx = build_app()
    with connect(ctx.engine(), ctx.target) as conn:
        rows = run_history(conn, last=last, statuses=states)
    if json:
        render.emit_json([_run_record(r) for r in rows])
        return
    if not rows:
        render.note("no runs recorded" + (f" with status {', '.join(states)}" if states else ""))
        return
    render.table(
        None,
        [
            "run id",
            "started at",
            "trigger",
            "status",
            "duration",
            "rows inserted",
            "rows updated",
            "rows rejected",
            "providers",
            "host",
            "error",
        ],
        [
            (
                r.id,
                r.started_at,
                r.trigger,
                r.status,
                None if r.duration_ms is None else format_duration(r.duration_ms / 1000),
                r.rows_inserted,
                r.rows_updated,
                r.rows_rejected,
                r.providers,
                r.host,
                r.error,
            )
            for r in rows
        ],
        right=("run id", "duration", "rows inserted", "rows updated", "rows rejected"),
    )


def _run_record(r: HistoryRow) -> dict[str, object]:
    return {
        "run_id": r.id,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "trigger": r.trigger,
        "status": r.status,
        "duration_ms": r.duration_ms,
        "rows_inserted": r.rows_inserted,
        "rows_updated": r.rows_updated,
        "rows_rejected": r.rows_rejected,
        "providers": r.providers.split(",") if r.providers else [],
        "host": r.host,
        "error": r.error,
    }


def status(symbols: StoredSymbols = None, json: Json = False) -> None:
    """Each stored market: newest candle, its age and staleness, the last run's outcome for
    it, and whether it is stale. Exit 1 after the report when an enabled market is stale."""
    from marketdata.domain import format_duration
    from marketdata.freshness import market_status, raise_if_stale

    ctx = build_app()
    rows = market_status(ctx, parse_symbol_flags(symbols))
    stale_after = ctx.settings.stale_after_seconds
    if json:
        render.emit_json([r.as_dict() for r in rows])
    elif not rows:
        render.note("no candles stored yet: run `marketdata ingest`")
    else:
        render.table(
            f"markets (stale beyond ALERT_STALE_AFTER = {format_duration(stale_after)})",
            [
                "symbol",
                "interval",
                "newest",
                "age",
                "staleness",
                "state",
                "last run id",
                "last outcome",
                "last error",
            ],
            [
                (
                    r.freshness.symbol,
                    r.freshness.interval,
                    r.freshness.newest,
                    format_duration(r.freshness.age_seconds),
                    format_duration(r.freshness.staleness_seconds),
                    r.freshness.state,
                    r.last.run_id if r.last else None,
                    r.last.status if r.last else "never run",
                    r.last.error if r.last else None,
                )
                for r in rows
            ],
            right=("age", "staleness", "last run id"),
        )
    if not json:
        _note_runs_to_watch(ctx)
    raise_if_stale(rows, stale_after)


def _note_runs_to_watch(ctx: AppContext) -> None:
    """Under the table: runs still running (one running long may be stuck, holding its
    pairs) and recent runs whose process died (closed as abandoned)."""
    from marketdata.domain import format_duration
    from marketdata.storage.engine import connect
    from marketdata.storage.runs import runs_to_watch

    with connect(ctx.engine(), ctx.target) as conn:
        watched = runs_to_watch(conn, ctx.lock_dir())
    now = ctx.clock()
    for item in watched:
        run = item.run
        host = run.host or "an unknown host"
        if run.status != "running":
            render.note(f"run {run.id} on {host} was abandoned: {run.error}")
            continue
        age = format_duration(int((now - run.started_at).total_seconds()))
        if item.process_gone:
            render.note(
                f"run {run.id} on {host} started {age} ago and its process is gone: "
                "the next run closes it as abandoned"
            )
        else:
            render.note(f"run {run.id} on {host} has been running for {age}")
