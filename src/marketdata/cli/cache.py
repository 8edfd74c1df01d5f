"""`marketdata cache rebuild|invalidate|stats` and the `rebuild-cache` alias."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from marketdata.cli import render
from marketdata.cli.options import Json, StoredSymbols
from marketdata.cli.state import build_app

if TYPE_CHECKING:
    from marketdata.cache.maintenance import RebuildResult

app = typer.Typer(
    help="The cache of market values (Redis, or the disk cache): rebuild, invalidate, stats.",
    no_args_is_help=True,
)

Pattern = Annotated[
    str,
    typer.Option(
        "--pattern",
        help="Which keys: a glob after CACHE_PREFIX (SCAN MATCH syntax).",
    ),
]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Count; delete and write nothing.")]


def register(root: typer.Typer) -> None:
    """Add the `cache` group and the runbook's `rebuild-cache` alias to the root app."""
    root.add_typer(app, name="cache")
    root.command("rebuild-cache", help="Same as `marketdata cache rebuild`.")(rebuild)


@app.command()
def rebuild(
    pattern: Pattern = "market:*",
    symbols: StoredSymbols = None,
    dry_run: DryRun = False,
    json: Json = False,
) -> None:
    """Drop the matching market keys and refill them from the database (no provider calls)."""
    from marketdata.cache.maintenance import rebuild as rebuild_cache

    ctx = build_app()
    with _Bar(live=not json) as bar:
        result = rebuild_cache(ctx, pattern, symbols, dry_run=dry_run, progress=bar.update)
    _render_rebuild(result, json=json)


@app.command()
def invalidate(
    patterns: Annotated[
        list[str], typer.Argument(help="Globs of keys to drop, e.g. 'market:BTC-USD:*'.")
    ],
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Drop every market key without asking.")
    ] = False,
    dry_run: DryRun = False,
    json: Json = False,
) -> None:
    """Drop the keys matching each PATTERN (in batches: a large Redis is never blocked)."""
    from marketdata.cache.keys import is_everything
    from marketdata.cache.maintenance import invalidate as drop

    broad = [p for p in patterns if is_everything(p)]
    if broad and not yes and not dry_run:
        _confirm(broad)
    counts = drop(build_app(), patterns, dry_run=dry_run)
    if json:
        render.emit_json({"dry_run": dry_run, "deleted": counts})
        return
    verb = "would delete" if dry_run else "deleted"
    for pattern, count in counts.items():
        render.note(f"{pattern}: {verb} {count} keys")


@app.command()
def stats(json: Json = False) -> None:
    """Backend, market keys by kind, hits, misses, fallbacks, memory or disk in use."""
    from dataclasses import asdict

    from marketdata.cache.maintenance import stats as cache_stats

    result = cache_stats(build_app())
    if json:
        render.emit_json(asdict(result))
        return
    used = "" if result.used_bytes is None else f"{result.used_bytes / 1e6:,.1f} MB"
    space = "memory (whole server)" if result.backend == "redis" else "disk use"
    rows: list[tuple[str, Any]] = [
        ("backend", result.backend),
        ("location", result.location),
        *((f"keys: {kind}", count) for kind, count in result.keys.items()),
        ("hits", result.hits),
        ("misses", result.misses),
        ("fallbacks to disk", result.fallbacks),
        (space, used),
    ]
    render.table(None, ["", "value"], rows)


def _confirm(patterns: list[str]) -> None:
    from marketdata.errors import InputError

    shown = " ".join(patterns)
    if not render.err.is_terminal:
        raise InputError(
            f"{shown} drops every market key", hint="add --yes to confirm (no terminal to ask)"
        )
    if not typer.confirm(f"{shown} drops every market key; go on?", err=True):
        raise InputError("nothing deleted", hint="add --yes to skip this question")


def _render_rebuild(result: RebuildResult, *, json: bool) -> None:
    from dataclasses import asdict

    if json:
        render.emit_json(asdict(result))
        return
    if result.dry_run:
        render.note(
            f"dry run ({result.backend}): {result.deleted} keys would be deleted, "
            f"{result.pairs} pairs refilled; nothing changed"
        )
        return
    render.note(
        f"{result.backend} cache: {result.deleted} keys deleted, {result.written} written "
        f"for {result.pairs} pairs"
    )


class _Bar:
    """A progress bar on an interactive terminal; nothing elsewhere."""

    def __init__(self, *, live: bool) -> None:
        from marketdata.config import stderr_is_journal

        self.live = live and render.err.is_terminal and not stderr_is_journal()
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> _Bar:
        return self

    def update(self, done: int, total: int) -> None:
        if not self.live:
            return
        if self.bar is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self.bar = Progress(
                TextColumn("rebuilding"),
                BarColumn(),
                MofNCompleteColumn(),
                console=render.err,
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task("pairs", total=total)
        self.bar.update(self.task, completed=done)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
