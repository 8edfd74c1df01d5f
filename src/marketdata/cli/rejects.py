"""`marketdata rejects [list|purge]`: the candles that failed validation, and their cleanup."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from marketdata.cli import render
from marketdata.cli.options import Json, StoredSymbols, parse_symbol_flags
from marketdata.cli.state import build_app

if TYPE_CHECKING:
    from marketdata.storage.rejects import RejectRow

app = typer.Typer(
    help="Candles that failed validation, one row per provider, pair, time and reason, with "
    "how often and when they were last seen. Without a subcommand: `rejects list`.",
    invoke_without_command=True,
)

Since = Annotated[
    str | None,
    typer.Option(
        help="Only those seen since then: a duration back from now (7d, 12h) or a date.",
        show_default=False,
    ),
]
Limit = Annotated[
    int,
    typer.Option("--last", "-n", "--limit", help="Show at most this many, newest first.", min=1),
]
COLUMNS = (
    *("symbol", "interval", "provider", "ts", "open", "high", "low", "close", "volume"),
    *("reason", "count", "last seen", "run id"),
)


@app.callback()
def rejects(
    ctx: typer.Context,
    symbols: StoredSymbols = None,
    since: Since = None,
    limit: Limit = 100,
    json: Json = False,
) -> None:
    """List rejected candles (the same as `rejects list`)."""
    if ctx.invoked_subcommand is None:
        list_(symbols, since, limit, json)


@app.command("list")
def list_(
    symbols: StoredSymbols = None, since: Since = None, limit: Limit = 100, json: Json = False
) -> None:
    """List rejected candles, the most recently seen first, with the reason and a count."""
    from marketdata.domain import parse_since
    from marketdata.storage.engine import connect
    from marketdata.storage.rejects import list_rejects

    ctx = build_app()
    start = parse_since(since, ctx.clock()) if since else None
    with connect(ctx.engine(), ctx.target) as conn:
        rows = list_rejects(conn, parse_symbol_flags(symbols), limit=limit, since=start)
    data = [_record(r) for r in rows]
    if json:
        render.emit_json(data)
        return
    if not data:
        render.note("no rejected candles" + (f" seen since {since}" if since else ""))
        return
    render.table(
        None,
        COLUMNS,
        [tuple(d[name.replace(" ", "_")] for name in COLUMNS) for d in data],
        right=("open", "high", "low", "close", "volume", "count", "run id"),
    )


def _record(r: RejectRow) -> dict[str, object]:
    return {
        "symbol": r.symbol,
        "interval": r.interval,
        "provider": r.provider,
        "ts": render.iso(r.ts),
        "open": r.open,
        "high": r.high,
        "low": r.low,
        "close": r.close,
        "volume": r.volume,
        "reason": r.reason,
        "count": r.count,
        "first_seen": r.first_seen,
        "last_seen": r.last_seen,
        "run_id": r.run_id,
    }


@app.command()
def purge(
    before: Annotated[
        str,
        typer.Option(
            help="Delete those last seen before then: a duration back from now (30d) or a date."
        ),
    ],
    symbols: StoredSymbols = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Delete without asking (required when piped).")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would go; delete nothing.")
    ] = False,
    json: Json = False,
) -> None:
    """Delete rejected candles last seen before a time (asks first, or needs --yes)."""
    from marketdata.domain import parse_since
    from marketdata.storage.engine import connect
    from marketdata.storage.rejects import purge_rejects

    ctx = build_app()
    cutoff = parse_since(before, ctx.clock(), name="--before")
    chosen = parse_symbol_flags(symbols)
    with connect(ctx.engine(), ctx.target) as conn:
        count = purge_rejects(conn, cutoff, chosen, dry_run=True)
        if count and not dry_run:
            render.confirm(f"delete {count} rejected candles last seen before {before}", yes=yes)
            count = purge_rejects(conn, cutoff, chosen)
            conn.commit()
    if json:
        render.emit_json({"deleted": 0 if dry_run else count, "matched": count, "dry_run": dry_run})
        return
    verb = "would delete" if dry_run else "deleted"
    render.note(f"{verb} {count} rejected candles last seen before {render.fmt(cutoff)}")
