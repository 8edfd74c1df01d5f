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
    """Apply migrations up to REVISION (default: the newest)."""
    from marketdata.storage import migrate

    ctx = build_app()
    before = _current(ctx)
    migrate.upgrade(ctx.engine(migrate=False), ctx.target, revision)
    _report_migration(ctx, before, json=json)


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
    """Revert migrations down to REVISION; asks first (or needs --yes) when data is stored."""
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
    _report_migration(ctx, before, json=json)


def _report_migration(ctx: AppContext, before: str | None, *, json: bool) -> None:
    after = _current(ctx)
    if json:
        render.emit_json({"database": ctx.target.shown, "from": before, "current": after})
        return
    render.note(f"database {ctx.target.shown} is at {after or 'base (no tables)'}")


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
    """Connect, show the server, its version and the revisions; exit 75 when unreachable,
    1 when migrations are pending or the schema drifted from the models."""
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


def _current(ctx: AppContext) -> str | None:
    from marketdata.storage.engine import connect
    from marketdata.storage.migrate import stored_revision

    with connect(ctx.engine(migrate=False), ctx.target) as conn:
        return stored_revision(conn)
