"""A run whose process died (SIGKILL) is closed as abandoned by the next run; a process
that stops answering (SIGSTOP) keeps its pairs, which other runs record as skipped."""

from __future__ import annotations

import json
import signal
import threading
from datetime import UTC, datetime, timedelta

from loguru import logger

from marketdata.config import load_settings
from marketdata.context import AppContext
from marketdata.domain import RunStatus
from marketdata.pipeline import IngestRequest, run_ingest
from marketdata.storage.engine import connect
from marketdata.storage.locks import pair_lock
from marketdata.storage.runs import recent_runs
from tests.cli.helpers import run as run_cli
from tests.fakes.server import Reply
from tests.reliability.conftest import ledger, start, wait_for


def app_on(database_url: str, coinbase_url: str, **values) -> AppContext:
    settings = {
        "database_url": database_url,
        "coinbase_base_url": coinbase_url,
        "ingestion_lookback_days": 30,
        **values,
    }
    return AppContext(load_settings(settings, environ={}))


def captured_warnings() -> tuple[list[str], int]:
    lines: list[str] = []
    handler = logger.add(lambda m: lines.append(m.record["message"]), level="WARNING")
    return lines, handler


def test_a_killed_runs_row_is_closed_as_abandoned_by_the_next_run(coinbase, cli_env, database_url):
    fake, server = coinbase
    fake.fail_next = [Reply(200, [], delay=30.0)]  # the first request hangs: kill it there
    proc = start(
        ["ingest", "--symbols", "BTC-USD"],
        cli_env(database_url=database_url, coinbase_base_url=server.url),
    )
    wait_for(lambda: bool(server.requests))
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    assert ledger(database_url, "select status from ingestion_runs") == [("running",)]
    seen = run_cli(["status"], cli_env(database_url=database_url))
    assert "its process is gone: the next run closes it as abandoned" in " ".join(
        seen.stderr.split()
    )

    lines, handler = captured_warnings()
    app = app_on(database_url, server.url)
    try:
        result = run_ingest(app, IngestRequest(symbols=["BTC-USD"]))
        with connect(app.engine(), app.target) as conn:
            runs = recent_runs(conn)
    finally:
        logger.remove(handler)
        app.close()
    assert result.status is RunStatus.SUCCESS
    statuses = {run.id: run.status for run in runs}
    killed = min(statuses)
    assert statuses == {killed: "abandoned", result.run_id: "success"}
    [abandoned] = [run for run in runs if run.id == killed]
    assert abandoned.finished_at is not None
    assert "ended without recording this run" in (abandoned.error or "")
    assert any(f"run {killed} " in line and "abandoned" in line for line in lines)
    shown = run_cli(["status"], cli_env(database_url=database_url))
    assert shown.returncode == 0, shown.stderr
    assert f"run {killed} on {abandoned.host} was abandoned" in " ".join(shown.stderr.split())
    listed = run_cli(
        ["runs", "--status", "abandoned", "--json"], cli_env(database_url=database_url)
    )
    assert [r["run_id"] for r in json.loads(listed.stdout)] == [killed]


def test_a_live_run_is_never_closed_as_abandoned(coinbase, cli_env, database_url):
    fake, server = coinbase
    fake.fail_next = [Reply(200, [], delay=3.0)]  # the first run is still fetching
    proc = start(
        ["ingest", "--symbols", "BTC-USD"],
        cli_env(database_url=database_url, coinbase_base_url=server.url),
    )
    try:
        wait_for(lambda: bool(server.requests))
        app = app_on(database_url, server.url)
        try:
            run_ingest(app, IngestRequest(symbols=["ETH-USD"]))
        finally:
            app.close()
        assert ("running",) in ledger(database_url, "select status from ingestion_runs")
    finally:
        proc.communicate(timeout=30)
    assert proc.returncode == 0
    statuses = ledger(database_url, "select status from ingestion_runs order by id")
    assert statuses == [("success",), ("success",)]


