"""`marketdata providers list|check` and `marketdata verify`."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated

import typer

from marketdata.cli import render
from marketdata.cli.options import Json, Symbols, parse_symbol_flags
from marketdata.cli.state import build_app

if TYPE_CHECKING:
    from marketdata.verify import VerifyReport

# Human output lists at most this many mismatching values and one-sided runs per symbol.
SHOWN_MISMATCHES = 50
SHOWN_RUNS = 8

VERIFY_HELP = (
    "Compare stored candles with the same window fetched fresh from another provider.\n\n"
    "Reports every open, high, low, close or volume value beyond the tolerance (ours, theirs, "
    "relative difference) and the bars only one side has. The window ends with the bar open "
    "now, which is not compared: it is still forming.\n\n"
    "Exit 0 when everything agrees; exit 1 after the report when anything disagrees (so "
    "scripts can alert) or the provider fails; exit 2 on bad input or when nothing is stored "
    "for a symbol. With --json, `diff` is a fraction (0.01 is 1%)."
)

app = typer.Typer(
    help="Data providers: what they serve and whether they answer.", no_args_is_help=True
)


def register(root: typer.Typer) -> None:
    """Add root-level commands of this module."""
    root.command("verify", help=VERIFY_HELP)(verify)


@app.command("list")
def list_(json: Json = False) -> None:
    """List providers: intervals, rows per request, rate limit and base URL."""
    from marketdata.providers.catalog import describe_providers

    rows = describe_providers(build_app())
    if json:
        render.emit_json(rows)
        return
    render.table(
        None,
        ["name", "intervals", "max rows per request", "rate limit", "base url"],
        [
            (
                r["name"],
                ",".join(r["intervals"]),
                r["max_rows_per_request"],
                r["rate_limit"],
                r["base_url"],
            )
            for r in rows
        ],
        right=("max rows per request",),
    )


@app.command()
def check(
    name: Annotated[
        str | None, typer.Argument(help="One provider (default: the configured chain).")
    ] = None,
    json: Json = False,
) -> None:
    """Send one cheap request to each provider; exit 1 when any is down."""
    from marketdata.errors import MarketdataError
    from marketdata.providers.catalog import check_providers

    results = check_providers(build_app(), [name] if name else None)
    if json:
        render.emit_json(results)
    else:
        render.table(
            None,
            ["provider", "status", "latency ms", "error"],
            [(r["provider"], r["status"], r["latency_ms"], r["error"]) for r in results],
            right=("latency ms",),
        )
    down = [r["provider"] for r in results if r["status"] != "up"]
    if down:
        raise MarketdataError(f"provider(s) down: {', '.join(down)}")


def verify(
    against: Annotated[
        str,
        typer.Option(
            "--against", "-a", help="The provider to fetch the same window from, e.g. kraken."
        ),
    ],
    symbols: Symbols = None,
    interval: Annotated[
        str, typer.Option("--interval", "-i", help="Bar interval: 1m, 5m, 15m, 1h, 6h or 1d.")
    ] = "1d",
    lookback_days: Annotated[
        int, typer.Option("--lookback-days", help="Days back from now to compare (1 to 36500).")
    ] = 30,
    tolerance: Annotated[
        str,
        typer.Option(
            "--tolerance",
            help="Largest relative difference |a-b|/max(|a|,|b|) allowed for open, high, low "
            "and close: a percentage (0.5%) or a fraction (0.005).",
        ),
    ] = "0.5%",
    volume_tolerance: Annotated[
        str,
        typer.Option(
            "--volume-tolerance",
            help="The same for volume; looser by default because venues count their own "
            "trades, so volumes legitimately differ more than prices.",
        ),
    ] = "5%",
    json: Json = False,
) -> None:
    """Compare stored candles with the same window fetched fresh from another provider."""
    from marketdata.domain import Interval
    from marketdata.verify import parse_tolerance, raise_on_disagreement
    from marketdata.verify import verify as run_verify

    reports = run_verify(
        build_app(),
        parse_symbol_flags(symbols),
        Interval.parse(interval),
        against,
        lookback_days,
        parse_tolerance(tolerance, name="--tolerance"),
        parse_tolerance(volume_tolerance, name="--volume-tolerance"),
    )
    if json:
        render.emit_json([r.as_dict() for r in reports])
    else:
        for report in reports:
            _render_report(report)
    raise_on_disagreement(reports)


def _render_report(report: VerifyReport) -> None:
    ours = ",".join(report.ours)
    title = (
        f"{report.symbol} {report.interval}: stored ({ours}) vs {report.against}, "
        f"bars {render.iso(report.window.start)} .. "
        f"{render.iso(report.still_open - report.interval.seconds)}"
    )
    render.out.print(render.escape(title), soft_wrap=True)
    if report.mismatches:
        shown = report.mismatches[:SHOWN_MISMATCHES]
        render.table(
            None,
            ["ts", "field", "ours", "theirs", "diff %"],
            [
                (render.iso(m.ts), m.field, _value(m.ours), _value(m.theirs), _percent(m.diff))
                for m in shown
            ],
            right=("ours", "theirs", "diff %"),
        )
        if len(report.mismatches) > len(shown):
            render.note(f"and {len(report.mismatches) - len(shown)} more (see --json)")
    limits = (
        f"tolerance {report.tolerance * 100:.4g}% (volume {report.volume_tolerance * 100:.4g}%)"
    )
    render.out.print(render.escape(f"{report.summary()}; {limits}"), soft_wrap=True)
    for label, stamps in (
        ("only in ours", report.only_ours),
        (f"only in {report.against}", report.only_theirs),
    ):
        if stamps:
            runs = _runs(stamps, report.interval.seconds)
            text = ", ".join(runs[:SHOWN_RUNS])
            if len(runs) > SHOWN_RUNS:
                text += f", and {len(runs) - SHOWN_RUNS} more ranges (see --json)"
            render.out.print(render.escape(f"{label} ({len(stamps)}): {text}"), soft_wrap=True)


def _runs(stamps: tuple[int, ...], step: int) -> list[str]:
    """Consecutive bars collapsed into 'first .. last (n bars)' so long lists stay short."""
    runs: list[list[int]] = []
    for ts in stamps:
        if runs and ts - runs[-1][-1] == step:
            runs[-1].append(ts)
        else:
            runs.append([ts])
    shown = []
    for run in runs:
        if len(run) == 1:
            shown.append(render.iso(run[0]))
        else:
            shown.append(f"{render.iso(run[0])} .. {render.iso(run[-1])} ({len(run)} bars)")
    return shown


def _percent(diff: float) -> str:
    return "" if math.isnan(diff) else f"{diff * 100:.3f}"


def _value(number: float) -> str:
    """Every digit the value has (a table's rounding could hide the very difference shown)."""
    return "" if math.isnan(number) else repr(number)
