"""Engines: which database (SQLite by default, PostgreSQL by URL), and what errors mean."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from marketdata.config import Settings, app_dir
from marketdata.errors import ConfigError, DatabaseConfigError
from marketdata.redact import mask_url

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine
    from sqlalchemy.engine import URL

SQLITE_FILE = "marketdata.sqlite3"


@dataclass(frozen=True)
class Target:
    """Where the data lives: the SQLAlchemy URL and how to name it to people (masked)."""

    url: URL
    shown: str
    embedded: bool  # the default SQLite file

    @property
    def dialect(self) -> str:
        """'postgresql' or 'sqlite'."""
        return self.url.get_backend_name()

    @property
    def host_port(self) -> str:
        """host:port of a server, or the SQLite file path."""
        if self.dialect == "sqlite":
            return self.url.database or ":memory:"
        return f"{self.url.host or 'localhost'}:{self.url.port or 5432}"


def resolve_target(settings: Settings) -> Target:
    """Turn DATABASE_URL (or its absence) into a Target; ConfigError when malformed."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    raw = settings.database_url
    if raw is None:
        path = app_dir("state") / SQLITE_FILE
        return Target(make_url(f"sqlite:///{path}"), str(path), embedded=True)
    shown = mask_url(raw)
    scheme, sep, rest = raw.partition("://")
    if not sep:
        raise ConfigError(
            f"DATABASE_URL is not a database URL: {shown}",
            hint="use postgresql://user:password@host:5432/dbname or sqlite:///path/file.sqlite3",
        )
    drivers = {
        "postgres": "postgresql+psycopg",
        "postgresql": "postgresql+psycopg",
        "postgresql+psycopg": "postgresql+psycopg",
        "sqlite": "sqlite",
    }
    driver = drivers.get(scheme.lower())
    if driver is None:
        raise ConfigError(
            f"DATABASE_URL has an unsupported scheme {scheme!r}: {shown}",
            hint="use postgresql:// (or postgres://) or sqlite:///",
        )
    try:
        url = make_url(f"{driver}://{rest}")
        _ = url.port  # a non-numeric port only shows when read
    except (ArgumentError, ValueError):
        raise ConfigError(f"DATABASE_URL is malformed: {shown}") from None
    _check_complete(url, shown)
    return Target(url, shown, embedded=False)


def _check_complete(url: URL, shown: str) -> None:
    """Refuse a URL that leaves out what it must name, rather than fall back on libpq's or
    SQLite's silent defaults (the local socket and the user's name; a throw-away database)."""
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:" or url.database.startswith("file:"):
            raise ConfigError(
                f"DATABASE_URL names no SQLite file: {shown}",
                hint="use sqlite:///relative/file.sqlite3 or sqlite:////absolute/file.sqlite3",
            )
        return
    if not (url.host or url.query.get("host")):
        raise ConfigError(
            f"DATABASE_URL names no PostgreSQL host: {shown}",
            hint="use postgresql://user:password@host:5432/dbname",
        )
    if not url.database:
        raise ConfigError(
            f"DATABASE_URL names no database: {shown}",
            hint="add it after the host: postgresql://user:password@host:5432/dbname",
        )


def create_engine(settings: Settings, target: Target | None = None) -> Engine:
    """An Engine for the target with every wait bounded: the connect, statement, lock and
    idle-in-transaction timeouts and TCP keepalives on PostgreSQL, the busy timeout on
    SQLite (WAL mode). The pool has a connection for every worker plus the run's own.
    Creates nothing: an SQLite file's directory must exist (`prepare_sqlite_directory`
    makes the embedded one's)."""
    import sqlalchemy
    from sqlalchemy import event

    target = target or resolve_target(settings)
    pool_size = settings.ingestion_concurrency + 2  # the workers, the run's row, a reader
    if target.dialect == "sqlite":
        engine = sqlalchemy.create_engine(
            target.url,
            connect_args={"timeout": settings.db_busy_timeout},
            pool_size=pool_size,
            max_overflow=4,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    engine = sqlalchemy.create_engine(
        target.url,
        connect_args={
            "connect_timeout": settings.db_connect_timeout,
            "application_name": "marketdata",
            "keepalives": 1,
            "keepalives_idle": settings.db_keepalives_idle,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        },
        pool_size=pool_size,
        max_overflow=4,
        pool_pre_ping=True,
        hide_parameters=True,
    )
    event.listen(engine, "connect", _postgres_timeouts(settings))
    return engine


def _postgres_timeouts(settings: Settings) -> Callable[[Any, Any], None]:
    """A connect hook setting the session's statement, lock and idle-in-transaction timeouts
    (in ms; 0 is off). Set by a statement rather than libpq's `options`, which connection
    poolers such as PgBouncer refuse at start-up."""
    timeouts = {
        "statement_timeout": settings.db_statement_timeout,
        "lock_timeout": settings.db_lock_timeout,
        "idle_in_transaction_session_timeout": settings.db_idle_in_transaction_timeout,
    }
    sql = "SELECT " + ", ".join(f"set_config('{name}', %s, false)" for name in timeouts)
    values = [f"{round(seconds * 1000)}" for seconds in timeouts.values()]

    def apply(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute(sql, values)
        dbapi_connection.commit()

    return apply


def prepare_sqlite_directory(target: Target) -> None:
    """Create the embedded database's directory; only that one: a DATABASE_URL naming a
    directory that does not exist is a mistake to report (DatabaseConfigError), not a tree
    to create."""
    if target.dialect != "sqlite":
        return
    directory = Path(target.host_port).parent
    if target.embedded:
        directory.mkdir(parents=True, exist_ok=True)
    elif not directory.is_dir():
        raise DatabaseConfigError(
            f"the directory of the SQLite database {target.host_port} does not exist",
            hint=f"create {directory} or fix the path in DATABASE_URL",
        )


def sqlite_file_missing(target: Target) -> bool:
    """True for an SQLite target whose file does not exist yet."""
    return target.dialect == "sqlite" and not Path(target.host_port).exists()


def missing_file_error(target: Target) -> DatabaseConfigError:
    """What to say when a command that only looks finds no SQLite file (it makes none)."""
    return DatabaseConfigError(
        f"the SQLite database {target.host_port} does not exist",
        hint=(
            "it is created by the first `marketdata ingest` or `marketdata db upgrade`"
            if target.embedded
            else "check the path in DATABASE_URL, or create it with `marketdata db upgrade`"
        ),
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers and one writer work at once; NORMAL is durable across app crashes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def translate_errors(target: Target) -> AbstractContextManager[None]:
    """Raise every database error inside as the MarketdataError its SQLSTATE or SQLite
    result code means (storage/dberrors.py)."""
    from marketdata.storage.dberrors import translated

    return translated(target)


@contextmanager
def connect(engine: Engine, target: Target) -> Iterator[Connection]:
    """A connection with driver errors translated."""
    with translate_errors(target), engine.connect() as conn:
        yield conn
