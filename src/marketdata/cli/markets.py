"""`marketdata markets ...`: the market list kept in the database."""

from __future__ import annotations

from typing import Annotated

import typer

from marketdata.cli import render
from marketdata.cli.options import Json
from marketdata.cli.state import build_app

app = typer.Typer(help="The market list: which symbols are ingested.", no_args_is_help=True)

SymbolArg = Annotated[str, typer.Argument(help="Canonical symbol, e.g. BTC-USD or AAPL.")]


@app.command("list")
def list_(json: Json = False) -> None:
    """List markets with their state, asset class and provider symbols."""
    from marketdata.storage.engine import connect
    from marketdata.storage.markets import list_markets

    ctx = build_app()
    with connect(ctx.engine(), ctx.target) as conn:
        rows = list_markets(conn)
    disabled = set(ctx.settings.ingestion_disabled_symbols)
    data = [
        {
            **m.__dict__,
            "enabled": m.enabled and m.symbol not in disabled,
            "calendar": m.trading_calendar,
        }
        for m in rows
    ]
    if json:
        render.emit_json(data)
        return
    if not data:
        render.note("no markets yet: add one with `marketdata markets add SYMBOL`")
        return
    render.table(
        None,
        ["symbol", "enabled", "asset class", "calendar", "provider symbols", "note"],
        [
            (
                d["symbol"],
                "yes" if d["enabled"] else "no",
                d["asset_class"],
                d["calendar"],
                ", ".join(f"{k}={v}" for k, v in d["provider_symbols"].items()),
                d["note"],
            )
            for d in data
        ],
    )


@app.command()
def add(
    symbol: SymbolArg,
    asset_class: Annotated[
        str | None,
        typer.Option(
            "--asset-class", help="crypto, equity or fx (default: guessed from the symbol)."
        ),
    ] = None,
    calendar: Annotated[
        str | None,
        typer.Option(
            "--calendar",
            help="Trading calendar for gaps: 24/7, 24/5 or an exchange code such as XNYS or "
            "XLON (default: 24/7 for crypto, 24/5 for fx, the ticker suffix's exchange or "
            "XNYS for equities).",
        ),
    ] = None,
    provider_symbol: Annotated[
        list[str] | None,
        typer.Option(
            "--provider-symbol",
            help="A provider's own name for it, as NAME=ID (e.g. binance=BTCUSDT); repeatable.",
        ),
    ] = None,
    note: Annotated[str | None, typer.Option(help="Free text shown in `markets list`.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be stored.")] = False,
    json: Json = False,
) -> None:
    """Add a market (enabled), or update its asset class, calendar and provider symbols."""
    from marketdata.markets import add_market

    ctx = build_app()
    market, new = add_market(
        ctx, symbol, asset_class, provider_symbol or [], note, calendar=calendar, dry_run=dry_run
    )
    verb = (
        "would add"
        if dry_run and new
        else "would update"
        if dry_run
        else "added"
        if new
        else "updated"
    )
    if json:
        render.emit_json(
            {
                "symbol": market.symbol,
                "action": "added" if new else "updated",
                "dry_run": dry_run,
                "enabled": market.enabled,
                "asset_class": market.asset_class,
                "calendar": market.trading_calendar,
                "provider_symbols": market.provider_symbols,
                "note": market.note,
            }
        )
        return
    render.note(f"{verb} {market.symbol} ({market.asset_class}, {market.trading_calendar})")


@app.command()
def disable(symbol: SymbolArg, json: Json = False) -> None:
    """Stop ingesting a market (runs skip it with a note) until it is enabled again."""
    _set(symbol, enabled=False, json=json)


@app.command()
def enable(symbol: SymbolArg, json: Json = False) -> None:
    """Resume ingesting a disabled market."""
    _set(symbol, enabled=True, json=json)


def _set(symbol: str, *, enabled: bool, json: bool) -> None:
    from marketdata.markets import set_market_enabled

    ctx = build_app()
    canonical = set_market_enabled(ctx, symbol, enabled)
    if json:
        render.emit_json({"symbol": canonical, "enabled": enabled})
        return
    render.note(f"{canonical} {'enabled' if enabled else 'disabled'}")
