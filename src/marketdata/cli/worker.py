"""`worker`: run ingestion jobs from the PostgreSQL job queue (one per host of a fleet)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from marketdata.cli import render
from marketdata.cli.options import (
    Intervals,
    Provider,
    Symbols,
    parse_intervals,
    parse_symbol_flags,
)
from marketdata.cli.state import build_app

if TYPE_CHECKING:
    from marketdata.context import AppContext
    from marketdata.pipeline import IngestRequest


def register(app: typer.Typer) -> None:
    """Add the command of this module to the root app."""
    app.command("worker")(worker)


def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency",
            "-c",
            help="Pairs run at once (default: INGESTION_CONCURRENCY).",
            min=1,
            max=64,
            show_default=False,
        ),
    ] = None,
    queue: Annotated[
        list[str] | None,
        typer.Option("--queue", help="Queues to take jobs from (default: marketdata)."),
    ] = None,
    symbols: Symbols = None,
    interval: Intervals = None,
    provider: Provider = None,
    no_ticks: Annotated[
        bool,
        typer.Option(
            "--no-ticks",
            help="Do not defer ticks on INGESTION_CRON_EXPRESSION; only run queued jobs.",
        ),
    ] = False,
) -> None:
    """Run ingestion jobs from the job queue on PostgreSQL until SIGTERM: one job per
    (symbol, interval), the ticks deferred on INGESTION_CRON_EXPRESSION once for the whole
    fleet (for the selection given here), jobs of dead workers picked up again. The first
    SIGTERM lets the pairs in flight finish; a second rolls them back."""
    from marketdata.fleet.queue import require_postgres
    from marketdata.fleet.worker import run_worker
    from marketdata.pipeline import IngestRequest

    # the engine's pool is sized from INGESTION_CONCURRENCY: a connection for each job at once
    ctx = build_app(ingestion_concurrency=concurrency)
    require_postgres(ctx, "`marketdata worker`")
    tick = None
    if not no_ticks:
        tick = IngestRequest(
            symbols=parse_symbol_flags(symbols),
            intervals=parse_intervals(interval),
            providers=[provider] if provider else [],
            trigger="timer",
        )
    ctx.engine()  # the schema is checked before the first job
    run_worker(
        ctx,
        concurrency=concurrency or ctx.settings.ingestion_concurrency,
        queues=[q for item in queue or [] for q in item.split(",") if q.strip()],
        tick=tick,
    )


def enqueue_tick(ctx: AppContext, request: IngestRequest, *, json: bool) -> None:
    """`ingest --enqueue`: defer the request's pairs as jobs and say what was deferred."""
    from marketdata.fleet.enqueue import enqueue
    from marketdata.fleet.queue import build_fleet, require_postgres

    require_postgres(ctx, "`ingest --enqueue`")
    ctx.engine()
    fleet = build_fleet(ctx)
    try:
        with fleet.queue.open():
            result = enqueue(fleet, request)
    finally:
        fleet.close()
    if json:
        render.emit_json(result.__dict__)
        return
    render.note(
        f"run {result.run_id}: {len(result.deferred)} jobs deferred via "
        f"{','.join(result.providers)}, {len(result.queued)} pairs already queued, "
        f"{len(result.disabled)} disabled (`marketdata jobs` shows the queue)"
    )
