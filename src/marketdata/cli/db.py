"""`marketdata db ...`: migrations and a health check of the database."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from marketdata.cli import render
from marketdata.cli.state import build_app

if TYPE_CHECKING:
    from marketdata.context import AppContext
    from marketdata.storage.retention import Pruned
    from marketdata.storage.table_stats import CandleStats, TableStats

app = typer.Typer(
    help="Database schema and upkeep: migrate, inspect, check, size, prune, maintain.",
    no_args_is_help=True,
)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]


@app.command()
def upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    json: JsonFlag = False,
) -> None:
    """Apply migrations up to REVISION (default: the newest); says when the stored indicators
    need `marketdata analytics rebuild`.

    Example: marketdata db upgrade
    """
    from marketdata.storage import migrate

    ctx = build_app()
    before = _current(ctx, missing_is_base=True)  # upgrade is how a new file is made
    migrate.upgrade(ctx.engine(migrate=False), ctx.target, revision)
    after = _current(ctx)
    rebuild = migrate.rebuild_needed(ctx.engine(migrate=False), ctx.target, before)
    if json:
        render.emit_json(_moved(ctx, before, after, rebuild=rebuild is not None))
    render.note(f"database {ctx.target.shown} is at {after}")
    if rebuild:
        render.note(rebuild)


@app.command()
def downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision; 'base' drops every table.")],
    yes: Annotated[
        bool,
        typer.Option(
            "--yes", "-y", help="Drop stored data without asking (required when not at a terminal)."
        ),
    ] = False,
    json: JsonFlag = False,
) -> None:
    """Revert migrations down to REVISION, dropping the tables and columns later migrations
    added and the data in them. Asks first (or needs --yes) when data is stored.

    Example: marketdata db downgrade 0003 --yes
    """
    from marketdata.storage import migrate
    from marketdata.storage.contents import stored_rows
    from marketdata.storage.engine import connect

    ctx = build_app()
    before = _current(ctx)
    if before is not None and before != revision:
        with connect(ctx.engine(migrate=False), ctx.target) as conn:
            rows = {k: v for k, v in stored_rows(conn).items() if v}
        if rows:
            held = ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in rows.items())
            render.confirm(
                f"downgrading {ctx.target.shown} from {before} to {revision} drops "
                f"tables or columns of a database holding {held}",
                yes=yes,
            )
    migrate.downgrade(ctx.engine(migrate=False), ctx.target, revision)
    after = _current(ctx)
    if json:
        render.emit_json(_moved(ctx, before, after, rebuild=False))
    render.note(f"database {ctx.target.shown} is at {after or 'base (no tables)'}")
    if ctx.target.dialect == "sqlite":
        render.note("it stays there until `marketdata db upgrade` (commands will not upgrade it)")


@app.command()
def current(json: JsonFlag = False) -> None:
    """Print the revision the database is at."""
    ctx = build_app()
    revision = _current(ctx)
    if json:
        render.emit_json({"database": ctx.target.shown, "current": revision})
    else:
        render.out.print(revision or "base (no tables)")


@app.command()
def history(json: JsonFlag = False) -> None:
    """List every migration, newest first."""
    from marketdata.storage import migrate

    revisions = migrate.history()
    if json:
        render.emit_json([r.__dict__ for r in revisions])
        return
    render.table(
        None,
        ["revision", "down revision", "is head", "message"],
        [
            (r.revision, r.down_revision or "base", "yes" if r.is_head else "", r.message)
            for r in revisions
        ],
    )


@app.command()
def check(json: JsonFlag = False) -> None:
    """Connect, show the server, its version and the revisions; creates nothing. Exit 75 when
    unreachable, 2 when the database (or SQLite file) or role does not exist, 1 when
    migrations are pending or the schema drifted from the models."""
    from marketdata.storage.health import database_health

    ctx = build_app()
    health = database_health(ctx.engine(migrate=False), ctx.target)
    if json:
        render.emit_json(health.__dict__)
    else:
        render.table(
            None,
            ["database", "server", "current", "head", "pending", "drift"],
            [
                (
                    health.database,
                    health.server,
                    health.current or "base",
                    health.head,
                    ",".join(health.pending) or "none",
                    health.drift or "none",
                )
            ],
        )
    health.raise_for_problems()


@app.command()
def shell(
    args: Annotated[
        list[str] | None,
        typer.Argument(help="Passed on to psql or sqlite3, after --.", show_default=False),
    ] = None,
) -> None:
    """Open psql (or sqlite3 for the embedded file) on the configured database; a password
    goes to psql through a temporary passfile, never on its command line."""
    from marketdata.storage.shell import open_shell

    ctx = build_app()
    raise typer.Exit(open_shell(ctx.target, args or ()))


def _moved(
    ctx: AppContext, before: str | None, after: str | None, *, rebuild: bool
) -> dict[str, object]:
    """What `db upgrade|downgrade --json` prints: revisions as `db current` names them."""
    return {
        "database": ctx.target.shown,
        "previous": before,
        "current": after,
        "analytics_rebuild_needed": rebuild,
    }


@app.command()
def stats(json: JsonFlag = False) -> None:
    """Rows, oldest and newest candle, table and index bytes per interval and partition.

    Rows are counted exactly (every row is read once); sizes come from the catalog.
    """
    from marketdata.maintenance import stats as candle_stats

    result = candle_stats(build_app())
    if json:
        render.emit_json(_stats_data(result))
        return
    columns = ["rows", "oldest", "newest", "table bytes", "index bytes", "bytes per candle"]
    for title, key, rows in (
        ("candles per interval", "interval", result.intervals),
        (f"tables ({result.backend}, sizes from {result.source})", "table", result.tables),
    ):
        render.table(
            title,
            [key, *columns],
            [
                (
                    t.name,
                    f"{t.rows:,}",
                    _when(t.oldest),
                    _when(t.newest),
                    _size(t.table_bytes),
                    _size(t.index_bytes),
                    _per_candle(t.bytes_per_candle),
                )
                for t in rows
            ],
            right=["rows", "table bytes", "index bytes", "bytes per candle"],
        )


@app.command()
def prune(
    interval: Annotated[
        str | None,
        typer.Option(
            "--interval",
            "-i",
            help="Only this interval (default: every interval with RETENTION_<INTERVAL> set).",
            show_default=False,
        ),
    ] = None,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            help="Remove candles older than this (90d, 26w); needs --interval "
            "(default: RETENTION_<INTERVAL>).",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would go; remove nothing.")
    ] = False,
    json: JsonFlag = False,
) -> None:
    """Remove candles older than their retention (RETENTION_<INTERVAL>).

    Whole partitions are dropped on PostgreSQL, a DELETE runs only inside the partition the
    cutoff falls in (SQLite: one DELETE); newer candles are never touched.
    """
    from marketdata import maintenance
    from marketdata.domain import Interval, parse_duration

    chosen = Interval.parse(interval) if interval is not None else None
    age = parse_duration(older_than, name="--older-than") if older_than is not None else None
    done = maintenance.prune(build_app(), chosen, age, dry_run=dry_run)
    if json:
        render.emit_json({"dry_run": dry_run, "intervals": [_pruned_data(p) for p in done]})
        return
    if not done:
        render.note("no retention is set (RETENTION_<INTERVAL>): nothing to prune")
        return
    verb = "would remove" if dry_run else "removed"
    for p in done:
        render.out.print(
            f"{p.interval}: {verb} {p.rows:,} candles older than {render.iso(p.cutoff)} "
            f"({len(p.dropped)} partitions dropped, {p.rows_deleted:,} rows deleted), "
            f"{_size(p.bytes_freed)} freed"
        )


@app.command()
def maintain(json: JsonFlag = False) -> None:
    """Create the partitions the next writes need; vacuum tables with many dead rows.

    Partitions for this and the next period of every interval (PostgreSQL); VACUUM
    (ANALYZE) of candle tables where over 10% of the rows are dead; PRAGMA optimize on SQLite.
    """
    from marketdata.maintenance import maintain as run_maintenance

    done = run_maintenance(build_app())
    if json:
        render.emit_json(done.__dict__)
        return
    if not done.partitioned:
        render.note(f"{done.backend}: candles are not partitioned; nothing to maintain")
        return
    made = ", ".join(done.created) or "none (every partition needed exists)"
    render.out.print(f"partitions created: {made}")
    render.out.print(f"vacuumed and analysed: {', '.join(done.vacuumed) or 'none needed'}")


def _stats_data(result: CandleStats) -> dict[str, object]:
    def one(t: TableStats) -> dict[str, object]:
        return {
            "name": t.name,
            "interval": t.interval,
            "rows": t.rows,
            "oldest": None if t.oldest is None else render.iso(t.oldest),
            "newest": None if t.newest is None else render.iso(t.newest),
            "table_bytes": t.table_bytes,
            "index_bytes": t.index_bytes,
            "bytes_per_candle": t.bytes_per_candle,
            **({"start": render.iso(t.start)} if t.start is not None else {}),
            **({"end": render.iso(t.end)} if t.end is not None else {}),
        }

    return {
        "backend": result.backend,
        "partitioned": result.partitioned,
        "source": result.source,
        "total": one(result.total),
        "intervals": [one(t) for t in result.intervals],
        "tables": [one(t) for t in result.tables],
    }


def _pruned_data(p: Pruned) -> dict[str, object]:
    return {
        "interval": p.interval.value,
        "cutoff": render.iso(p.cutoff),
        "rows": p.rows,
        "rows_deleted": p.rows_deleted,
        "bytes_freed": p.bytes_freed,
        "partitions_dropped": [d.__dict__ for d in p.dropped],
    }


def _when(epoch: int | None) -> str:
    from datetime import UTC, datetime

    return "" if epoch is None else datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M")


def _size(value: int | None) -> str:
    if value is None:  # SQLite sizes its one table, not each interval
        return ""
    size = float(value)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size:,.1f} TB"  # pragma: no cover - the loop returns at GB


def _per_candle(value: float | None) -> str:
    return "" if value is None else f"{value:,.1f}"


def _current(ctx: AppContext, *, missing_is_base: bool = False) -> str | None:
    from marketdata.storage.engine import connect, missing_file_error, sqlite_file_missing
    from marketdata.storage.migrate import stored_revision

    if sqlite_file_missing(ctx.target):  # reading a revision must not create the file
        if ctx.target.embedded or missing_is_base:
            return None  # not made yet: nothing applied
        raise missing_file_error(ctx.target)
    with connect(ctx.engine(migrate=False), ctx.target) as conn:
        return stored_revision(conn)
