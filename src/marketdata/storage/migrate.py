"""Alembic, driven from code: upgrade, downgrade, current, history, and drift checks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from marketdata.errors import InputError, SchemaError
from marketdata.storage.engine import Target, translate_errors

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy import Connection, Engine


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic Config pointing at the migrations shipped in the package."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(resources.files("marketdata.migrations")))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision this version of the tool knows."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(conn: Connection) -> str | None:
    """The revision the database is at (None for an empty database)."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


@contextmanager
def _alembic(engine: Engine, target: Target) -> Iterator[Config]:
    with translate_errors(target), engine.begin() as conn:
        yield alembic_config(conn)


def upgrade(engine: Engine, target: Target, revision: str = "head") -> None:
    """Migrate up to `revision`."""
    from alembic import command
    from alembic.util import CommandError

    try:
        with _alembic(engine, target) as config:
            command.upgrade(config, revision)
    except CommandError as exc:
        raise InputError(f"cannot upgrade to {revision!r}: {exc}") from None


def downgrade(engine: Engine, target: Target, revision: str) -> None:
    """Migrate down to `revision` ('base' removes every table)."""
    from alembic import command
    from alembic.util import CommandError

    try:
        with _alembic(engine, target) as config:
            command.downgrade(config, revision)
    except CommandError as exc:
        raise InputError(f"cannot downgrade to {revision!r}: {exc}") from None


@dataclass(frozen=True)
class Revision:
    """One migration, for `db history`."""

    revision: str
    down_revision: str | None
    message: str
    is_head: bool


def history() -> list[Revision]:
    """Every migration, newest first."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    heads = set(script.get_heads())
    return [
        Revision(
            s.revision,
            s.down_revision if isinstance(s.down_revision, str) else None,
            s.doc,
            s.revision in heads,
        )
        for s in script.walk_revisions()
    ]


def ours(name: str | None, type_: str, _parents: object) -> bool:
    """False for the job queue's objects (procrastinate_*): migration 0012 installs them
    from procrastinate's own schema, outside our models."""
    return not (type_ == "table" and (name or "").startswith("procrastinate_"))


def drift(conn: Connection) -> list[Any]:
    """Differences between the models and the database (empty when they agree)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from marketdata.storage.schema import metadata

    context = MigrationContext.configure(
        conn,
        opts={
            "compare_type": True,
            "render_as_batch": conn.dialect.name == "sqlite",
            "include_name": ours,
        },
    )
    return list(compare_metadata(context, metadata))


# The newest revision in migrations/versions, so that every command can check the schema
# without loading Alembic and parsing the scripts (a test keeps the two equal).
SCHEMA_HEAD = "0012"


def stored_revision(conn: Connection) -> str | None:
    """The revision recorded in alembic_version, read with one query (None when empty)."""
    from sqlalchemy import text

    if not conn.dialect.has_table(conn, "alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def ensure_schema(engine: Engine, target: Target) -> None:
    """Make sure the schema is at head: migrate the embedded SQLite file automatically,
    refuse to touch a server database that is behind (`db upgrade` is an operator's step)."""
    with translate_errors(target), engine.connect() as conn:
        current = stored_revision(conn)
    if current == SCHEMA_HEAD:
        return
    head = head_revision()
    if target.embedded or (target.dialect == "sqlite" and current is None):
        upgrade(engine, target)
        return
    raise SchemaError(
        f"the database schema is at {current or 'nothing (empty database)'}, "
        f"this version needs {head}",
        hint="run `marketdata db upgrade`",
    )
