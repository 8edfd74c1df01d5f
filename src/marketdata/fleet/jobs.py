"""`marketdata jobs`: the fleet's queue read from procrastinate's tables (counts by status,
running, stalled and failed jobs, workers and their heartbeats), retry and cancel."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from marketdata.errors import InputError
from marketdata.fleet.queue import PAIR_TASK, require_postgres

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from marketdata.context import AppContext

# procrastinate's job statuses ('aborting' is a leftover it no longer uses)
STATUSES = ("todo", "doing", "succeeded", "failed", "cancelled", "aborted")


@dataclass
class JobsReport:
    """The queue as `jobs` shows it."""

    counts: dict[str, int]
    running: list[dict[str, Any]] = field(default_factory=list)
    stalled: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)


_COUNTS = "SELECT status::text AS status, count(*) AS n FROM procrastinate_jobs GROUP BY status"
_RUNNING = """
SELECT j.id, j.args, j.attempts, j.worker_id, w.last_heartbeat,
       (SELECT max(e.at) FROM procrastinate_events e
         WHERE e.job_id = j.id AND e.type = 'started') AS started_at
  FROM procrastinate_jobs j LEFT JOIN procrastinate_workers w ON w.id = j.worker_id
 WHERE j.status = 'doing' ORDER BY j.id
"""
_FAILED = """
SELECT j.id, j.args, j.attempts,
       (SELECT max(e.at) FROM procrastinate_events e
         WHERE e.job_id = j.id AND e.type = 'failed') AS failed_at,
       o.error
  FROM procrastinate_jobs j
  LEFT JOIN ingestion_outcomes o
    ON j.task_name = :task AND o.run_id = (j.args->>'run_id')::bigint
   AND o.symbol = j.args->>'symbol' AND o.interval = j.args->>'interval'
 WHERE j.status = 'failed' ORDER BY j.id DESC LIMIT :limit
"""
_WORKERS = "SELECT id, last_heartbeat FROM procrastinate_workers ORDER BY id"


def report(app: AppContext, *, limit: int = 50) -> JobsReport:
    """Counts by status, running jobs with worker and age, stalled ones (their worker silent
    for WORKER_STALL_SECONDS), the newest failed jobs with their error, live workers."""
    from sqlalchemy import text

    from marketdata.storage.engine import connect

    require_postgres(app, "`jobs`")
    now = app.clock()
    stall = app.settings.worker_stall_seconds
    with connect(app.engine(), app.target) as conn:
        _require_queue(conn)
        counts = dict.fromkeys(STATUSES, 0)
        for status, n in conn.execute(text(_COUNTS)):
            counts[status] = int(n)
        result = JobsReport(counts)
        for m in conn.execute(text(_RUNNING)).mappings():
            job = {
                **_pair(m["id"], m["args"], m["attempts"]),
                "worker": m["worker_id"],  # procrastinate's id of the worker
                "started_at": m["started_at"],
                "age_s": _seconds(now, m["started_at"]),
                "heartbeat_age_s": _seconds(now, m["last_heartbeat"]),
            }
            result.running.append(job)
            silent = job["heartbeat_age_s"]
            if m["worker_id"] is None or (silent is not None and silent > stall):
                result.stalled.append(job)
        failed = conn.execute(text(_FAILED), {"task": PAIR_TASK, "limit": limit}).mappings()
        for m in failed:
            result.failed.append(
                {
                    **_pair(m["id"], m["args"], m["attempts"]),
                    "failed_at": m["failed_at"],
                    "error": m["error"],
                }
            )
        for m in conn.execute(text(_WORKERS)).mappings():
            result.workers.append(
                {
                    "id": m["id"],
                    "last_heartbeat": m["last_heartbeat"],
                    "heartbeat_age_s": _seconds(now, m["last_heartbeat"]),
                }
            )
    return result


def retry(app: AppContext, ids: list[int], *, all_failed: bool = False) -> list[int]:
    """Queue failed jobs again now (their attempts count on); returns the ids retried."""
    from sqlalchemy import text

    from marketdata.fleet.queue import build_fleet
    from marketdata.storage.engine import connect

    require_postgres(app, "`jobs retry`")
    with connect(app.engine(), app.target) as conn:
        _require_queue(conn)
        if all_failed:
            ids = [r[0] for r in conn.execute(text(_STATUS_IDS), {"status": "failed"})]
        else:
            _require_status(conn, ids, "failed", "retried")
    fleet = build_fleet(app)
    try:
        with fleet.queue.open():
            for job_id in ids:
                fleet.queue.job_manager.retry_job_by_id(job_id, app.clock())
    finally:
        fleet.close()
    return ids


def cancel(app: AppContext, ids: list[int]) -> list[int]:
    """Cancel waiting jobs; each pair's tick records it as cancelled (so the tick closes)."""
    from marketdata.domain import PairOutcome
    from marketdata.fleet import ticks
    from marketdata.fleet.queue import build_fleet
    from marketdata.storage.engine import connect

    require_postgres(app, "`jobs cancel`")
    with connect(app.engine(), app.target) as conn:
        _require_queue(conn)
        args = _require_status(conn, ids, "todo", "cancelled")
    fleet = build_fleet(app)
    done = []
    try:
        with fleet.queue.open():
            for job_id in ids:
                if fleet.queue.job_manager.cancel_job_by_id(job_id):
                    done.append(job_id)
    finally:
        fleet.close()
    with connect(app.engine(), app.target) as conn:
        for job_id in done:
            a = args[job_id]
            if "run_id" not in a:
                continue
            outcome = PairOutcome(a["symbol"], a["interval"], "cancelled")
            outcome.error = f"job {job_id} cancelled (`marketdata jobs cancel`)"
            with conn.begin():
                ticks.record_if_missing(conn, a["run_id"], outcome)
            with conn.begin():  # after the commit, as a job's own close (pairs.py)
                ticks.close_if_complete(conn, a["run_id"], a["pairs"], app.clock())
    return done


_STATUS_IDS = (
    "SELECT id FROM procrastinate_jobs "
    "WHERE status = CAST(:status AS procrastinate_job_status) ORDER BY id"
)


def _require_status(
    conn: Connection, ids: list[int], status: str, verb: str
) -> dict[int, dict[str, Any]]:
    from sqlalchemy import text

    if not ids:
        raise InputError(f"no job to be {verb}", hint="give job ids (`marketdata jobs`)")
    rows = conn.execute(
        text(
            "SELECT id, status::text AS status, args FROM procrastinate_jobs WHERE id = ANY(:ids)"
        ),
        {"ids": ids},
    ).mappings()
    found = {r["id"]: r for r in rows}
    for job_id in ids:
        if job_id not in found:
            raise InputError(f"there is no job {job_id}", hint="see `marketdata jobs`")
        if found[job_id]["status"] != status:
            raise InputError(
                f"job {job_id} is {found[job_id]['status']}: only {status} jobs can be {verb}"
            )
    return {job_id: dict(found[job_id]["args"]) for job_id in ids}


def _require_queue(conn: Connection) -> None:
    from marketdata.errors import SchemaError

    if not conn.dialect.has_table(conn, "procrastinate_jobs"):
        raise SchemaError("the job queue's tables are missing", hint="run `marketdata db upgrade`")


def _pair(job_id: int, args: dict[str, Any], attempts: int) -> dict[str, Any]:
    return {
        "id": job_id,
        "symbol": args.get("symbol"),
        "interval": args.get("interval"),
        "run_id": args.get("run_id"),
        "attempts": attempts,
    }


def _seconds(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else round((now - then).total_seconds(), 1)
