"""`marketdata db ...`: migrations and a health check of the database."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from marketdata.cli import render
from marketdata.cli.state import build_app

if TYPE_CHECKING:
    from marketdata.context import AppContext

app = typer.Typer(help="Database schema: migrate, inspect, check.", no_args_is_help=True)

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


def _current(ctx: AppContext, *, missing_is_base: bool = False) -> str | None:
    from marketdata.storage.engine import connect, missing_file_error, sqlite_file_missing
    from marketdata.storage.migrate import stored_revision

    if sqlite_file_missing(ctx.target):  # reading a revision must not create the file
        if ctx.target.embedded or missing_is_base:
            return None  # not made yet: nothing applied
        raise missing_file_error(ctx.target)
    with connect(ctx.engine(migrate=False), ctx.target) as conn:
        return stored_revision(conn)
