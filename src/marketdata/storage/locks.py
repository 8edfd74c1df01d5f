"""Per-(symbol, interval) locks so that several workers share work without double writes:
PostgreSQL advisory locks (across hosts), file locks beside an SQLite database. Also the
run lease: a lock a run holds for its whole life, so that a later run can tell a run whose
process died (lock free, row still `running`) from one still going.

Every lock here dies with its holder: an advisory lock with its database session (a killed
process's socket closes; a vanished host's is closed by TCP keepalive), a file lock with its
process's file descriptor. A process that is alive but stuck (SIGSTOP, a hung call) keeps
them: its run stays `running` in `marketdata runs`, and pairs skipped because of it are
recorded `skipped` and warned about once skipped longer than ALERT_STALE_AFTER.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from loguru import logger

if TYPE_CHECKING:
    from filelock import BaseFileLock
    from sqlalchemy import Connection, Engine


T = TypeVar("T")

# How long the end of a run waits for a worker still using the lock session.
RELEASE_WAIT_SECONDS = 2.0


def lock_key(symbol: str, interval: str) -> int:
    """A stable signed 64-bit advisory-lock key for a pair."""
    return _key(f"marketdata:{symbol}:{interval}")


def run_key(run_id: int) -> int:
    """The advisory-lock key of a run's lease."""
    return _key(f"marketdata:run:{run_id}")


def _key(name: str) -> int:
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextmanager
def pair_lock(
    conn: Connection, symbol: str, interval: str, lock_dir: Path | None
) -> Iterator[bool]:
    """Try to take the pair's lock without waiting; yields whether it was taken.

    On PostgreSQL it is a session-level advisory lock on `conn`, released on exit (or when
    the session ends, should the process die). On SQLite it is a file lock in `lock_dir`.
    A release that fails (the connection was dropped after the pair committed) is logged,
    not raised: the session, and its lock with it, is gone or is closed here.
    """
    if conn.dialect.name == "postgresql":
        key = lock_key(symbol, interval)
        taken = _try_advisory_lock(conn, key)
        try:
            yield taken
        finally:
            if taken:
                _unlock(conn, key, f"{symbol} {interval}")
        return
    with _pair_file_lock(lock_dir, symbol, interval) as taken:
        yield taken


@contextmanager
def _pair_file_lock(lock_dir: Path | None, symbol: str, interval: str) -> Iterator[bool]:
    """The pair's file lock beside an SQLite database, if free; yields whether taken."""
    lock = _file_lock(lock_dir, f"{symbol}_{interval}")
    if not _try_acquire(lock):
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def _try_advisory_lock(conn: Connection, key: int) -> bool:
    """Take a PostgreSQL session advisory lock without waiting; whether it was taken (the
    statement's transaction is committed: the lock belongs to the session)."""
    from sqlalchemy import text

    taken = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
    conn.commit()
    return taken


def _try_advisory_locks(conn: Connection, keys: list[int]) -> list[int]:
    """Take the session advisory locks of `keys` that are free, in one statement; the keys
    taken (a key listed twice is taken twice, as two calls would)."""
    from sqlalchemy import text

    if not keys:
        return []
    rows = conn.execute(
        text("SELECT k FROM unnest(CAST(:keys AS bigint[])) AS k WHERE pg_try_advisory_lock(k)"),
        {"keys": keys},
    )
    taken = [int(row[0]) for row in rows]
    conn.commit()
    return taken


def _unlock_many(conn: Connection, keys: list[int], what: str) -> None:
    """Release advisory locks in one statement; if that fails, drop the connection so that
    the pool never hands out a session still holding them (the server releases them when the
    session ends)."""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    try:
        conn.rollback()  # leave any failed transaction before unlocking
        conn.execute(
            text("SELECT pg_advisory_unlock(k) FROM unnest(CAST(:keys AS bigint[])) AS k"),
            {"keys": keys},
        )
        conn.commit()
    except SQLAlchemyError as exc:
        logger.warning(
            "the lock of {} could not be released ({}); its connection is closed instead, "
            "which releases it",
            what,
            type(getattr(exc, "orig", None) or exc).__name__,
        )
        conn.invalidate()


def _unlock(conn: Connection, key: int, what: str) -> None:
    """Release one advisory lock (see `_unlock_many`)."""
    _unlock_many(conn, [key], what)


def _file_lock(lock_dir: Path | None, name: str) -> BaseFileLock:
    from filelock import FileLock

    assert lock_dir is not None
    lock_dir.mkdir(parents=True, exist_ok=True)
    return FileLock(lock_dir / f"{name}.lock")


def _try_acquire(lock: BaseFileLock) -> bool:
    from filelock import Timeout

    try:
        lock.acquire(timeout=0)
    except Timeout:
        return False
    return True


