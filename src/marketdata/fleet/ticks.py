"""The run ledger of a tick run by a fleet: one ingestion_runs row per tick, one outcome per
pair written by whichever worker ran it, and the row closed by the job that completes it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from marketdata.domain import PairOutcome, RunResult, RunStatus
from marketdata.storage.schema import ingestion_outcomes, ingestion_runs

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy import Connection


# Outcome of a pair not deferred because a job of an earlier tick is still waiting for it
QUEUED = "queued"


def forget_outcome(conn: Connection, run_id: int, symbol: str, interval: str) -> None:
    """Drop a pair's outcome left by an earlier attempt of its job (a failure being retried,
    or a worker killed after the pair committed): the attempt starting now writes its own."""
    c = ingestion_outcomes.c
    conn.execute(
        ingestion_outcomes.delete().where(
            c.run_id == run_id, c.symbol == symbol, c.interval == interval
        )
    )


def record_if_missing(conn: Connection, run_id: int, outcome: PairOutcome) -> None:
    """Write an outcome the pipeline does not write itself (skips: locked, disabled, queued)."""
    from sqlalchemy import select

    c = ingestion_outcomes.c
    exists = conn.execute(
        select(c.status).where(
            c.run_id == run_id, c.symbol == outcome.symbol, c.interval == outcome.interval
        )
    ).first()
    if exists is None:
        conn.execute(ingestion_outcomes.insert().values(run_id=run_id, **outcome.as_dict()))


def recorded(conn: Connection, run_id: int) -> int:
    """How many pairs of the run have an outcome."""
    from sqlalchemy import func, select

    o = ingestion_outcomes.c
    return int(conn.execute(select(func.count()).where(o.run_id == run_id)).scalar_one())


def close_if_complete(
    conn: Connection, run_id: int, pairs: int, now: datetime
) -> tuple[RunResult, bool] | None:
    """Close the tick's run once all its `pairs` have an outcome; None while some are missing.

    Call it after the caller's outcome committed, so the last job to commit counts them all.
    The run row is locked before closing, so of two jobs finishing together one closes it
    and the other sees it closed. Returns the result and whether this call closed a running run
    (the caller reports it then; a retried job closing it again only corrects the row).
    """
    from sqlalchemy import func, select

    from marketdata.storage.runs import finish_run

    o = ingestion_outcomes.c
    count = select(func.count()).where(o.run_id == run_id)
    # most jobs end before the last one: they count without locking the run row, which
    # every job of the tick would otherwise wait for in turn
    if conn.execute(count).scalar_one() < pairs:
        return None
    r = ingestion_runs.c
    row = conn.execute(
        select(r.status, r.trigger, r.providers, r.started_at)
        .where(r.id == run_id)
        .with_for_update()
    ).first()
    if row is None or conn.execute(count).scalar_one() < pairs:
        return None
    outcomes = [
        PairOutcome(**{k: row_[k] for k in PairOutcome.__slots__})
        for row_ in conn.execute(select(ingestion_outcomes).where(o.run_id == run_id)).mappings()
    ]
    result = RunResult(run_id, row.trigger, row.providers.split(","), row.started_at)
    result.outcomes = outcomes
    result.finished_at = now
    result.status = status_of(outcomes)
    failed = [x for x in outcomes if x.status == "failed"]
    if result.status is RunStatus.FAILURE:
        result.error = next((x.error for x in failed if x.error), None)
    finish_run(conn, result)
    return result, row.status == "running"


def status_of(outcomes: list[PairOutcome]) -> RunStatus:
    """success when no pair failed, failure when every pair that ran failed, else partial
    (the rule of a run in one process)."""
    failed = sum(1 for o in outcomes if o.status == "failed")
    ran = sum(1 for o in outcomes if o.status in ("ok", "failed"))
    if failed == 0:
        return RunStatus.SUCCESS
    return RunStatus.FAILURE if failed == ran else RunStatus.PARTIAL
