"""`python -m tests.drills` (what `make drills` runs): fault drills against real services.

Each drill runs `marketdata ingest` as a real process against a fresh database (PostgreSQL at
TEST_DATABASE_URL, or an SQLite file) and a fake Coinbase on loopback, injects one fault
(signals, a PostgreSQL session killed around a commit, a frozen database, a held lock, ...),
then runs the same command once more, as the next timer would, and compares what is stored
with what the provider has, candle for candle. It prints one table row per drill; the exit
status is 1 when any drill did not see what it expected.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tests.cli.helpers import run as cli
from tests.fakes.coinbase import FakeCoinbase
from tests.fakes.market import walk
from tests.fakes.server import FakeServer, Reply, serve
from tests.fakes.tcpproxy import PgSessionKiller, TcpProxy
from tests.reliability.processes import start, wait_for

HOUR = 3_600
SYMBOLS = ["BTC-USD", "ETH-USD", "SOL-USD", "ADA-USD", "XRP-USD", "DOT-USD"]
BARS = 72  # three days of hourly bars per symbol
INGEST = ["ingest", "--symbols", ",".join(SYMBOLS), "--interval", "1h"]
OUTCOME_INSERT = b"INSERT INTO ingestion_outcomes"


def log(message: str) -> None:
    """Progress on stderr, so stdout holds only the table."""
    print(f"drills: {message}", file=sys.stderr, flush=True)


@dataclass
class Row:
    """One drill's line in the table."""

    scenario: str
    expected: str
    observed: str = ""
    exit_code: str = ""
    lost: int | None = None
    duplicated: int | None = None
    ok: bool = False


@dataclass
class Database:
    """A fresh database for one drill."""

    url: str
    dialect: str

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        engine = sa.create_engine(self.url.replace("postgresql://", "postgresql+psycopg://", 1))
        try:
            with engine.connect() as conn:
                return [tuple(r) for r in conn.execute(sa.text(query))]
        finally:
            engine.dispose()


@dataclass
class World:
    """The services of the drills: the PostgreSQL server, a scratch directory, the fake."""

    server_url: str
    scratch: Path
    fake: FakeCoinbase
    http: FakeServer
    created: list[str] = field(default_factory=list)

    def database(self, dialect: str) -> Database:
        label = uuid.uuid4().hex[:10]
        if dialect == "sqlite":
            url = f"sqlite:///{self.scratch / label}.sqlite3"
        else:
            name = f"marketdata_drill_{label}"
            with psycopg.connect(self.server_url, autocommit=True, connect_timeout=5) as admin:
                admin.execute(f'CREATE DATABASE "{name}"')
            self.created.append(name)
            url = make_url(self.server_url).set(database=name).render_as_string(False)
        database = Database(url, dialect)
        done = cli(["db", "upgrade"], self.env(url))
        assert done.returncode == 0, done.stderr
        return database

    def env(self, database_url: str, **values: Any) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
        return {
            **keep,
            "XDG_DATA_HOME": str(self.scratch / "data"),
            "XDG_CACHE_HOME": str(self.scratch / "cache"),
            "DATABASE_URL": database_url,
            "COINBASE_BASE_URL": self.http.url,
            "INGESTION_LOOKBACK_DAYS": "3",
            "INGESTION_CONCURRENCY": "2",
            "HTTP_RETRY_ATTEMPTS": "2",
            **{k.upper(): str(v) for k, v in values.items()},
        }

    def drop_all(self) -> None:
        with psycopg.connect(self.server_url, autocommit=True, connect_timeout=5) as admin:
            for name in self.created:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def stop(proc: subprocess.Popen[str], signum: int) -> tuple[int, float, str]:
    """Send `signum`; the exit code, seconds until the process was gone, and its stderr."""
    proc.send_signal(signum)
    sent = time.monotonic()
    _, stderr = proc.communicate(timeout=60)
    return proc.returncode, time.monotonic() - sent, stderr


