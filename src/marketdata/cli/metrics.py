"""`marketdata metrics`: run history and freshness as a table, JSON or Prometheus text."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from marketdata.cli import render
from marketdata.cli.options import Json, StoredSymbols, parse_symbol_flags
from marketdata.cli.state import build_app

if TYPE_CHECKING:
    from marketdata.run_metrics import MetricsReport, RunStats

BAR_WIDTH = 40


class Format(StrEnum):
    """What `metrics` prints on stdout."""

    TABLE = "table"
    JSON = "json"
    PROMETHEUS = "prometheus"


def register(app: typer.Typer) -> None:
    """Add the command to the root app."""
    app.command("metrics")(metrics)


def metrics(
    since: Annotated[
        str | None,
        typer.Option(
            help="Only runs started since then: a duration back from now (7d, 12h) or a date "
            "(default: all history).",
            show_default=False,
        ),
    ] = None,
    symbols: StoredSymbols = None,
    format: Annotated[
        Format | None,
        typer.Option(
            "--format",
            help="table (default on stdout), json, or prometheus (text exposition format).",
            show_default=False,
        ),
    ] = None,
    textfile: Annotated[
        Path | None,
        typer.Option(
            "--textfile",
            help="Write the Prometheus text to this file atomically (for node_exporter's "
            "textfile collector); stdout stays quiet unless --format or --json is given.",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    json: Json = False,
) -> None:
    """Run counters, a duration histogram (p50/p95/p99), rows, last success and failure by
    trigger and provider, from the run history; and each market's freshness."""
    from marketdata.domain import parse_since
    from marketdata.run_metrics import metrics_report, prometheus_text, write_textfile

    ctx = build_app()
    chosen = parse_symbol_flags(symbols) or None
    start = parse_since(since, ctx.clock()) if since else None
    report = metrics_report(ctx, since=start, symbols=chosen)
    shown = Format.JSON if json else format
    if textfile is not None:
        write_textfile(report, textfile)
        render.note(f"wrote {textfile}")
        if shown is None:
            return
    if shown is Format.JSON:
        render.emit_json(report.as_dict())
    elif shown is Format.PROMETHEUS:
        print(prometheus_text(report), end="")
    else:
        _render_tables(report)


def _render_tables(report: MetricsReport) -> None:
    from marketdata.domain import format_duration
    from marketdata.run_metrics import QUANTILES

    scope = f"since {render.fmt(report.since)}" if report.since else "all history"
    scopes: list[tuple[str, RunStats]] = [("all runs", report.total)]
    scopes += [(f"trigger {k}", v) for k, v in sorted(report.by_trigger.items())]
    scopes += [(f"provider {k}", v) for k, v in sorted(report.by_provider.items())]
    numbers = [
        "success",
        "partial",
        "failure",
        "interrupted",
        "rows written",
        "p50 ms",
        "p95 ms",
        "p99 ms",
    ]
    render.table(
        f"runs ({scope})",
        ["scope", *numbers, "last success", "last failure"],
        [
            (
                name,
                *(s.counts.get(status, 0) for status in numbers[:4]),
                s.rows_written,
                *(s.quantiles.get(q) for q in QUANTILES),
                s.last_success,
                s.last_failure,
            )
            for name, s in scopes
        ],
        right=numbers,
    )
    _render_histogram(report.total)
    if not report.freshness:
        render.note("no candles stored yet")
        return
    render.table(
        f"freshness (stale beyond ALERT_STALE_AFTER = {format_duration(report.stale_after)})",
        ["symbol", "interval", "newest", "age", "staleness", "state"],
        [
            (
                f.symbol,
                f.interval,
                f.newest,
                format_duration(f.age_seconds),
                format_duration(f.staleness_seconds),
                f.state,
            )
            for f in report.freshness
        ],
        right=("age", "staleness"),
    )


def _render_histogram(stats: RunStats) -> None:
    """Runs per duration bucket, drawn as bars (each bucket's own count, not cumulative)."""
    from marketdata.run_metrics import DURATION_BUCKETS_MS

    if not stats.durations:
        render.note("no finished runs recorded")
        return
    cumulative = [*stats.buckets, stats.durations]
    counts = [n - (cumulative[i - 1] if i else 0) for i, n in enumerate(cumulative)]
    labels = [f"<= {b:,.0f}" for b in DURATION_BUCKETS_MS] + [f"> {DURATION_BUCKETS_MS[-1]:,.0f}"]
    # leave out the empty tails so the bars that matter are what is shown
    first = next(i for i, n in enumerate(counts) if n)
    last = max(i for i, n in enumerate(counts) if n)
    peak = max(counts)
    render.table(
        f"run duration (ms): {stats.durations:,} runs, sum {stats.duration_sum:,.0f} ms",
        ["duration ms", "runs", "share"],
        [(labels[i], counts[i], _bar(counts[i], peak)) for i in range(first, last + 1)],
        right=("runs",),
    )


def _bar(count: int, peak: int) -> str:
    eighths = round(count / peak * BAR_WIDTH * 8) if peak else 0
    full, part = divmod(eighths, 8)
    bar = "█" * full + ("" if not part else " ▏▎▍▌▋▊▉"[part])
    return bar or ("▏" if count else "")
