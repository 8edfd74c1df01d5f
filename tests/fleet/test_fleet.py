"""Worker fleets on real PostgreSQL: real `marketdata worker` processes, real signals."""

from __future__ import annotations

import json
import re
import signal
import time

import pytest
import sqlalchemy as sa

from tests.cli.helpers import one_error_line

pytestmark = pytest.mark.postgres

PAIRS = ["BTC-USD", "ETH-USD", "SOL-USD", "ADA-USD", "XRP-USD", "DOT-USD"]


def _replay_changes_nothing(fleet, symbols):
    """The stored data is exact: fetching the whole window again changes no row."""
    result = fleet.json("replay", "-s", ",".join(symbols), "-i", "1h")
    assert result["status"] == "success"
    assert (result["rows_inserted"], result["rows_updated"]) == (0, 0)


def _outcomes(fleet, run_id):
    return {
        (s, i): status
        for s, i, status in fleet.query(
            "SELECT symbol, interval, status FROM ingestion_outcomes WHERE run_id = :r",
            r=run_id,
        )
    }


def _run_status(fleet, run_id):
    return fleet.query("SELECT status FROM ingestion_runs WHERE id = :r", r=run_id)[0][0]


@pytest.mark.parametrize(
    "args",
    [["ingest", "--enqueue", "-s", "BTC-USD"], ["worker"], ["jobs"], ["jobs", "--json"]],
)
def test_fleet_commands_on_sqlite_exit_2_saying_why(fleet, tmp_path, args):
    database = tmp_path / "embedded.sqlite3"
    result = fleet.run(*args, DATABASE_URL=f"sqlite:///{database}")
    assert result.returncode == 2, result.stderr
    line = one_error_line(result)
    assert "needs PostgreSQL" in line and "DATABASE_URL is sqlite" in line
    assert not database.exists()  # nothing written


def test_queueing_lock_keeps_one_waiting_job_per_pair(fleet):
    first = fleet.json("ingest", "--enqueue", "-s", "BTC-USD,ETH-USD", "-i", "1h,1d")
    second = fleet.json("ingest", "--enqueue", "-s", "BTC-USD,ETH-USD,SOL-USD", "-i", "1h,1d")
    assert len(first["deferred"]) == 4 and first["queued"] == []
    assert sorted(map(tuple, second["deferred"])) == [("SOL-USD", "1d"), ("SOL-USD", "1h")]
    assert len(second["queued"]) == 4
    assert fleet.job_statuses() == {"todo": 6}
    # every pair of the second tick is accounted for: 4 queued, 2 waiting for a worker
    outcomes = _outcomes(fleet, second["run_id"])
    assert sorted(outcomes.values()) == ["queued"] * 4
    assert _run_status(fleet, second["run_id"]) == "running"


def test_two_workers_racing_the_same_ticks_run_each_pair_once_per_tick(fleet):
    env = {"INGESTION_CRON_EXPRESSION": "* * * * * */2", "SYNTHETIC_LATENCY_MS": "150"}
    selection = ["-s", ",".join(PAIRS), "-i", "1h", "-c", "1"]
    for _ in range(2):
        fleet.start_worker(*selection, **env)

    def ticks_done() -> bool:
        rows = fleet.query("SELECT status FROM ingestion_runs WHERE trigger = 'timer'")
        return sum(1 for (s,) in rows if s != "running") >= 2

    fleet.wait_for("two ticks run by the fleet", ticks_done)
    for worker in fleet.workers:
        worker.send_signal(signal.SIGTERM)
    for worker in fleet.workers:
        assert worker.wait(30) == 0
    # each tick deferred once, however many workers saw it come, and one run per tick
    ticks, distinct = fleet.query(
        "SELECT count(*), count(DISTINCT args->>'timestamp') FROM procrastinate_jobs "
        "WHERE task_name = 'marketdata.tick' AND status = 'succeeded'"
    )[0]
    runs = fleet.query("SELECT id, status FROM ingestion_runs WHERE trigger = 'timer'")
    assert len(runs) == ticks == distinct >= 2
    closed = [run_id for run_id, status in runs if status != "running"]
    for run_id in closed:
        assert _run_status(fleet, run_id) == "success"
        outcomes = _outcomes(fleet, run_id)
        assert set(outcomes) == {(p, "1h") for p in PAIRS}  # each pair once (primary key)
    # the first tick fetched everything: each pair was written by exactly one job
    first = min(closed)
    inserted = fleet.query(
        "SELECT symbol, inserted FROM ingestion_outcomes WHERE run_id = :r", r=first
    )
    stored = dict(fleet.query("SELECT symbol, count(*) FROM candles GROUP BY symbol"))
    assert dict(inserted) == stored
    # both workers ran pairs, and together each pair of each tick exactly once
    done = [re.findall(r" 1h ok: .*\(run (\d+)\)", fleet.log_of(i)) for i in range(2)]
    assert all(done), done
    ran = sorted(int(run) for runs in done for run in runs if int(run) in closed)
    # a tick that came while the last one's jobs still waited records those pairs as queued
    # (their waiting job covers them) instead of running them twice: on a slow machine
    expected = sorted(
        run_id
        for run_id in closed
        for (status,) in fleet.query(
            "SELECT status FROM ingestion_outcomes WHERE run_id = :r", r=run_id
        )
        if status != "queued"
    )
    assert ran == expected
    assert ran.count(first) == len(PAIRS)
    _replay_changes_nothing(fleet, PAIRS)