def tally(world: World, database: Database, row: Row) -> None:
    """Candles lost and duplicated against the provider, after the next (clean) run."""
    from marketdata.storage.schema import candles

    wanted = {(s, ts) for s in SYMBOLS for ts, *_ in world.fake.candles[s][HOUR]}
    engine = sa.create_engine(database.url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            query = sa.select(candles.c.symbol, candles.c.ts).where(candles.c.interval == "1h")
            stored = [(symbol, int(ts.timestamp())) for symbol, ts in conn.execute(query)]
    finally:
        engine.dispose()
    row.lost = len(wanted - set(stored))
    row.duplicated = len(stored) - len(set(stored))


def statuses(database: Database) -> list[str]:
    return [s for (s,) in database.rows("select status from ingestion_runs order by id")]


def ledger_true(database: Database) -> bool:
    """The runs' recorded inserts add up to the candles stored."""
    [(recorded,)] = database.rows("select coalesce(sum(rows_inserted), 0) from ingestion_runs")
    [(stored,)] = database.rows("select count(*) from candles")
    return int(recorded) == int(stored)


def follow_up(world: World, database: Database) -> int:
    """The next timer's run, without any fault."""
    return cli(INGEST, world.env(database.url)).returncode


# ------------------------------------------------------------------------------ the drills


def clean(world: World, dialect: str) -> Row:
    row = Row(f"clean run ({dialect})", "exit 0, success")
    db = world.database(dialect)
    done = cli(INGEST, world.env(db.url))
    row.exit_code = str(done.returncode)
    row.observed = ", ".join(statuses(db))
    tally(world, db, row)
    row.ok = done.returncode == 0 and statuses(db) == ["success"] and ledger_true(db)
    return row


def killed_session(world: World, after_commit: bool) -> Row:
    when = "after" if after_commit else "before"
    expected = "exit 0, pair ok, run goes on" if after_commit else "exit 0, pair written again, ok"
    row = Row(f"PostgreSQL session killed {when} a pair's COMMIT", expected)
    db = world.database("postgresql")
    url = make_url(db.url)
    proxy = TcpProxy(url.port or 5432)
    try:
        killer = PgSessionKiller(proxy, db.url, OUTCOME_INSERT, after_commit=after_commit)
        proxied = url.set(port=proxy.port).render_as_string(False) + "?sslmode=disable"
        done = cli(INGEST, world.env(proxied))
    finally:
        proxy.close()
    outcomes = db.rows("select status, count(*) from ingestion_outcomes group by status")
    row.exit_code = str(done.returncode)
    row.observed = f"{statuses(db)[0]}, outcomes {dict(outcomes)}, killed {len(killer.killed)}"
    counted = ledger_true(db)
    follow_up(world, db)
    tally(world, db, row)
    row.ok = done.returncode == 0 and len(killer.killed) == 1 and counted and row.lost == 0
    row.observed += ", ledger = stored" if counted else ", ledger != stored"
    return row


def signalled(world: World, dialect: str, signum: int) -> Row:
    name = signal.Signals(signum).name
    code = 128 + signum
    row = Row(f"{name} in a 50 s Retry-After wait ({dialect})", f"exit {code} < 1 s, interrupted")
    db = world.database(dialect)
    waiting = Reply(429, {"message": "slow down"}, headers={"Retry-After": "50"})
    world.http.handler = lambda r: waiting if "ETH-USD" in r.path else world.fake(r)
    try:
        proc = start(INGEST, world.env(db.url, ingestion_concurrency=1))
        wait_for(lambda: any("ETH-USD" in r.path for r in world.http.requests))
        time.sleep(0.3)
        returncode, took, _ = stop(proc, signum)
    finally:
        world.http.handler = world.fake
    row.exit_code = str(returncode)
    row.observed = f"{', '.join(statuses(db))} after {took:.2f} s"
    counted = ledger_true(db)
    follow_up(world, db)
    tally(world, db, row)
    row.ok = returncode == code and took < 1.5 and statuses(db)[0] == "interrupted" and counted
    return row


def sigkill(world: World, dialect: str) -> Row:
    row = Row(f"SIGKILL mid-run ({dialect})", "next run closes it abandoned")
    db = world.database(dialect)
    world.fake.fail_next = [Reply(200, [], delay=30.0)]
    proc = start(INGEST, world.env(db.url))
    wait_for(lambda: bool(world.http.requests))
    returncode, _, _ = stop(proc, signal.SIGKILL)
    world.fake.fail_next = []
    follow_up(world, db)
    row.exit_code = str(returncode)
    row.observed = " then ".join(statuses(db))
    tally(world, db, row)
    row.ok = statuses(db) == ["abandoned", "success"]
    return row


def frozen_database(world: World) -> Row:
    row = Row("PostgreSQL froze mid-run, then SIGTERM", "exit 143, next run closes it")
    db = world.database("postgresql")
    url = make_url(db.url)
    proxy = TcpProxy(url.port or 5432)

    def freeze_then_answer(request: Any) -> Reply:
        proxy.freeze()
        return world.fake(request)

    world.http.handler = freeze_then_answer
    try:
        proxied = url.set(port=proxy.port).render_as_string(False) + "?sslmode=disable"
        proc = start(INGEST, world.env(proxied))
        wait_for(lambda: bool(world.http.requests))
        time.sleep(1.0)
        returncode, took, _ = stop(proc, signal.SIGTERM)
        proxy.thaw()
    finally:
        world.http.handler = world.fake
        proxy.close()
    time.sleep(1.0)  # the server ends the dead process's sessions
    follow_up(world, db)
    row.exit_code = str(returncode)
    row.observed = f"{' then '.join(statuses(db))}, stopped in {took:.1f} s"
    tally(world, db, row)
    row.ok = returncode == 143 and statuses(db) == ["abandoned", "success"]
    return row


def unreachable(world: World) -> Row:
    row = Row("PostgreSQL unreachable at start", "exit 75, nothing written")
    closed = "postgresql://md@127.0.0.1:9/md"  # nothing listens on the discard port
    done = cli(INGEST, world.env(closed, db_connect_timeout=2))
    row.exit_code = str(done.returncode)
    lines = [line for line in done.stderr.splitlines() if line.startswith("marketdata: error:")]
    row.observed = "one error line" if len(lines) == 1 else f"{len(lines)} error lines"
    row.ok = done.returncode == 75 and len(lines) == 1 and "Traceback" not in done.stderr
    return row


def locked_pair(world: World) -> Row:
    row = Row("a pair locked by a stuck worker (PostgreSQL)", "exit 0, pair recorded skipped")
    db = world.database("postgresql")
    from marketdata.storage.locks import lock_key

    holder = psycopg.connect(db.url, autocommit=True)
    try:
        holder.execute("SELECT pg_advisory_lock(%s)", (lock_key("BTC-USD", "1h"),))
        done = cli(INGEST, world.env(db.url))
    finally:
        holder.close()  # the stuck worker is stopped: its session, and lock, end
    skipped = db.rows("select symbol from ingestion_outcomes where status = 'skipped'")
    row.exit_code = str(done.returncode)
    row.observed = f"{statuses(db)[0]}, skipped {[s for (s,) in skipped]}"
    follow_up(world, db)
    tally(world, db, row)
    row.ok = done.returncode == 0 and skipped == [("BTC-USD",)] and row.lost == 0
    return row


def concurrent(world: World, dialect: str, processes: int) -> Row:
    row = Row(f"{processes} processes, overlapping pairs ({dialect})", "all exit 0, no duplicate")
    db = world.database(dialect)
    procs = [start(INGEST, world.env(db.url)) for _ in range(processes)]
    codes = [p.wait(timeout=120) for p in procs]
    for p in procs:
        p.communicate()
    outcomes = db.rows("select status, count(*) from ingestion_outcomes group by status")
    row.exit_code = ",".join(str(c) for c in codes)
    row.observed = f"outcomes {dict(outcomes)}"
    tally(world, db, row)
    row.ok = codes == [0] * processes and row.lost == 0 and row.duplicated == 0
    return row


def retry_after(world: World) -> Row:
    row = Row("provider 429 with Retry-After: 1", "waits 1 s, exit 0")
    db = world.database("sqlite")
    world.fake.fail_next = [Reply(429, {"message": "slow"}, headers={"Retry-After": "1"})]
    started = time.monotonic()
    done = cli(INGEST, world.env(db.url))
    took = time.monotonic() - started
    world.fake.fail_next = []
    row.exit_code = str(done.returncode)
    row.observed = f"{statuses(db)[0]} in {took:.1f} s"
    tally(world, db, row)
    row.ok = done.returncode == 0 and took >= 1.0 and row.lost == 0
    return row


def garbage(world: World) -> Row:
    row = Row("provider sends a garbage body for one pair", "exit 3, next run catches up")
    db = world.database("postgresql")
    world.fake.fail_next = [Reply(200, "<html>oops</html>")]
    done = cli(INGEST, world.env(db.url, ingestion_concurrency=1, http_retry_attempts=1))
    world.fake.fail_next = []
    row.exit_code = str(done.returncode)
    row.observed = statuses(db)[0]
    follow_up(world, db)
    tally(world, db, row)
    row.ok = done.returncode == 3 and row.lost == 0
    return row


def render(rows: list[Row]) -> str:
    head = ["scenario", "expected", "observed", "exit code", "rows lost", "rows duplicated", ""]
    body = [
        [
            r.scenario,
            r.expected,
            r.observed,
            r.exit_code,
            "-" if r.lost is None else str(r.lost),
            "-" if r.duplicated is None else str(r.duplicated),
            "ok" if r.ok else "UNEXPECTED",
        ]
        for r in rows
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def main() -> int:
    """Run every drill, print the table; 1 when a drill saw something unexpected."""
    server_url = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    now = int(time.time()) // HOUR * HOUR
    fake = FakeCoinbase()
    for seed, symbol in enumerate(SYMBOLS):
        fake.add(symbol, HOUR, walk(now - (BARS - 1) * HOUR, HOUR, BARS, seed=seed))
    drills: list[Callable[[World], Row]] = [
        lambda w: clean(w, "sqlite"),
        lambda w: clean(w, "postgresql"),
        lambda w: killed_session(w, after_commit=True),
        lambda w: killed_session(w, after_commit=False),
        lambda w: signalled(w, "sqlite", signal.SIGTERM),
        lambda w: signalled(w, "postgresql", signal.SIGTERM),
        lambda w: signalled(w, "sqlite", signal.SIGINT),
        lambda w: sigkill(w, "sqlite"),
        lambda w: sigkill(w, "postgresql"),
        frozen_database,
        unreachable,
        locked_pair,
        lambda w: concurrent(w, "postgresql", 4),
        lambda w: concurrent(w, "sqlite", 2),
        retry_after,
        garbage,
    ]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="marketdata-drills-") as scratch, serve(fake) as http:
        world = World(server_url, Path(scratch), fake, http)
        try:
            for drill in drills:
                http.requests.clear()
                try:
                    row = drill(world)
                except Exception as exc:  # noqa: BLE001 - a drill that broke is a row too
                    row = Row(getattr(drill, "__name__", "drill"), "", f"broke: {exc!r}")
                log(f"{row.scenario}: {'ok' if row.ok else 'UNEXPECTED'}")
                rows.append(row)
        finally:
            world.drop_all()
    print(render(rows))
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    threading.excepthook = lambda args: None  # the proxy's pipes end noisily on purpose
    sys.exit(main())
