"""`ingest`, `replay` and `gaps`: the ingestion job and the holes it leaves behind."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from marketdata.cli import render
from marketdata.cli.options import (
    Intervals,
    Json,
    LookbackDays,
    Provider,
    Symbols,
    parse_intervals,
    parse_symbol_flags,
)
from marketdata.cli.state import build_app

if TYPE_CHECKING:
    from marketdata.context import AppContext
    from marketdata.domain import PairOutcome, RunResult
    from marketdata.pipeline import IngestRequest, Plan


def register(app: typer.Typer) -> None:
    """Add the commands of this module to the root app."""
    app.command("ingest")(ingest)
    app.command("replay")(replay)
    app.command("gaps")(gaps)


def ingest(
    symbols: Symbols = None,
    interval: Intervals = None,
    provider: Provider = None,
    since: Annotated[
        str | None,
        typer.Option(help="Fetch from this ISO 8601 date or UTC timestamp.", show_default=False),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            help="Fetch up to (not including) this date or timestamp.", show_default=False
        ),
    ] = None,
    trigger: Annotated[
        str | None,
        typer.Option(help="manual or timer (default: timer under systemd, else manual)."),
    ] = None,
    backfill_gaps: Annotated[
        bool, typer.Option("--backfill-gaps", help="Also fetch every gap in stored history.")
    ] = False,
    lookback_days: LookbackDays = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Show the plan (ranges, requests, time); fetch and write nothing."
        ),
    ] = False,
    enqueue: Annotated[
        bool,
        typer.Option(
            "--enqueue",
            help="Defer the pairs as jobs for `marketdata worker` processes (PostgreSQL) "
            "instead of running them here.",
        ),
    ] = False,
    json: Json = False,
) -> None:
    """Fetch new candles for each symbol and interval, from the last stored candle to now."""
    from marketdata.domain import parse_time
    from marketdata.pipeline import IngestRequest, Mode

    request = IngestRequest(
        symbols=parse_symbol_flags(symbols),
        intervals=parse_intervals(interval),
        providers=[provider] if provider else [],
        since=parse_time(since, name="--since") if since else None,
        until=parse_time(until, name="--until") if until else None,
        mode=Mode.BACKFILL if backfill_gaps else Mode.INCREMENTAL,
        lookback_days=lookback_days,
        trigger=_trigger(trigger),
    )
    if enqueue and not dry_run:
        from marketdata.cli.worker import enqueue_tick

        enqueue_tick(build_app(), request, json=json)
        return
    _run(build_app(), request, dry_run=dry_run, json=json)


def replay(
    lookback_days: LookbackDays = None,
    symbols: Symbols = None,
    interval: Intervals = None,
    provider: Provider = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the plan; fetch and write nothing.")
    ] = False,
    json: Json = False,
) -> None:
    """Fetch the whole lookback window again and upsert it: corrections overwrite stored
    candles; reports rows inserted, updated and unchanged."""
    from marketdata.pipeline import IngestRequest, Mode

    request = IngestRequest(
        symbols=parse_symbol_flags(symbols),
        intervals=parse_intervals(interval),
        providers=[provider] if provider else [],
        mode=Mode.REPLAY,
        lookback_days=lookback_days,
        trigger=_trigger(None),
    )
    _run(build_app(), request, dry_run=dry_run, json=json)


def _trigger(value: str | None) -> str:
    from marketdata.config import systemd_invocation
    from marketdata.errors import InputError

    if value is None:
        return "timer" if systemd_invocation() else "manual"
    if value not in ("manual", "timer"):
        raise InputError(f"--trigger must be manual or timer, not {value!r}")
    return value


def _run(ctx: AppContext, request: IngestRequest, *, dry_run: bool, json: bool) -> None:
    from marketdata.errors import MarketdataError, PartialRunError
    from marketdata.pipeline import build_plan, run_ingest

    if dry_run:
        _render_plan(build_plan(ctx, request, with_costs=True), json=json)
        return
    with _Progress(json) as progress:
        result = run_ingest(ctx, request, progress)
    _render_result(result, json=json)
    failed = [o for o in result.outcomes if o.status == "failed"]
    if result.status.value == "partial":
        raise PartialRunError(
            f"run {result.run_id}: {len(failed)} of {len(result.outcomes)} pairs failed"
        )
    if result.status.value == "failure":
        if failed:  # each pair's error is in the summary above (or the JSON): not again here
            raise MarketdataError(
                f"run {result.run_id} failed: {len(failed)} of {len(result.outcomes)} pairs failed",
                hint="`marketdata runs -n 1` shows the run; `-v` shows each pair's log",
            )
        raise MarketdataError(f"run {result.run_id} failed: {result.error}")


class _Progress:
    """A Rich progress bar on an interactive terminal; a log line per pair elsewhere
    (under systemd, in pipes, with --json)."""

    def __init__(self, json: bool) -> None:
        from marketdata.config import stderr_is_journal

        self.live = (
            render.err.is_terminal and not stderr_is_journal() and not (json or render.quiet)
        )
        self.bar: Any = None
        self.task: Any = None
        self.rows = 0

    def __enter__(self) -> _Progress:
        return self

    def started(self, pairs: int) -> None:
        if not self.live:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rows]:,} rows"),
            TextColumn("{task.fields[rate]:,.0f} rows/s"),
            TimeRemainingColumn(),
            console=render.err,
            transient=True,
        )
        self.bar.start()
        self.task = self.bar.add_task("ingesting", total=pairs, rows=0, rate=0.0)
        self.started_at = time.monotonic()

    def pair_done(self, outcome: PairOutcome) -> None:
        if self.bar is None:
            self._log(outcome)
            return
        self.rows += outcome.inserted + outcome.updated
        rate = self.rows / max(time.monotonic() - self.started_at, 1e-3)
        self.bar.update(
            self.task,
            advance=1,
            rows=self.rows,
            rate=rate,
            description=f"{outcome.symbol} {outcome.interval}",
        )

    def _log(self, outcome: PairOutcome) -> None:
        from loguru import logger

        logger.bind(
            symbol=outcome.symbol, interval=outcome.interval, provider=outcome.provider
        ).info(
            "{} {} {}: {} fetched, {} inserted, {} updated, {} rejected{}",
            outcome.symbol,
            outcome.interval,
            outcome.status,
            outcome.fetched,
            outcome.inserted,
            outcome.updated,
            outcome.rejected,
            f" ({outcome.error})" if outcome.error else "",
        )

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def _render_result(result: RunResult, *, json: bool) -> None:
    if json:
        render.emit_json(
            {
                "run_id": result.run_id,
                "status": result.status.value,
                "trigger": result.trigger,
                "providers": result.providers,
                "started_at": result.started_at,
                "finished_at": result.finished_at,
                "duration_ms": result.duration_ms,
                "rows_inserted": result.rows_inserted,
                "rows_updated": result.rows_updated,
                "pairs": [o.as_dict() for o in result.outcomes],
            }
        )
        return
    render.table(
        f"run {result.run_id}: {result.status.value} in {(result.duration_ms or 0) / 1000:.2f}s",
        [
            "symbol",
            "interval",
            "status",
            "provider",
            "fetched",
            "inserted",
            "updated",
            "unchanged",
            "rejected",
        ],
        [
            (
                o.symbol,
                o.interval,
                o.status,
                o.provider,
                o.fetched,
                o.inserted,
                o.updated,
                o.unchanged,
                o.rejected,
            )
            for o in sorted(result.outcomes, key=lambda o: (o.symbol, o.interval))
        ],
        right=("fetched", "inserted", "updated", "unchanged", "rejected"),
    )
    # each pair's error once, whole, under the table (a table column would be cut or dropped)
    for o in sorted(result.outcomes, key=lambda o: (o.symbol, o.interval)):
        if o.error:
            render.note(f"[red]{o.symbol} {o.interval}[/red]: {render.escape(o.error)}")


def _render_plan(plan: Plan, *, json: bool) -> None:
    rows: list[dict[str, Any]] = [
        {
            "symbol": p.symbol,
            "interval": p.interval.value,
            "ranges": [{"start": render.iso(w.start), "end": render.iso(w.end)} for w in p.windows],
            "bars": sum(w.bars(p.interval) for w in p.windows),
            "requests": p.requests,
            "seconds": round(p.seconds, 1),
            "skip": p.skip,
        }
        for p in plan.pairs
    ]
    if json:
        render.emit_json(
            {"dry_run": True, "mode": plan.mode.value, "providers": plan.providers, "pairs": rows}
        )
        return
    render.table(
        f"plan ({plan.mode.value}, via {','.join(plan.providers)}): nothing fetched or written",
        ["symbol", "interval", "ranges", "bars", "requests", "time (s)", "note"],
        [
            (
                r["symbol"],
                r["interval"],
                "; ".join(f"{x['start']} .. {x['end']}" for x in r["ranges"]),
                r["bars"],
                r["requests"],
                r["seconds"],
                r["skip"],
            )
            for r in rows
        ],
        right=("bars", "requests", "time (s)"),
    )


def gaps(symbols: Symbols = None, interval: Intervals = None, json: Json = False) -> None:
    """List missing trading bars in stored history, by each market's trading calendar.

    A pair asked for by --symbols with nothing stored is an error (exit 2), not "no gaps"."""
    from marketdata.errors import NoDataError
    from marketdata.gaps import stored_gaps
    from marketdata.pipeline import IngestRequest, resolve_symbols
    from marketdata.storage.candles import last_ts
    from marketdata.storage.engine import connect

    ctx = build_app()
    asked = parse_symbol_flags(symbols)
    chosen, _ = resolve_symbols(ctx, IngestRequest(symbols=asked))
    intervals = parse_intervals(interval)
    found = []
    empty: list[str] = []
    with connect(ctx.engine(), ctx.target) as conn:
        for symbol in chosen:
            for iv in intervals:
                if last_ts(conn, symbol, iv) is None:
                    empty.append(f"{symbol} {iv}")
                    continue
                for gap in stored_gaps(conn, symbol, iv):
                    found.append(
                        {
                            "symbol": symbol,
                            "interval": str(iv),
                            "start": render.iso(gap.start),
                            "end": render.iso(gap.end),
                            "missing_bars": gap.bars,
                        }
                    )
    if empty and (asked or len(empty) == len(chosen) * len(intervals)):
        first = empty[0].split()[0]
        raise NoDataError(
            f"nothing stored for {', '.join(empty)}: no history to look for gaps in",
            hint=f"run `marketdata ingest --symbols {first}` first",
        )
    if empty:
        render.note(f"nothing stored for {', '.join(empty)} (not checked)")
    if json:
        render.emit_json(found)
        return
    if not found:
        checked = len(chosen) * len(intervals) - len(empty)
        render.note(f"no gaps in the stored history of {checked} pair(s)")
        return
    render.table(
        None,
        ["symbol", "interval", "start", "end", "missing bars"],
        [tuple(g.values()) for g in found],
        right=("missing bars",),
    )
