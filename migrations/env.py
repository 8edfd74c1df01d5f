"""Alembic environment wired to marketdata's metadata and settings.

Called programmatically by `marketdata db ...` with a connection in
`config.attributes["connection"]`; run by the `alembic` command it builds its own engine
from the same settings (DATABASE_URL, else the embedded SQLite file).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from marketdata.storage.migrate import ours
from marketdata.storage.schema import metadata

config = context.config


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things in place: batch mode copies and swaps the table
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        compare_server_default=False,
        include_name=ours,
    )


def run_migrations_online() -> None:
    """Run against the given connection, or one built from marketdata's settings."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    from marketdata.config import load_settings
    from marketdata.storage.engine import create_engine

    engine = create_engine(load_settings().settings)
    with engine.connect() as conn:
        _configure(conn)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


def run_migrations_offline() -> None:
    """Emit SQL for the configured URL without connecting."""
    from marketdata.config import load_settings
    from marketdata.storage.engine import resolve_target

    url = config.get_main_option("sqlalchemy.url") or resolve_target(load_settings().settings).url
    context.configure(url=url, target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
