"""Engines: which database (SQLite by default, PostgreSQL by URL), and what errors mean."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from marketdata.config import Settings, app_dir
from marketdata.errors import ConfigError, DatabaseUnavailableError, MarketdataError
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
    return Target(url, shown, embedded=False)


def create_engine(settings: Settings, target: Target | None = None) -> Engine:
    """An Engine for the target, with a connect timeout and SQLite in WAL mode."""
    import sqlalchemy
    from sqlalchemy import event

    target = target or resolve_target(settings)
    if target.dialect == "sqlite":
        if target.url.database:
            Path(target.url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sqlalchemy.create_engine(
            target.url, connect_args={"timeout": 30}, pool_size=8, max_overflow=8
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sqlalchemy.create_engine(
        target.url,
        connect_args={
            "connect_timeout": settings.db_connect_timeout,
            "application_name": "marketdata",
        },
        pool_size=max(4, settings.ingestion_concurrency + 2),
        max_overflow=4,
        pool_pre_ping=True,
        hide_parameters=True,
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers and one writer work at once; NORMAL is durable across app crashes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


@contextmanager
def translate_errors(target: Target) -> Iterator[None]:
    """Turn driver connection errors into DatabaseUnavailableError naming host and port."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    try:
        yield
    except OperationalError as exc:
        raise unavailable(target, exc) from None
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise unavailable(target, exc) from None
        raise


def unavailable(target: Target, exc: BaseException) -> MarketdataError:
    """A one-line error for a database that cannot be reached or used."""
    reason = _reason(exc)
    if target.dialect == "sqlite":
        return DatabaseUnavailableError(
            f"cannot open the SQLite database {target.host_port}: {reason}",
            hint="check the path and its permissions",
        )
    return DatabaseUnavailableError(
        f"cannot reach PostgreSQL at {target.host_port} (DATABASE_URL {target.shown}): {reason}",
        hint="is PostgreSQL running? (`marketdata db check`)",
    )


def _reason(exc: BaseException) -> str:
    original = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(original).splitlines() if line.strip()]
    text = lines[0] if lines else type(original).__name__
    # libpq repeats the host and port; keep the cause ("Connection refused", "timeout ...")
    if "failed:" in text:
        text = text.rsplit("failed:", 1)[-1].strip()
    return text[:200]


@contextmanager
def connect(engine: Engine, target: Target) -> Iterator[Connection]:
    """A connection with driver errors translated."""
    with translate_errors(target), engine.connect() as conn:
        yield conn
