"""Alembic, driven from code: upgrade, downgrade, current, history, and drift checks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

from marketdata.errors import DatabaseBusyError, DatabaseConfigError, InputError, SchemaError
from marketdata.storage.engine import (
    Target,
    prepare_sqlite_directory,
    sqlite_file_missing,
    translate_errors,
)

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


# How long a process waits for another one migrating the same database.
MIGRATION_LOCK_TIMEOUT = 120.0
# A stable advisory-lock key for migrations on PostgreSQL (pair locks hash their names).
_PG_MIGRATION_LOCK = 0x6D64_6D69_6772  # "mdmigr"


@contextmanager
def migration_lock(target: Target) -> Iterator[None]:
    """One migration at a time per SQLite file, across processes: a file lock beside the
    database (four processes opening a new embedded file raced Alembic's set-up). PostgreSQL
    is serialized inside the migration's transaction (`_alembic`)."""
    if target.dialect != "sqlite":
        yield
        return
    from filelock import FileLock, Timeout

    prepare_sqlite_directory(target)
    # one instance per path, so the lock is re-entrant (ensure_schema holds it around upgrade)
    lock = FileLock(f"{target.host_port}.migrate.lock", is_singleton=True)
    try:
        lock.acquire(timeout=MIGRATION_LOCK_TIMEOUT)
    except Timeout:  # (a subclass of OSError: first)
        raise DatabaseBusyError(
            f"another process has been migrating {target.host_port} for over "
            f"{MIGRATION_LOCK_TIMEOUT:.0f} s",
            hint="wait for it, or look for a stuck `marketdata` process",
        ) from None
    except OSError as exc:  # the directory is not writable: neither would the database be
        raise DatabaseConfigError(
            f"cannot write beside the SQLite database {target.host_port}: {exc.strerror}",
            hint="check the directory's permissions",
        ) from None
    try:
        yield
    finally:
        lock.release()


@contextmanager
def _alembic(engine: Engine, target: Target) -> Iterator[Config]:
    from sqlalchemy import text

    with migration_lock(target), translate_errors(target), engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # a data migration may rewrite a big table: no statement timeout here; and one
            # migration at a time (the second sees the first's result once it commits)
            conn.execute(text("SET LOCAL statement_timeout = 0"))
            # wait as long as the other migration takes, then keep DB_LOCK_TIMEOUT for the
            # migration's own locks (it must not queue ahead of every query for long)
            lock_timeout = conn.execute(text("SHOW lock_timeout")).scalar()
            conn.execute(text("SET LOCAL lock_timeout = 0"))
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            conn.execute(text("SELECT set_config('lock_timeout', :v, true)"), {"v": lock_timeout})
        yield alembic_config(conn)


def upgrade(engine: Engine, target: Target, revision: str = "head") -> None:
    """Migrate up to `revision`; forgets an earlier `db downgrade` of the embedded file."""
    from alembic import command
    from alembic.util import CommandError

    try:
        with _alembic(engine, target) as config:
            command.upgrade(config, revision)
    except CommandError as exc:
        raise InputError(f"cannot upgrade to {revision!r}: {exc}") from None
    marker = _downgrade_marker(target)
    if marker is not None:
        marker.unlink(missing_ok=True)


def downgrade(engine: Engine, target: Target, revision: str) -> None:
    """Migrate down to `revision` ('base' removes every table). For an SQLite file the
    choice is remembered, so that commands do not upgrade it again behind the user's back."""
    from alembic import command
    from alembic.util import CommandError

    try:
        with _alembic(engine, target) as config:
            command.downgrade(config, revision)
    except CommandError as exc:
        raise InputError(f"cannot downgrade to {revision!r}: {exc}") from None
    marker = _downgrade_marker(target)
    if marker is not None:
        marker.write_text(f"{revision}\n")


def _downgrade_marker(target: Target) -> Path | None:
    """The file that remembers an explicit `db downgrade` of an SQLite database (None for a
    server: it is never upgraded automatically, so there is nothing to remember)."""
    if target.dialect != "sqlite":
        return None
    return Path(f"{target.host_port}.downgraded")


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


def ours(name: str | None, type_: str, parents: object) -> bool:
    """Alembic's include_name hook: False for tables outside our models: the job queue's
    (procrastinate_*: migration 0012 installs them from procrastinate's own schema) and
    candles' partitions."""
    from marketdata.storage.partitions import include_name

    if type_ == "table" and (name or "").startswith("procrastinate_"):
        return False
    return include_name(name, type_, parents)


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
SCHEMA_HEAD = "0013"


def stored_revision(conn: Connection) -> str | None:
    """The revision recorded in alembic_version, read with one query (None when empty)."""
    from sqlalchemy import text

    if not conn.dialect.has_table(conn, "alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


# Revisions that add columns derived from candles (indicators): rows stored before them
# have those columns empty until `analytics rebuild` computes them.
DERIVED_COLUMN_REVISIONS = frozenset({"0003"})


def ensure_schema(engine: Engine, target: Target) -> None:
    """Make sure the schema is at head with one plain query (no Alembic when it is).

    The embedded SQLite file (or any new SQLite file) is migrated automatically when it is
    new or behind, and says so in one line; not after an explicit `db downgrade`, which is
    remembered. A server database that is behind is refused: `db upgrade` is an operator's
    step. Concurrent processes set a new file up once (`migration_lock`).
    """
    if target.dialect == "sqlite" and sqlite_file_missing(target):
        current = None
    else:
        with translate_errors(target), engine.connect() as conn:
            current = stored_revision(conn)
    if current == SCHEMA_HEAD:
        return
    if current is not None and current not in {r.revision for r in history()}:
        raise SchemaError(
            f"{target.shown} is at schema {current}, which this version of marketdata does "
            f"not know (it needs {SCHEMA_HEAD}): a newer version wrote it",
            hint="install that version (or newer) of marketdata",
        )
    automatic = target.embedded or (target.dialect == "sqlite" and current is None)
    marker = _downgrade_marker(target)
    if automatic and marker is not None and marker.exists():
        raise SchemaError(
            f"{target.shown} was downgraded to {current or 'base'} with "
            "`marketdata db downgrade`; "
            f"this version needs {SCHEMA_HEAD}",
            hint="run `marketdata db upgrade` to bring it back (it is not upgraded on its own)",
        )
    if not automatic:
        raise SchemaError(
            f"the database schema is at {current or 'nothing (empty database)'}, "
            f"this version needs {SCHEMA_HEAD}",
            hint="run `marketdata db upgrade`",
        )
    with migration_lock(target):
        # another process may have migrated it while this one waited for the lock
        with translate_errors(target), engine.connect() as conn:
            current = stored_revision(conn)
        if current == SCHEMA_HEAD:
            return
        upgrade(engine, target)
    if current is None:
        logger.warning("created the database {} at schema {}", target.shown, SCHEMA_HEAD)
    else:
        logger.warning(
            "upgraded the database {} from schema {} to {}", target.shown, current, SCHEMA_HEAD
        )
        rebuild = rebuild_needed(engine, target, current)
        if rebuild:
            logger.warning(rebuild)


def rebuild_needed(engine: Engine, target: Target, since: str | None) -> str | None:
    """The line asking for `analytics rebuild` when the migrations applied after `since`
    added derived columns and candles were already stored (None when nothing to do)."""
    from sqlalchemy import text

    if since is None:
        return None  # a new database: no candles were stored before the columns
    newest_first = [r.revision for r in history()]
    applied = set(newest_first[: newest_first.index(since)]) if since in newest_first else set()
    if not applied & DERIVED_COLUMN_REVISIONS:
        return None
    with translate_errors(target), engine.connect() as conn:
        stored = conn.execute(text("SELECT 1 FROM candles LIMIT 1")).first() is not None
    if not stored:
        return None
    return (
        "the upgrade added indicator columns that are empty for the candles already stored: "
        "run `marketdata analytics rebuild`"
    )