def test_a_killed_workers_job_is_picked_up_by_another_and_the_data_ends_exact(fleet):
    tick = fleet.json("ingest", "--enqueue", "-s", "BTC-USD", "-i", "1h")
    slow = fleet.start_worker("--no-ticks", SYNTHETIC_LATENCY_MS="60000")
    fleet.wait_for("the job to start", lambda: fleet.job_statuses() == {"doing": 1})
    slow.send_signal(signal.SIGKILL)
    slow.wait(10)
    # once its heartbeat is older than WORKER_STALL_SECONDS the job is listed as stalled
    time.sleep(2.0)
    report = fleet.json("jobs")
    assert report["counts"]["doing"] == 1
    assert [j["symbol"] for j in report["stalled"]] == ["BTC-USD"]
    fleet.start_worker("--no-ticks")
    fleet.wait_for("the job to succeed", lambda: fleet.job_statuses() == {"succeeded": 1})
    attempts = fleet.query("SELECT attempts FROM procrastinate_jobs")[0][0]
    assert attempts == 2  # the killed attempt, then the one that finished
    assert _run_status(fleet, tick["run_id"]) == "success"
    assert _outcomes(fleet, tick["run_id"]) == {("BTC-USD", "1h"): "ok"}
    _replay_changes_nothing(fleet, ["BTC-USD"])


def test_sigterm_lets_the_pair_in_flight_finish(fleet):
    tick = fleet.json("ingest", "--enqueue", "-s", "BTC-USD", "-i", "1h")
    worker = fleet.start_worker("--no-ticks", SYNTHETIC_LATENCY_MS="1500")
    fleet.wait_for("the job to start", lambda: fleet.job_statuses() == {"doing": 1})
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert fleet.job_statuses() == {"succeeded": 1}
    assert _outcomes(fleet, tick["run_id"]) == {("BTC-USD", "1h"): "ok"}
    assert _run_status(fleet, tick["run_id"]) == "success"


def test_a_failing_job_is_retried_then_stays_failed_with_its_error(fleet):
    # a provider whose server refuses connections: every attempt fails
    env = {"COINBASE_BASE_URL": "http://127.0.0.1:9"}
    tick = fleet.json("ingest", "--enqueue", "-s", "BTC-USD", "-i", "1h", "-p", "coinbase")
    fleet.start_worker("--no-ticks", **env)
    fleet.wait_for("the job to fail", lambda: fleet.job_statuses() == {"failed": 1})
    report = fleet.json("jobs")
    assert report["counts"]["failed"] == 1 and report["counts"]["todo"] == 0
    (failed,) = report["failed"]
    # the first attempt and WORKER_RETRY_ATTEMPTS retries, then no more
    assert failed["symbol"] == "BTC-USD" and failed["attempts"] == 3
    assert fleet.log_of(0).count("BTC-USD 1h failed: 0 fetched") == 3
    assert "127.0.0.1:9" in failed["error"]
    assert _run_status(fleet, tick["run_id"]) == "failure"
    assert [w["heartbeat_age_s"] < 5 for w in report["workers"]] == [True]
    # `jobs retry` queues it again
    retried = fleet.run("jobs", "retry", str(failed["id"]))
    assert retried.returncode == 0, retried.stderr
    fleet.wait_for(
        "the retry to fail again", lambda: fleet.log_of(0).count("1h failed: 0 fetched") == 4
    )
    fleet.wait_for("the job to stay failed", lambda: fleet.job_statuses() == {"failed": 1})


def test_jobs_cancel_cancels_a_waiting_job_and_closes_its_run(fleet):
    tick = fleet.json("ingest", "--enqueue", "-s", "BTC-USD", "-i", "1h")
    (job_id,) = [row[0] for row in fleet.query("SELECT id FROM procrastinate_jobs")]
    result = fleet.run("jobs", "cancel", str(job_id))
    assert result.returncode == 0, result.stderr
    assert fleet.job_statuses() == {"cancelled": 1}
    assert _outcomes(fleet, tick["run_id"]) == {("BTC-USD", "1h"): "cancelled"}
    assert _run_status(fleet, tick["run_id"]) == "success"
    again = fleet.run("jobs", "cancel", str(job_id))
    assert again.returncode == 2
    assert "only todo jobs can be cancelled" in one_error_line(again)