def test_a_pair_held_by_a_stuck_worker_is_recorded_skipped_and_warned_about_once_stale(
    coinbase, database_url
):
    _, server = coinbase
    holder = app_on(database_url, server.url)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:  # a worker that took BTC-USD's lock and stopped (SIGSTOP)
        with (
            connect(holder.engine(), holder.target) as conn,
            pair_lock(conn, "BTC-USD", "1d", holder.lock_dir()) as taken,
        ):
            assert taken
            held.set()
            release.wait(30)

    worker = threading.Thread(target=hold)
    worker.start()
    lines, handler = captured_warnings()
    now = datetime.now(UTC)
    try:
        assert held.wait(10)
        results = []
        for hours_later in (0, 3):  # ALERT_STALE_AFTER is 2h by default
            app = app_on(database_url, server.url)
            app.clock = lambda h=hours_later: now + timedelta(hours=h)
            try:
                results.append(run_ingest(app, IngestRequest(symbols=["BTC-USD", "ETH-USD"])))
            finally:
                app.close()
    finally:
        logger.remove(handler)
        release.set()
        worker.join()
        holder.close()
    for result in results:
        assert result.status is RunStatus.SUCCESS
        assert {o.symbol: o.status for o in result.outcomes} == {
            "BTC-USD": "skipped",
            "ETH-USD": "ok",
        }
    stored = ledger(
        database_url,
        "select run_id, status, error from ingestion_outcomes where symbol = 'BTC-USD' "
        "order by run_id",
    )
    assert [(status, error) for _, status, error in stored] == [
        ("skipped", "held by another worker")
    ] * 2
    stale = [line for line in lines if "BTC-USD 1d has been skipped since" in line]
    assert len(stale) == 1  # the second run, three hours after the first skip
    assert "ALERT_STALE_AFTER=2h" in stale[0]


def test_a_pair_lock_whose_session_died_is_free_for_the_next_run(coinbase, pg_database):
    """PostgreSQL ends a dead session's advisory locks: a worker whose connection was
    terminated cannot keep its pairs."""
    import psycopg

    from marketdata.storage.locks import lock_key
    from tests.conftest import _truncate

    _truncate(pg_database)
    _, server = coinbase
    holder = psycopg.connect(pg_database, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (lock_key("BTC-USD", "1d"),))
    [(pid,)] = holder.execute("SELECT pg_backend_pid()").fetchall()
    app = app_on(pg_database, server.url)
    try:
        first = run_ingest(app, IngestRequest(symbols=["BTC-USD"]))
        with psycopg.connect(pg_database, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
        second = run_ingest(app, IngestRequest(symbols=["BTC-USD"]))
    finally:
        app.close()
        holder.close()
    assert [o.status for o in first.outcomes] == ["skipped"]
    assert [o.status for o in second.outcomes] == ["ok"]
    assert second.rows_inserted == 31


def test_a_stuck_run_is_shown_running_in_status_and_not_closed_while_its_process_lives(
    coinbase, cli_env, database_url
):
    fake, server = coinbase
    fake.fail_next = [Reply(200, [], delay=30.0)]  # the run waits here; it is then frozen
    proc = start(
        ["ingest", "--symbols", "BTC-USD"],
        cli_env(database_url=database_url, coinbase_base_url=server.url),
    )
    try:
        wait_for(lambda: bool(server.requests))
        proc.send_signal(signal.SIGSTOP)  # alive, holding its lease and its pair, stuck
        seen = run_cli(["status"], cli_env(database_url=database_url))
        listed = run_cli(["runs", "--json"], cli_env(database_url=database_url))
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.communicate(timeout=30)
    shown = " ".join(seen.stderr.split())
    assert "run 1 on " in shown and " has been running for " in shown, seen.stderr
    assert "process is gone" not in shown  # it lives: nothing may close it as abandoned
    assert [(r["run_id"], r["status"]) for r in json.loads(listed.stdout)] == [(1, "running")]
