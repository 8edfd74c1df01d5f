"""The drills of a run's process and its database: a clean run, a PostgreSQL session killed
around a commit, stop signals in a long wait, SIGKILL, a frozen database, an unreachable one,
a pair locked by a stuck worker, concurrent processes over the same pairs."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from datetime import UTC, datetime
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from tests.cli.helpers import run as cli
from tests.drills.common import (
    INGEST,
    Row,
    World,
    error_lines,
    follow_up,
    ledger_true,
    tally,
)
from tests.fakes.server import Reply, serve
from tests.fakes.tcpproxy import PgSessionKiller, TcpProxy
from tests.reliability.processes import start, wait_for

OUTCOME_INSERT = b"INSERT INTO ingestion_outcomes"


def stop(proc: subprocess.Popen[str], signum: int) -> tuple[int, float, str]:
    """Send `signum`; the exit code, seconds until the process was gone, and its stderr."""
    proc.send_signal(signum)
    sent = time.monotonic()
    _, stderr = proc.communicate(timeout=60)
    return proc.returncode, time.monotonic() - sent, stderr


def clean(world: World, dialect: str) -> Row:
    row = Row(f"clean run ({dialect})", "exit 0, success")
    db = world.database(dialect)
    done = cli(INGEST, world.env(db.url))
    row.exit_code = str(done.returncode)
    row.observed = ", ".join(db.statuses())
    tally(world, db, row)
    row.ok = done.returncode == 0 and db.statuses() == ["success"] and ledger_true(db)
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
    row.observed = f"{db.statuses()[0]}, outcomes {dict(outcomes)}, killed {len(killer.killed)}"
    counted = ledger_true(db)
    follow_up(world, db)
    tally(world, db, row)
    row.ok = done.returncode == 0 and len(killer.killed) == 1 and counted and row.lost == 0
    row.observed += ", ledger = stored" if counted else ", ledger != stored"
    return row


def signalled(world: World, dialect: str, signum: int) -> Row:
    """A stop signal while a pair waits out a 50 s Retry-After: the run answers within a
    second (its row is closed `interrupted`) and the process is gone soon after."""
    name = signal.Signals(signum).name
    code = 128 + signum
    row = Row(
        f"{name} in a 50 s Retry-After wait ({dialect})",
        f"run recorded interrupted < 1 s, exit {code} < 5 s",
    )
    db = world.database(dialect)
    waiting = Reply(429, {"message": "slow down"}, headers={"Retry-After": "50"})
    world.http.handler = lambda r: waiting if "ETH-USD" in r.path else world.fake(r)
    try:
        proc = start(INGEST, world.env(db.url, ingestion_concurrency=1))
        wait_for(lambda: any("ETH-USD" in r.path for r in world.http.requests), timeout=60)
        time.sleep(0.3)
        sent = time.time()
        returncode, took, _ = stop(proc, signum)
    finally:
        world.http.handler = world.fake
    [(status, finished)] = db.rows("select status, finished_at from ingestion_runs")
    # the run's own record of when it stopped: the answer, apart from the interpreter's exit
    answered = _epoch(finished) - sent if finished is not None else float("inf")
    row.exit_code = str(returncode)
    row.observed = f"{status}, recorded after {answered:.2f} s, process gone after {took:.2f} s"
    counted = ledger_true(db)
    follow_up(world, db)
    tally(world, db, row)
    row.ok = returncode == code and answered < 1.0 and took < 5.0
    row.ok = row.ok and status == "interrupted" and counted and row.lost == 0
    return row


def _epoch(moment: Any) -> float:
    """Epoch seconds of a stored UTC time (an aware datetime, or SQLite's naive UTC one)."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return float(moment.timestamp())


def sigkill(world: World, dialect: str) -> Row:
    row = Row(f"SIGKILL mid-run ({dialect})", "next run closes it abandoned")
    db = world.database(dialect)
    world.fake.fail_next = [Reply(200, [], delay=30.0)]
    proc = start(INGEST, world.env(db.url))
    wait_for(lambda: bool(world.http.requests), timeout=60)
    returncode, _, _ = stop(proc, signal.SIGKILL)
    world.fake.fail_next = []
    follow_up(world, db)
    row.exit_code = str(returncode)
    row.observed = " then ".join(db.statuses())
    tally(world, db, row)
    row.ok = db.statuses() == ["abandoned", "success"]
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
        wait_for(lambda: bool(world.http.requests), timeout=60)
        time.sleep(1.0)
        returncode, took, _ = stop(proc, signal.SIGTERM)
        proxy.thaw()
    finally:
        world.http.handler = world.fake
        proxy.close()
    time.sleep(1.0)  # the server ends the dead process's sessions
    follow_up(world, db)
    row.exit_code = str(returncode)
    row.observed = f"{' then '.join(db.statuses())}, stopped in {took:.1f} s"
    tally(world, db, row)
    row.ok = returncode == 143 and db.statuses() == ["abandoned", "success"]
    return row


def unreachable(world: World) -> Row:
    row = Row(
        "PostgreSQL unreachable at start",
        "exit 75, one line, one critical alert, nothing written, next run catches up",
    )
    db = world.database("postgresql")
    closed = make_url(db.url).set(port=9).render_as_string(False)  # nothing listens on 9
    alerts: list[dict[str, Any]] = []

    def receive(request: Any) -> Reply:
        alerts.append(json.loads(request.body))
        return Reply(200, "ok")

    with serve(receive) as hook:
        env = world.env(closed, db_connect_timeout=2, alert_webhook_url=hook.url + "/hook")
        done = cli(INGEST, env)
    row.exit_code = str(done.returncode)
    lines = error_lines(done.stderr)
    severities = [alert.get("severity") for alert in alerts]
    written = db.rows(
        "select (select count(*) from ingestion_runs) + (select count(*) from candles)"
    )
    row.observed = f"{len(lines)} error line, alerts {severities}, then {follow_up(world, db)}"
    tally(world, db, row)
    row.ok = (
        done.returncode == 75
        and len(lines) == 1
        and "Traceback" not in done.stderr
        and severities == ["critical"]
        and written == [(0,)]
        and db.statuses() == ["success"]
        and row.lost == 0
    )
    row.observed = row.observed.replace("then 0", "next run exit 0")
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
    row.observed = f"{db.statuses()[0]}, skipped {[s for (s,) in skipped]}"
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