def test_the_job_queue_is_installed_by_db_upgrade_on_postgresql_only(fleet, tmp_path):
    tables = {
        r[0]
        for r in fleet.query(
            "SELECT tablename FROM pg_tables WHERE tablename LIKE 'procrastinate%'"
        )
    }
    assert tables == {
        "procrastinate_jobs",
        "procrastinate_events",
        "procrastinate_periodic_defers",
        "procrastinate_workers",
    }
    sqlite = f"sqlite:///{tmp_path / 'embedded.sqlite3'}"
    assert fleet.run("db", "upgrade", DATABASE_URL=sqlite).returncode == 0
    import sqlalchemy as sa

    engine = sa.create_engine(sqlite)
    with engine.connect() as conn:
        names = sa.inspect(conn).get_table_names()
    engine.dispose()
    assert "candles" in names and not [n for n in names if n.startswith("procrastinate")]
    json.dumps(names)


def test_workers_delete_jobs_finished_longer_ago_than_worker_keep_hours(fleet):
    tick = fleet.json("ingest", "--enqueue", "-s", "BTC-USD,ETH-USD", "-i", "1h")
    worker = fleet.start_worker("--no-ticks")
    fleet.wait_for("the jobs to succeed", lambda: fleet.job_statuses() == {"succeeded": 2})
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    with fleet.engine.begin() as conn:  # one of them ended two hours ago
        conn.exec_driver_sql(
            "UPDATE procrastinate_events SET at = at - interval '2 hours' WHERE job_id = "
            "(SELECT min(id) FROM procrastinate_jobs)"
        )
    fleet.start_worker("--no-ticks", WORKER_KEEP_HOURS="1")
    fleet.wait_for("the old job to go", lambda: fleet.job_statuses() == {"succeeded": 1})
    # the run history keeps both outcomes
    assert set(_outcomes(fleet, tick["run_id"]).values()) == {"ok"}
    assert len(_outcomes(fleet, tick["run_id"])) == 2


def test_a_plain_ingest_between_a_ticks_jobs_leaves_the_tick_running(fleet):
    # the tick's jobs wait for a worker: no process holds the tick run's lease meanwhile
    tick = fleet.json("ingest", "--enqueue", "-s", "BTC-USD,ETH-USD", "-i", "1h")
    other = fleet.json("ingest", "-s", "SOL-USD", "-i", "1h")  # closes runs left behind
    assert other["status"] == "success"
    assert _run_status(fleet, tick["run_id"]) == "running"
    said = fleet.run("status").stderr  # its notes under the table
    assert f"run {tick['run_id']} on" in said and "process is gone" not in said
    fleet.start_worker("--no-ticks")
    fleet.wait_for(
        "the tick's run to close", lambda: _run_status(fleet, tick["run_id"]) != "running"
    )
    assert _run_status(fleet, tick["run_id"]) == "success"
    assert set(_outcomes(fleet, tick["run_id"]).values()) == {"ok"}


def test_a_tick_run_whose_jobs_are_gone_is_closed_as_abandoned(fleet):
    tick = fleet.json("ingest", "--enqueue", "-s", "BTC-USD", "-i", "1h")
    with fleet.engine.begin() as conn:  # the queue emptied by hand: nobody will run it
        conn.execute(sa.text("DELETE FROM procrastinate_jobs"))
    fleet.json("ingest", "-s", "SOL-USD", "-i", "1h")
    assert _run_status(fleet, tick["run_id"]) == "abandoned"


def test_a_job_with_nothing_new_fills_the_indicators_of_an_interval_newly_analysed(fleet):
    fill = fleet.run("ingest", "-s", "BTC-USD", "-i", "1h", ANALYTICS_INTERVALS="1d")
    assert fill.returncode == 0, fill.stderr
    missing = (
        "SELECT count(*) FROM candles "
        "WHERE symbol = 'BTC-USD' AND interval = '1h' AND drawdown IS NULL"
    )
    assert fleet.query(missing)[0][0] > 200  # stored without indicators
    # a window in the past, all stored: the job fetches nothing new, whenever the test runs
    hour = int(time.time()) // 3600 * 3600
    window = [time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(hour - h * 3600)) for h in (6, 3)]
    selection = ["-s", "BTC-USD", "-i", "1h", "--since", window[0], "--until", window[1]]
    tick = fleet.json("ingest", "--enqueue", *selection)
    fleet.start_worker("--no-ticks")  # ANALYTICS_INTERVALS is now the default, 1h,1d
    fleet.wait_for("the job to succeed", lambda: fleet.job_statuses() == {"succeeded": 1})
    assert _outcomes(fleet, tick["run_id"]) == {("BTC-USD", "1h"): "ok"}
    assert fleet.query(missing)[0][0] == 0
