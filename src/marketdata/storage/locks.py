"""Per-(symbol, interval) locks so that several workers share work without double writes:
PostgreSQL advisory locks (across hosts), file locks beside an SQLite database."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Connection


def lock_key(symbol: str, interval: str) -> int:
    """A stable signed 64-bit advisory-lock key for a pair."""
    digest = hashlib.blake2b(f"marketdata:{symbol}:{interval}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextmanager
def pair_lock(
    conn: Connection, symbol: str, interval: str, lock_dir: Path | None
) -> Iterator[bool]:
    """Try to take the pair's lock without waiting; yields whether it was taken.

    On PostgreSQL it is a session-level advisory lock on `conn`, released on exit (or when
    the session ends, should the process die). On SQLite it is a file lock in `lock_dir`.
    """
    if conn.dialect.name == "postgresql":
        from sqlalchemy import text

        key = lock_key(symbol, interval)
        taken = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
        conn.commit()
        try:
            yield taken
        finally:
            if taken:
                conn.rollback()  # leave any failed transaction before unlocking
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
        return
    from filelock import FileLock, Timeout

    assert lock_dir is not None
    lock_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_dir / f"{symbol}_{interval}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()
