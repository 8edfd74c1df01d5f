"""Database health for `db check`: reachability, server version, revisions, drift."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from marketdata.errors import SchemaError
from marketdata.storage.engine import Target, connect, missing_file_error, sqlite_file_missing

if TYPE_CHECKING:
    from sqlalchemy import Engine


@dataclass(frozen=True)
class DatabaseHealth:
    """What `db check` found."""

    database: str
    server: str
    current: str | None
    head: str
    pending: list[str] = field(default_factory=list)
    drift: str = ""

    def raise_for_problems(self) -> None:
        """SchemaError (exit 1) when migrations are pending or the schema drifted."""
        if self.pending:
            raise SchemaError(
                f"{len(self.pending)} migration(s) pending ({', '.join(self.pending)})",
                hint="run `marketdata db upgrade`",
            )
        if self.drift:
            raise SchemaError(f"the schema differs from the models: {self.drift}")


def database_health(engine: Engine, target: Target) -> DatabaseHealth:
    """Connect (DatabaseUnavailableError when unreachable) and compare revisions. Creates
    nothing: an SQLite file that does not exist is reported (DatabaseConfigError), not made."""
    from sqlalchemy import text

    from marketdata.storage import migrate

    if sqlite_file_missing(target):
        raise missing_file_error(target)
    head = migrate.head_revision()
    with connect(engine, target) as conn:
        if conn.dialect.name == "postgresql":
            server = "PostgreSQL " + str(conn.execute(text("SHOW server_version")).scalar())
        else:
            server = "SQLite " + str(conn.execute(text("SELECT sqlite_version()")).scalar())
        current = migrate.current_revision(conn)
        order = [r.revision for r in reversed(migrate.history())]
        done = order.index(current) + 1 if current in order else 0
        pending = order[done:]
        drift = "" if pending else "; ".join(str(d) for d in migrate.drift(conn))[:300]
    return DatabaseHealth(target.shown, server, current, head, pending, drift)
