"""Drills of a busy or broken environment: PostgreSQL lock and statement timeouts while
another session holds a lock on the candles (a long transaction), and a disk cache directory
that cannot be written (no Redis)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import psycopg

from tests.cli.helpers import run as cli
from tests.drills.common import (
    INGEST,
    SYMBOLS,
    Database,
    Row,
    Watched,
    World,
    error_lines,
    follow_up,
    ledger_true,
    tally,
)
from tests.reliability.processes import wait_for

RETRIED = "writing again"  # the warning of a pair's write tried again in a new transaction


class LockHolder:
    """Another session holding a SHARE lock on candles (reads pass, writes wait) until
    released: a long transaction, as a backup or a migration on a busy server."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=False)
        self.conn.execute("LOCK TABLE candles IN SHARE MODE")

    def release(self) -> None:
        """End the transaction: the lock is gone."""
        self.conn.rollback()
        self.conn.close()


def timeouts(kind: str) -> dict[str, float]:
    """Settings for a run whose writes meet `kind` ('lock' or 'statement') after 1 s."""
    if kind == "lock":
        return {"db_lock_timeout": 1}
    return {"db_statement_timeout": 1, "db_lock_timeout": 0}  # 0: no lock timeout at all


def busy_for_a_while(world: World, kind: str) -> Row:
    """The lock is released once the run has met the timeout and is writing again."""
    row = Row(
        f"PostgreSQL {kind} timeout: another session holds candles' lock for a while",
        "exit 0, writes retried, nothing lost",
    )
    db = world.database("postgresql")
    holder = LockHolder(db.url)
    try:
        run = Watched(INGEST, world.env(db.url, **timeouts(kind)))
        wait_for(lambda: run.saw(RETRIED) or run.proc.poll() is not None, timeout=120)
    finally:
        holder.release()
    code, stderr = run.wait()
    retried = [line for line in stderr.splitlines() if RETRIED in line]
    cause = _cause(retried[0]) if retried else "none"
    row.exit_code = str(code)
    row.observed = f"{db.statuses()[-1]}, {len(retried)} writes retried ({cause})"
    tally(world, db, row)  # no next run: this one wrote everything
    row.ok = code == 0 and bool(retried) and f"{kind} timeout" in cause and ledger_true(db)
    row.ok = row.ok and row.lost == 0 and row.duplicated == 0
    return row


def busy_throughout(world: World, kind: str) -> Row:
    """The lock is held for the whole run: every write times out, each retried, then fails."""
    row = Row(
        f"PostgreSQL {kind} timeout: the lock is held through the whole run",
        "exit 1 (every pair failed), each naming the timeout; next run catches up",
    )
    db = world.database("postgresql")
    holder = LockHolder(db.url)
    try:
        done = cli(INGEST, world.env(db.url, **timeouts(kind)), timeout=300)
    finally:
        holder.release()
    said = error_lines(done.stderr)
    named = [line for line in done.stderr.splitlines() if line.startswith(tuple(SYMBOLS))]
    [(stored,)] = db.rows("select count(*) from candles")
    row.exit_code = str(done.returncode)
    row.observed = f"{db.statuses()[-1]}, {stored} candles; {said[0] if said else 'no error'}"
    follow_up(world, db)
    tally(world, db, row)
    row.ok = (
        done.returncode == 1
        and stored == 0
        and said == ["marketdata: error: run 1 failed: 6 of 6 pairs failed"]
        and len(named) == len(SYMBOLS)
        and all(f"{kind} timeout" in line for line in named)
        and "Traceback" not in done.stderr
        and db.statuses()[-1] == "success"
    )
    row.ok = row.ok and row.lost == 0 and row.duplicated == 0
    return row


def unwritable_cache(world: World) -> Row:
    """CACHE_DIR cannot be written and there is no Redis: the data still arrives."""
    db: Database = world.database("sqlite")
    place, how = _unwritable(world.scratch / "readonly")
    row = Row(
        f"disk cache directory not writable ({how}), REDIS_URL unset",
        "exit 0, data stored, one warning naming CACHE_DIR",
    )
    env = world.env(db.url, cache_dir=place)
    env.pop("REDIS_URL", None)
    done = cli(INGEST, env)
    warned = [
        line.split("WARNING", 1)[-1].strip().replace(str(place), "CACHE_DIR")
        for line in done.stderr.splitlines()
        if "cache" in line.lower()
    ]
    row.exit_code = str(done.returncode)
    row.observed = f"{db.statuses()[-1]}, {len(warned)} warning: " + " / ".join(warned)
    tally(world, db, row)
    row.ok = done.returncode == 0 and "Traceback" not in done.stderr and ledger_true(db)
    row.ok = row.ok and len(warned) == 1 and "set CACHE_DIR" in warned[0]
    row.ok = row.ok and row.lost == 0 and row.duplicated == 0
    return row


def _unwritable(base: Path) -> tuple[Path, str]:
    """A cache directory this process cannot write, and how it was made so. Mode bits do not
    stop root: there, a regular file stands where the directory's parent should be."""
    if os.geteuid() != 0:
        base.mkdir()
        base.chmod(0o500)
        return base / "cache", "mode 0500"
    base.write_text("not a directory\n")
    return base / "cache", "its parent is a file"


def _cause(line: str) -> str:
    """'... : canceling statement due to lock timeout; writing again ...' -> the reason."""
    for words in ("lock timeout", "statement timeout"):
        if words in line:
            return words
    return line[-80:]


def drills() -> list[tuple[str, Callable[[World], Row]]]:
    """Every drill of this module, keyed, in table order."""
    return [
        ("lock-timeout-retried", lambda w: busy_for_a_while(w, "lock")),
        ("lock-timeout-held", lambda w: busy_throughout(w, "lock")),
        ("statement-timeout-retried", lambda w: busy_for_a_while(w, "statement")),
        ("statement-timeout-held", lambda w: busy_throughout(w, "statement")),
        ("cache-unwritable", unwritable_cache),
    ]
