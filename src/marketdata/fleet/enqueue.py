"""Deferring a tick: one run row, then one job per due (symbol, interval) carrying the run,
its trigger and the provider chain; pairs whose job of an earlier tick still waits are
recorded as queued, not deferred twice."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING

from loguru import logger

from marketdata.domain import PairOutcome
from marketdata.fleet import ticks
from marketdata.fleet.pairs import PairJob
from marketdata.fleet.queue import PAIR_TASK, QUEUE

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from marketdata.fleet.queue import Fleet
    from marketdata.pipeline import IngestRequest

BATCH = 500  # jobs per insert


@dataclass
class Enqueued:
    """What a tick deferred."""

    run_id: int
    providers: list[str]
    deferred: list[tuple[str, str]]
    queued: list[tuple[str, str]]  # a job of an earlier tick is still waiting
    disabled: list[tuple[str, str]]


def enqueue(fleet: Fleet, request: IngestRequest) -> Enqueued:
    """Start the tick's run and defer its pairs (the fleet's app must be open); the run
    closes when the last job ends."""
    from marketdata.pipeline import resolve_symbols
    from marketdata.providers.registry import parse_chain
    from marketdata.storage.engine import connect
    from marketdata.storage.locks import RunLease
    from marketdata.storage.runs import start_run

    app = fleet.app
    chain = parse_chain(request.providers or app.settings.ingestion_provider)
    symbols, disabled = resolve_symbols(app, request)
    pairs = [(s, iv.value) for s in symbols for iv in request.intervals]
    with ExitStack() as held:
        with connect(app.engine(), app.target) as conn:
            run_id = start_run(
                conn,
                trigger=request.trigger,
                providers=chain,
                symbols=sorted(set(symbols)),
                intervals=sorted({iv.value for iv in request.intervals}),
                started_at=app.clock(),
            )
            # held until the jobs exist: from then on they keep the run alive (runs_with_jobs)
            held.callback(RunLease(app.engine(), run_id, app.lock_dir()).release)
            jobs = [
                PairJob(
                    run_id,
                    symbol,
                    interval,
                    chain,
                    request.trigger,
                    len(pairs),
                    request.mode.value,
                    request.since,
                    request.until,
                    request.lookback_days,
                )
                for symbol, interval in pairs
                if symbol not in disabled
            ]
            waiting = _waiting_locks(conn, [j.lock for j in jobs])
            result = Enqueued(run_id, chain, [], [], [p for p in pairs if p[0] in disabled])
            for symbol, interval in result.disabled:
                ticks.record_if_missing(conn, run_id, PairOutcome(symbol, interval, "disabled"))
            for job in jobs:
                if job.lock in waiting:
                    result.queued.append((job.symbol, job.interval))
                    _record_queued(conn, job)
            conn.commit()
        fresh = [j for j in jobs if j.lock not in waiting]
        for first in range(0, len(fresh), BATCH):
            _defer(fleet, fresh[first : first + BATCH], result)
        with connect(app.engine(), app.target) as conn:
            with conn.begin():
                for symbol, interval in result.queued:  # queued by another tick meanwhile
                    job = PairJob(run_id, symbol, interval, chain, request.trigger, 0)
                    _record_queued(conn, job)
            with conn.begin():  # after the commit, as a job's own close (pairs.py)
                ticks.close_if_complete(conn, run_id, len(pairs), app.clock())
    logger.bind(run_id=run_id).info(
        "run {}: {} jobs deferred, {} already queued, {} disabled",
        run_id,
        len(result.deferred),
        len(result.queued),
        len(result.disabled),
    )
    return result


def _waiting_locks(conn: Connection, locks: list[str]) -> set[str]:
    from sqlalchemy import text

    if not locks:
        return set()
    rows = conn.execute(
        text(
            "SELECT queueing_lock FROM procrastinate_jobs "
            "WHERE status = 'todo' AND queueing_lock = ANY(:locks)"
        ),
        {"locks": locks},
    )
    return {row[0] for row in rows}


def _record_queued(conn: Connection, job: PairJob) -> None:
    outcome = PairOutcome(job.symbol, job.interval, ticks.QUEUED)
    outcome.error = "a job of an earlier run is still waiting for this pair"
    ticks.record_if_missing(conn, job.run_id, outcome)


def _defer(fleet: Fleet, batch: list[PairJob], result: Enqueued) -> None:
    """Defer a batch in one statement; should another tick have queued one of its pairs
    meanwhile, one by one, recording those as queued."""
    from procrastinate.exceptions import AlreadyEnqueued
    from procrastinate.jobs import Job

    def as_job(pair: PairJob) -> Job:
        return Job(
            id=None,
            queue=QUEUE,
            lock=pair.lock,
            queueing_lock=pair.lock,
            task_name=PAIR_TASK,
            task_kwargs=pair.args(),
        )

    manager = fleet.queue.job_manager
    try:
        manager.batch_defer_jobs([as_job(p) for p in batch])
        result.deferred.extend((p.symbol, p.interval) for p in batch)
        return
    except AlreadyEnqueued:
        pass
    for pair in batch:
        try:
            manager.defer_job(as_job(pair))
            result.deferred.append((pair.symbol, pair.interval))
        except AlreadyEnqueued:
            result.queued.append((pair.symbol, pair.interval))