class RunLease:
    """Held by a run from its start to its recorded end (see the module docstring); it also
    takes the run's pair locks.

    On PostgreSQL the lease and the pair locks are session advisory locks on one connection
    of the run's own, which worker threads take turns on: a pair holds no pooled connection
    while its provider is asked, only for its write. Should that session be dropped, its
    locks end with it; the next lock taken reconnects and takes the lease again.
    """

    def __init__(self, engine: Engine, run_id: int | None, lock_dir: Path | None) -> None:
        """With `run_id` None it holds no lease: the lock session of a fleet's worker, whose
        jobs' runs are watched through the job queue (runs.close_abandoned)."""
        self.run_id = run_id
        self._engine = engine
        self._lock_dir = lock_dir
        self._mutex = threading.Lock()  # one statement at a time on the shared session
        self._conn: Connection | None = None
        self._file: BaseFileLock | None = None
        if engine.dialect.name == "postgresql":
            self._session()
        elif run_id is not None:
            self._file = _file_lock(lock_dir, f"run-{run_id}")
            self._file.acquire(timeout=0)

    def _session(self) -> Connection:
        """The lock session, (re)connected with the lease taken on it (mutex held)."""
        if self._conn is None or self._conn.invalidated or self._conn.closed:
            again = self._conn is not None
            # autocommit: a lock or unlock is one round trip, not BEGIN, SELECT and COMMIT
            conn = self._engine.connect()
            self._conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            if self.run_id is None:
                return self._conn
            # after a dropped session the server may not have ended it yet: do not wait
            taken = _try_advisory_lock(self._conn, run_key(self.run_id))
            if again and not taken:
                logger.warning(
                    "run {}: its dropped session still holds its lease; should another run "
                    "close it as abandoned meanwhile, this run's end overwrites that",
                    self.run_id,
                )
        return self._conn

    @contextmanager
    def pair(self, symbol: str, interval: str) -> Iterator[bool]:
        """Try to take the pair's lock without waiting; yields whether it was taken."""
        if self._engine.dialect.name != "postgresql":
            with _pair_file_lock(self._lock_dir, symbol, interval) as taken:
                yield taken
            return
        key = lock_key(symbol, interval)
        with self._mutex:
            # session locks are re-entrant: a pair another thread of this run holds is
            # never asked twice (plans hold each pair once)
            taken = _try_advisory_lock(self._session(), key)
        try:
            yield taken
        finally:
            if taken:
                with self._mutex:
                    if self._conn is not None and not self._conn.invalidated:
                        _unlock(self._conn, key, f"{symbol} {interval}")

    @contextmanager
    def pairs(self, pairs: list[tuple[str, str]]) -> Iterator[set[tuple[str, str]]]:
        """Try to take the locks of many pairs at once without waiting; yields those taken,
        released together on exit. On PostgreSQL one statement each way, not one per pair."""
        if self._engine.dialect.name != "postgresql":
            with ExitStack() as stack:
                taken = {
                    pair
                    for pair in pairs
                    if stack.enter_context(_pair_file_lock(self._lock_dir, *pair))
                }
                yield taken
            return
        keys = {lock_key(*pair): pair for pair in pairs}
        with self._mutex:
            held = _try_advisory_locks(self._session(), list(keys))
        try:
            yield {keys[key] for key in held}
        finally:
            if held:
                with self._mutex:
                    if self._conn is not None and not self._conn.invalidated:
                        _unlock_many(self._conn, held, f"{len(held)} pairs")

    def run(self, statement: Callable[[Connection], T]) -> T:
        """Run a short statement on the lock session (autocommit: one round trip, no pooled
        connection checked out), one caller at a time. PostgreSQL only."""
        with self._mutex:
            return statement(self._session())

    def release(self) -> None:
        """Give the lease up (the run is recorded)."""
        # a worker left blocked on the lock session (a database that stopped answering)
        # must not block the end of the run: then the session is dropped instead
        if not self._mutex.acquire(timeout=RELEASE_WAIT_SECONDS):
            self.drop()
            return
        try:
            if self._conn is not None:
                if not self._conn.invalidated and self.run_id is not None:
                    # unlocked before the connection goes back to the pool, which keeps
                    # sessions (and their locks) alive
                    _unlock(self._conn, run_key(self.run_id), f"run {self.run_id}")
                self._conn.close()
                self._conn = None
        finally:
            self._mutex.release()
        if self._file is not None:
            self._file.release()
            Path(self._file.lock_file).unlink(missing_ok=True)
            self._file = None

    def drop(self) -> None:
        """Let the lease go without a word to the database (which may not answer): the run
        could not be recorded, so a later run is to close it as abandoned."""
        if self._conn is not None:
            self._conn.invalidate()
            self._conn.close()
            self._conn = None
        if self._file is not None:
            self._file.release()
            self._file = None


def lease_is_free(conn: Connection, run_id: int, lock_dir: Path | None) -> bool:
    """True when no live process holds run `run_id`'s lease (its process is gone)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy import text

        key = run_key(run_id)
        free = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
        if free:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        return free
    lock = _file_lock(lock_dir, f"run-{run_id}")
    if not _try_acquire(lock):
        return False
    lock.release()
    Path(lock.lock_file).unlink(missing_ok=True)
    return True
