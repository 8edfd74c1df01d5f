"""`marketdata providers list|check` and `marketdata verify`."""

from __future__ import annotations

from typing import Annotated

import typer

from marketdata.cli import render
from marketdata.cli.options import Json
from marketdata.cli.state import build_app

app = typer.Typer(
    help="Data providers: what they serve and whether they answer.", no_args_is_help=True
)


def register(root: typer.Typer) -> None:
    """Add root-level commands of this module."""


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
        ["name", "intervals", "rows/request", "rate limit", "base URL"],
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
        right=("rows/request",),
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
