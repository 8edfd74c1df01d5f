"""`show`, `compare` and `analytics rebuild`: reading the stored candles and derived data."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import TYPE_CHECKING, Annotated, Any

import typer

from marketdata.cli import render
from marketdata.cli.options import Json
from marketdata.cli.state import build_app

if TYPE_CHECKING:
    from rich.text import Text

    from marketdata.analytics.aggregates import AggregateBars
    from marketdata.analytics.comparisons import Comparison
    from marketdata.domain import Interval
    from marketdata.reports import RebuiltPair, ShowReport

app = typer.Typer(help="Derived data stored beside the candles.", no_args_is_help=True)

SymbolArg = Annotated[str, typer.Argument(help="Canonical symbol, e.g. BTC-USD or AAPL.")]
SymbolsArg = Annotated[
    list[str], typer.Argument(help="Two or more symbols (comma lists allowed).", show_default=False)
]
RebuildSymbols = Annotated[
    list[str] | None,
    typer.Option(
        "--symbols",
        "-s",
        help="Only these symbols, comma-separated or repeated (default: every stored pair).",
        show_default=False,
    ),
]


# Two tables, so that each fits a normal terminal: the candles, then their indicators.
CANDLE_COLUMNS = ("open", "high", "low", "close", "volume")
INDICATOR_COLUMNS = (
    *("return", "log ret", "vol 7", "vol 30", "vol 90", "drawdown"),
    *("sma 20", "sma 50", "sma 200"),
)


def register(root: typer.Typer) -> None:
    """Add `show` and `compare` to the root app, and the `analytics` group."""
    root.command("show")(show)
    root.command("compare")(compare)
    root.add_typer(app, name="analytics")


def show(
    symbol: SymbolArg,
    interval: Annotated[
        str | None,
        typer.Option(
            "--interval", "-i", help="Bar interval: 1m 5m 15m 1h 6h 1d.", show_default="1d"
        ),
    ] = None,
    last: Annotated[
        int, typer.Option("--last", "-n", help="How many of the latest candles (or periods).")
    ] = 20,
    aggregate: Annotated[
        str | None,
        typer.Option(help="week or month: the daily candles rolled up.", show_default=False),
    ] = None,
    chart: Annotated[bool, typer.Option("--chart", help="Draw the close in the terminal.")] = False,
    volume: Annotated[
        bool, typer.Option("--volume", help="With --chart, draw volume too.")
    ] = False,
    json: Json = False,
) -> None:
    """The latest candles of a symbol with their indicators and ROI (or weekly/monthly bars)."""
    from marketdata import reports
    from marketdata.domain import Interval, parse_symbol

    ctx = build_app()
    bar = Interval.parse(interval or "1d")
    if aggregate is not None:
        _require_daily(bar)
        bars = reports.aggregates(ctx, symbol, aggregate, last)
        shown = parse_symbol(symbol)
        _render_aggregates(shown, aggregate, bars, json=json, chart=chart or volume, volume=volume)
        return
    report = reports.show(ctx, symbol, bar, last)
    if json:
        render.emit_json(_show_data(report))
        return
    _render_show(report, chart=chart or volume, volume=volume)


def compare(
    symbols: SymbolsArg,
    window: Annotated[
        int, typer.Option("--window", "-w", help="How many latest common daily returns.")
    ] = 30,
    benchmark: Annotated[
        str | None,
        typer.Option(
            help="Measure beta against this symbol (default: the first).", show_default=False
        ),
    ] = None,
    json: Json = False,
) -> None:
    """ROI, volatility, beta and correlation of symbols over their latest common daily returns."""
    from marketdata.reports import comparison_report

    report = comparison_report(build_app(), symbols, window, benchmark)
    if json:
        render.emit_json(
            {**_comparison_data(report.comparison), **_source(report.source, report.stored_at)}
        )
        return
    _render_comparison(report.comparison)


@app.command()
def rebuild(
    symbols: RebuildSymbols = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Compute and count; write nothing.")
    ] = False,
    json: Json = False,
) -> None:
    """Recompute the indicators of every stored pair in ANALYTICS_INTERVALS from its closes."""
    from marketdata.reports import rebuild_analytics

    ctx = build_app()
    done = rebuild_analytics(ctx, symbols, dry_run=dry_run)
    _render_rebuild(done, dry_run=dry_run, json=json, intervals=ctx.settings.analytics_intervals)
    locked = [p for p in done if p.locked]
    if locked:
        from marketdata.errors import PartialRunError

        raise PartialRunError(
            f"{len(locked)} of {len(done)} pairs were being ingested and were left alone",
            hint="run `marketdata analytics rebuild` again once the ingest is done",
        )


# ----------------------------------------------------------------------------------- rendering


def _require_daily(interval: Interval) -> None:
    from marketdata.errors import InputError

    if interval.seconds != 86_400:
        raise InputError(
            f"--aggregate rolls up daily candles, not {interval}", hint="drop --interval"
        )


def _show_data(report: ShowReport) -> dict[str, Any]:
    return {
        "symbol": report.symbol,
        "interval": report.interval.value,
        "candles": [{**row, "ts": render.iso(row["ts"])} for row in report.records()],
        "roi": report.roi,
        **_source(report.source, report.stored_at),
    }


def _source(source: str, stored_at: str | None) -> dict[str, Any]:
    """Where an answer came from ("cache" or "database"), and when cached values were stored."""
    return {"source": source, "cached_at": stored_at}


def _render_show(report: ShowReport, *, chart: bool, volume: bool) -> None:
    from rich.panel import Panel
    from rich.text import Text

    rows = report.records()
    daily = report.interval.seconds >= 86_400
    caption = " (indicators computed from stored closes)" if report.computed else ""
    render.table(
        f"{report.symbol} {report.interval}: latest {len(rows)} candles",
        ["ts", *CANDLE_COLUMNS],
        [(_when(r["ts"], daily), *(r[k] for k in CANDLE_COLUMNS)) for r in rows],
        right=CANDLE_COLUMNS,
    )
    render.table(
        f"indicators{caption} (volatility annualised)",
        ["ts", *INDICATOR_COLUMNS],
        [
            (
                _when(r["ts"], daily),
                *(_pct(r[k]) for k in ("return", "log_return")),
                *(_pct(r[k], digits=1) for k in ("volatility_7", "volatility_30")),
                *(_pct(r[k], digits=1) for k in ("volatility_90", "drawdown")),
                *(_short(r[k]) for k in ("sma_20", "sma_50", "sma_200")),
            )
            for r in rows
        ],
        right=INDICATOR_COLUMNS,
    )
    line = Text()
    for key, value in report.roi.items():
        line.append(f"{key} ", style="bold")
        line.append(_pct(value, signed=True) or "n/a", style=_sign_style(value))
        line.append("   ")
    as_of = _when(rows[-1]["ts"], daily)
    render.out.print(Panel(line, title=f"ROI as of {as_of}", title_align="left", expand=False))
    if chart:
        closes = [r["close"] for r in rows]
        volumes = [r["volume"] for r in rows] if volume else None
        _draw(closes, volumes, _when(rows[0]["ts"], daily), as_of)


def _render_aggregates(
    symbol: str, period: str, bars: AggregateBars, *, json: bool, chart: bool, volume: bool
) -> None:
    from marketdata.reports import aggregate_records

    rows = aggregate_records(bars)
    for row in rows:
        row["period_start"] = render.iso(row["period_start"])
    if json:
        render.emit_json({"symbol": symbol, "period": period, "periods": rows})
        return
    names = ["period_start", "open", "high", "low", "close", "volume", "vwap", "bars", "return"]
    render.table(
        f"{symbol}: {period}ly bars from daily candles",
        [n.replace("_", " ") for n in names],
        [(r["period_start"][:10], *(r[n] for n in names[1:-1]), _pct(r["return"])) for r in rows],
        right=tuple(names[1:]),
    )
    if chart:
        volumes = [r["volume"] for r in rows] if volume else None
        first, latest = rows[0]["period_start"][:10], rows[-1]["period_start"][:10]
        _draw([r["close"] for r in rows], volumes, first, latest)


def _comparison_data(result: Comparison) -> dict[str, Any]:
    return {
        "window": result.window,
        "benchmark": result.benchmark,
        "symbols": list(result.symbols),
        "roi": result.roi,
        "volatility": result.volatility,
        "beta": result.beta,
        "relative_performance": result.relative_performance,
        "volatility_ratio": result.volatility_ratio,
        "correlation": result.correlation,
        "returns_used": result.returns_used,
    }


def _render_comparison(result: Comparison) -> None:

    if result.returns_used < result.window:
        render.note(f"only {result.returns_used} common daily returns (window {result.window})")
    render.table(
        f"last {result.returns_used} common daily returns, benchmark {result.benchmark}",
        ["symbol", "roi", "volatility", "beta", "relative performance", "volatility ratio"],
        [
            (
                s,
                _pct(result.roi[s], signed=True),
                _pct(result.volatility[s]),
                result.beta[s],
                _pct(result.relative_performance[s], signed=True),
                result.volatility_ratio[s],
            )
            for s in result.symbols
        ],
        right=("roi", "volatility", "beta", "relative performance", "volatility ratio"),
    )
    render.table(
        "correlation of daily log returns",
        ["symbol", *result.symbols],
        [
            (symbol, *(_heat(row[other]) for other in result.symbols))
            for symbol, row in result.correlation.items()
        ],
        right=result.symbols,
    )


def _render_rebuild(
    done: list[RebuiltPair], *, dry_run: bool, json: bool, intervals: Sequence[str]
) -> None:
    data: list[dict[str, Any]] = [
        {
            "symbol": p.symbol,
            "interval": p.interval,
            "rows": p.rows,
            "updated": p.updated,
            "status": "locked" if p.locked else "ok",
        }
        for p in done
    ]
    if json:
        render.emit_json({"dry_run": dry_run, "pairs": data})
        return
    if not data:
        render.note(
            f"nothing to rebuild: no stored pairs in ANALYTICS_INTERVALS ({','.join(intervals)})"
        )
        return
    render.table(
        None,
        ["symbol", "interval", "rows", "updated", "status"],
        [(d["symbol"], d["interval"], d["rows"], d["updated"], _locked(d["status"])) for d in data],
        right=("rows", "updated"),
    )
    rows, updated = sum(p.rows for p in done), sum(p.updated for p in done)
    if dry_run:
        render.note(f"dry run: {updated} of {rows} rows would be updated; nothing was written")
    else:
        render.note(f"{updated} of {rows} rows updated")


def _locked(status: str) -> str:
    return "locked by an ingest: left alone" if status == "locked" else status


# ------------------------------------------------------------------------------ small pieces


def _when(epoch: int, daily: bool) -> str:
    text = render.iso(epoch)
    return text[:10] if daily else text[:16] + "Z"  # ISO 8601 UTC, to the minute


def _pct(value: float | None, *, signed: bool = False, digits: int = 2) -> str:
    if value is None or not math.isfinite(value):
        return ""
    return f"{value * 100:+.{digits}f}%" if signed else f"{value * 100:.{digits}f}%"


def _short(value: float | None) -> str:
    """Five significant digits: moving averages are for reading trends, not prices."""
    if value is None or not math.isfinite(value):
        return ""
    return f"{value:,.5g}"


def _sign_style(value: float | None) -> str:
    if value is None or not math.isfinite(value) or value == 0:
        return "dim"
    return "green" if value > 0 else "red"


def _heat(value: float | None) -> Text:
    """A correlation cell: green for positive, red for negative, stronger with magnitude."""
    from rich.text import Text

    if value is None:
        return Text("n/a", style="dim")
    m = min(1.0, abs(value))
    target = (0, 200, 0) if value >= 0 else (220, 30, 30)
    r, g, b = (round(128 * (1 - m) + t * m) for t in target)
    return Text(f"{value:+.2f}", style=f"{'bold ' if m >= 0.7 else ''}rgb({r},{g},{b})")


# A block chart drawn with the eight lower-block characters, one cell = eight levels.
_BLOCKS = " ▁▂▃▄▅▆▇█"
CHART_HEIGHT = 10
VOLUME_HEIGHT = 4


def block_chart(
    values: Sequence[float], *, height: int, width: int, from_zero: bool = False
) -> list[str]:
    """Rows of a block chart, top first: one column per value (or per bucket of values).

    Values are scaled from their minimum (or from zero) to their maximum; NaN is left blank.
    """
    points = _fit(values, width, max if from_zero else _last_of)
    finite = [v for v in points if math.isfinite(v)]
    if not finite:
        return [" " * len(points)] * height
    lo = 0.0 if from_zero else min(finite)
    span = max(finite) - lo
    cells = height * 8
    # from the minimum, the lowest value still gets a sliver; from zero, zero is blank
    base = 0 if from_zero else 1
    levels = [_level(v, lo, span, cells, base) for v in points]
    repeat = max(1, min(3, width // max(1, len(points))))
    return [
        "".join(_BLOCKS[min(8, max(0, level - 8 * row))] * repeat for level in levels)
        for row in reversed(range(height))
    ]


def _level(value: float, lo: float, span: float, cells: int, base: int) -> int:
    if not math.isfinite(value):
        return 0
    if span <= 0:
        return cells // 2 if base else 0  # flat: mid-height; all-zero volume: blank
    return base + round((value - lo) / span * (cells - base))


def _fit(
    values: Sequence[float], width: int, pick: Callable[[Sequence[float]], float]
) -> list[float]:
    """At most `width` points: consecutive values bucketed, each bucket reduced by `pick`."""
    if len(values) <= width:
        return list(values)
    edges = [round(i * len(values) / width) for i in range(width + 1)]
    return [pick(values[a:b]) for a, b in pairwise(edges) if b > a]


def _last_of(values: Sequence[float]) -> float:
    # a close stands for the bucket it ends
    return values[-1]


def _draw(closes: list[float], volumes: list[float] | None, first: str, latest: str) -> None:
    from rich.text import Text

    gutter = 12
    width = max(10, render.out.width - gutter - 1)
    span = len(block_chart(closes, height=1, width=width)[0])
    lines = Text()
    for label, series, height, style, zero in (
        ("close", closes, CHART_HEIGHT, "cyan", False),
        ("volume", volumes, VOLUME_HEIGHT, "magenta", True),
    ):
        if series is None:
            continue
        rows = block_chart(series, height=height, width=width, from_zero=zero)
        finite = [v for v in series if math.isfinite(v)]
        if not finite:
            continue
        top, bottom = render.fmt(max(finite)), render.fmt(0.0 if zero else min(finite))
        for i, row in enumerate(rows):
            side = top if i == 0 else bottom if i == len(rows) - 1 else (label if i == 1 else "")
            lines.append(f"{side:>{gutter - 1}} ", style="dim")
            lines.append(row + "\n", style=style)
    gap = max(len(latest) + 1, span - len(first))
    lines.append(" " * gutter + first + latest.rjust(gap) + "\n", style="dim")
    render.out.print(lines, end="")
