"""What a database error means: transient, configuration, or data/bug, by SQLSTATE and SQLite
result code (never by exception class), and the one-line error each becomes.

    kind           what the caller does                       errors.py class       exit
    TRANSIENT      retry the pair with backoff; when the      DatabaseUnavailable   75
                   server is gone after the retries, stop     DatabaseBusyError     75
    CONFIGURATION  stop: the user must fix the URL or server  DatabaseConfigError   2
    DATA           the pair fails, the run goes on            DatabaseDataError     1 (run: 3)

The pipeline calls `classify(exc, target)` on anything a storage call raised (a vendor
exception or one `translate_errors` already translated) and looks at `fault.kind`;
the pipeline writes a pair again when its write meets a transient fault (pipeline.STORE_ATTEMPTS).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from marketdata.errors import (
    DatabaseBusyError,
    DatabaseConfigError,
    DatabaseDataError,
    DatabaseUnavailableError,
    MarketdataError,
)

if TYPE_CHECKING:
    from marketdata.storage.engine import Target


class FaultKind(Enum):
    """What to do about a database error."""

    TRANSIENT = "transient"  # retry; the server may be gone (DatabaseUnavailableError)
    CONFIGURATION = "configuration"  # exit 2 with what to fix
    DATA = "data"  # this pair fails; the run goes on


@dataclass(frozen=True)
class DbFault:
    """A classified database error: its kind, the code it was classified by, the reason
    (the server's first line) and the MarketdataError to raise for it."""

    kind: FaultKind
    code: str | None  # SQLSTATE ('40P01'), SQLite result name ('SQLITE_BUSY'), or None
    reason: str
    error: MarketdataError

    @property
    def retryable(self) -> bool:
        """True for faults worth another attempt of the same work."""
        return self.kind is FaultKind.TRANSIENT

    @property
    def server_gone(self) -> bool:
        """True when the database cannot be reached at all (exit 75 once retries are spent)."""
        return isinstance(self.error, DatabaseUnavailableError)


# ----------------------------------------------------------------------------------- table

# How each outcome is reported; a row of the tables below names one of these.
_GONE, _BUSY, _CONFIG, _DATA = "gone", "busy", "config", "data"

# SQLSTATE (https://www.postgresql.org/docs/current/errcodes-appendix.html): exact codes
# first, then the two-character class. Anything not listed is data/bug.
_PG_CODES: dict[str, str] = {
    "40001": _BUSY,  # serialization_failure
    "40P01": _BUSY,  # deadlock_detected
    "55P03": _BUSY,  # lock_not_available (our lock_timeout, or NOWAIT)
    "57014": _BUSY,  # query_canceled: only when our statement_timeout cancelled it (below)
    "53300": _GONE,  # too_many_connections: the server is full now, later may work
    "57P01": _GONE,  # admin_shutdown (also pg_terminate_backend)
    "57P02": _GONE,  # crash_shutdown
    "57P03": _GONE,  # cannot_connect_now (starting up, shutting down, recovery)
    "25P03": _GONE,  # idle_in_transaction_session_timeout: the session was ended
    "25006": _CONFIG,  # read_only_sql_transaction: connected to a standby
    "42501": _CONFIG,  # insufficient_privilege
    "42P01": _CONFIG,  # undefined_table: the schema was never set up here
    "53100": _DATA,  # disk_full: needs an operator, retrying now will not help
}
_PG_CLASSES: dict[str, str] = {
    "08": _GONE,  # connection exception
    "3D": _CONFIG,  # invalid catalog name: no such database
    "28": _CONFIG,  # invalid authorization: no such role, wrong password, pg_hba
    "23": _DATA,  # integrity constraint violation
    "22": _DATA,  # data exception
}

# SQLite primary result codes (https://sqlite.org/rescode.html); extended codes carry the
# primary code in their low byte. "no such table" is SQLITE_ERROR, recognised by its text.
_SQLITE_CODES: dict[int, str] = {
    5: _BUSY,  # SQLITE_BUSY: another connection holds the write lock past busy_timeout
    6: _BUSY,  # SQLITE_LOCKED: a conflict within this process's shared cache
    3: _CONFIG,  # SQLITE_PERM
    8: _CONFIG,  # SQLITE_READONLY: the file or its directory is not writable
    14: _CONFIG,  # SQLITE_CANTOPEN: no such directory, or not a file
    23: _CONFIG,  # SQLITE_AUTH
    26: _CONFIG,  # SQLITE_NOTADB: the path is some other file
}

# libpq reports connection-time refusals with no SQLSTATE; its message is all there is (in
# the server's lc_messages language: a translated one falls back to "unreachable", exit 75).
_PG_CONNECT_MESSAGES: tuple[tuple[str, str], ...] = (
    ("does not exist", "3D000"),  # database "x" does not exist (a role: see _connect_code)
    ("password authentication failed", "28P01"),
    ("no pg_hba.conf entry", "28000"),
    ("permission denied for database", "42501"),
)

_STATEMENT_TIMEOUT = "statement timeout"  # "canceling statement due to statement timeout"


def classify(exc: BaseException, target: Target) -> DbFault:
    """Sort a database error (SQLAlchemy, psycopg or sqlite3, or one already translated)
    into transient, configuration or data, with the one-line MarketdataError to raise.

    Args:
        exc: what a storage call raised.
        target: the database it was talking to (named in the message, masked).
    """
    if isinstance(exc, MarketdataError):
        return DbFault(_kind_of(exc), None, exc.message, exc)
    if _is_pool_timeout(exc):
        return _fault(target, _DATA, None, "no free database connection in the pool", exc)
    orig = getattr(exc, "orig", None) or exc
    reason = _reason(orig)
    code: str | None
    if target.dialect == "sqlite":
        code, outcome = _sqlite_outcome(orig, reason)
    else:
        code, outcome = _pg_outcome(exc, orig, reason)
    return _fault(target, outcome, code, reason, exc)


def _kind_of(error: MarketdataError) -> FaultKind:
    if isinstance(error, DatabaseUnavailableError | DatabaseBusyError):
        return FaultKind.TRANSIENT
    if isinstance(error, DatabaseConfigError):
        return FaultKind.CONFIGURATION
    return FaultKind.DATA


def _is_pool_timeout(exc: BaseException) -> bool:
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    return isinstance(exc, PoolTimeout)


def _pg_outcome(exc: BaseException, orig: BaseException, reason: str) -> tuple[str | None, str]:
    code = getattr(orig, "sqlstate", None)
    if code is None:
        code = _connect_code(reason)
    if code is None:
        # no SQLSTATE: libpq lost or never had the connection (refused, reset, closed)
        if getattr(exc, "connection_invalidated", False) or _is_connection_error(orig):
            return None, _GONE
        return None, _DATA
    outcome = _PG_CODES.get(code) or _PG_CLASSES.get(code[:2], _DATA)
    if code == "57014" and _STATEMENT_TIMEOUT not in reason:
        outcome = _DATA  # cancelled by someone else (pg_cancel_backend): not ours to retry
    return code, outcome


def _connect_code(reason: str) -> str | None:
    if reason.startswith("role ") and "does not exist" in reason:
        return "28000"
    for text, code in _PG_CONNECT_MESSAGES:
        if text in reason:
            return code
    return None


def _is_connection_error(orig: BaseException) -> bool:
    import psycopg

    return isinstance(orig, psycopg.OperationalError | psycopg.InterfaceError)


def _sqlite_outcome(orig: BaseException, reason: str) -> tuple[str | None, str]:
    number = getattr(orig, "sqlite_errorcode", None)
    name = getattr(orig, "sqlite_errorname", None)
    if number is None:
        return None, _DATA
    if reason.startswith("no such table"):
        return name, _CONFIG
    return name, _SQLITE_CODES.get(number & 0xFF, _DATA)


# --------------------------------------------------------------------------------- messages


def _fault(
    target: Target, outcome: str, code: str | None, reason: str, exc: BaseException
) -> DbFault:
    where = (
        f"the SQLite database {target.host_port}"
        if target.dialect == "sqlite"
        else f"PostgreSQL at {target.host_port}"
    )
    coded = f"{reason} ({code})" if code else reason
    error: MarketdataError
    hint: str | None
    if outcome == _GONE:
        return DbFault(FaultKind.TRANSIENT, code, reason, unavailable(target, exc))
    if outcome == _BUSY:
        error = DatabaseBusyError(
            f"{where} is busy: {coded}",
            hint="another writer held what this needed; try again",
        )
        return DbFault(FaultKind.TRANSIENT, code, reason, error)
    if outcome == _CONFIG:
        message, fix = _configuration(target, code, reason)
        error = DatabaseConfigError(message, hint=fix)
        return DbFault(FaultKind.CONFIGURATION, code, reason, error)
    hint = None
    if code == "53100" or code == "SQLITE_FULL":
        hint = "free disk space on the database server"
    elif _is_pool_timeout(exc):
        hint = "lower INGESTION_CONCURRENCY or raise the server's connection limit"
    error = DatabaseDataError(f"{where} refused the statement: {coded}", hint=hint)
    return DbFault(FaultKind.DATA, code, reason, error)


def _configuration(target: Target, code: str | None, reason: str) -> tuple[str, str]:
    """The message and what to fix, for a database that is reachable but unusable."""
    if target.dialect == "sqlite":
        path = target.host_port
        if reason.startswith("no such table"):
            return (
                f"the SQLite database {path} has no marketdata schema ({reason})",
                "run `marketdata db upgrade`",
            )
        return (
            f"cannot use the SQLite database {path}: {reason} ({code})",
            "check that the directory exists and the file and directory are writable",
        )
    server = target.host_port
    name = target.url.database or ""
    user = target.url.username or ""
    if code == "3D000":
        return (
            f'database "{name}" does not exist on PostgreSQL at {server}',
            f"create it (createdb -h {target.url.host or 'localhost'} -p {target.url.port or 5432}"
            f"{f' -U {user}' if user else ''} {name}), then run `marketdata db upgrade`",
        )
    if code is not None and code.startswith("28"):
        return (
            f"PostgreSQL at {server} refused role {user!r}: {reason}",
            "check the user and password in DATABASE_URL (and the server's pg_hba.conf)",
        )
    if code == "42P01":
        return (
            f'database "{name}" on PostgreSQL at {server} has no marketdata schema ({reason})',
            "run `marketdata db upgrade`",
        )
    if code == "25006":
        return (
            f"PostgreSQL at {server} is read-only ({reason})",
            "point DATABASE_URL at the primary, not a standby",
        )
    return (
        f"PostgreSQL at {server} refused role {user!r}: {reason} ({code})",
        f'grant the role what marketdata needs on database "{name}" (owner, or CREATE and '
        "read/write on its tables)",
    )


def unavailable(target: Target, exc: BaseException) -> DatabaseUnavailableError:
    """A one-line error for a database that cannot be reached (or went away mid-way)."""
    reason = _reason(getattr(exc, "orig", None) or exc)
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
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    # libpq repeats the host and port; keep the cause ("Connection refused", "timeout ...")
    if "failed:" in text:
        text = text.rsplit("failed:", 1)[-1].strip()
    if text.startswith("FATAL:"):
        text = text.removeprefix("FATAL:").strip()
    return text[:200]


# ---------------------------------------------------------------------------------- helpers


@contextmanager
def translated(target: Target) -> Iterator[None]:
    """Raise every database error inside as its classified MarketdataError."""
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    try:
        yield
    except (DBAPIError, PoolTimeout) as exc:
        raise classify(exc, target).error from None
    except Exception as exc:
        if _is_driver_error(exc):  # raw psycopg (COPY) or sqlite3 errors
            raise classify(exc, target).error from None
        raise


def _is_driver_error(exc: BaseException) -> bool:
    import sqlite3

    if isinstance(exc, sqlite3.Error):
        return True
    module = type(exc).__module__
    if module.startswith("psycopg"):
        import psycopg

        return isinstance(exc, psycopg.Error)
    return False
