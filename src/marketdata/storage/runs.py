"""The run ledger: ingestion_runs rows and each pair's outcome."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from marketdata.domain import PairOutcome, RunResult
from marketdata.storage.schema import ingestion_outcomes, ingestion_runs

if TYPE_CHECKING:
    from sqlalchemy import Connection


def start_run(
    conn: Connection,
    *,
    trigger: str,
    providers: list[str],
    symbols: list[str],
    intervals: list[str],
    started_at: datetime,
) -> int:
    """Insert the run row (status running) and return its id."""
    result = conn.execute(
        ingestion_runs.insert()
        .values(
            trigger=trigger,
            providers=",".join(providers),
            symbols=symbols,
            intervals=intervals,
            started_at=started_at,
            status="running",
            host=socket.gethostname()[:255],
        )
        .returning(ingestion_runs.c.id)
    )
    return int(result.scalar_one())


def record_outcome(conn: Connection, run_id: int, outcome: PairOutcome) -> None:
    """Write one pair's outcome (in the same transaction as that pair's candles)."""
    values = outcome.as_dict()
    conn.execute(ingestion_outcomes.insert().values(run_id=run_id, **values))


def finish_run(conn: Connection, result: RunResult) -> None:
    """Close the run row with its status, counts, duration and error."""
    c = ingestion_runs.c
    conn.execute(
        ingestion_runs.update()
        .where(c.id == result.run_id)
        .values(
            finished_at=result.finished_at,
            status=result.status.value,
            rows_inserted=result.rows_inserted,
            rows_updated=result.rows_updated,
            rows_rejected=sum(o.rejected for o in result.outcomes),
            duration_ms=result.duration_ms,
            error=result.error,
        )
    )


@dataclass(frozen=True)
class RunRow:
    """A stored run, for reports."""

    id: int
    trigger: str
    providers: str
    started_at: datetime
    finished_at: datetime | None
    status: str
    rows_inserted: int
    rows_updated: int
    rows_rejected: int
    duration_ms: float | None
    error: str | None


def recent_runs(
    conn: Connection, *, limit: int = 20, since: datetime | None = None
) -> list[RunRow]:
    """Runs, newest first."""
    from sqlalchemy import select

    c = ingestion_runs.c
    query = select(
        c.id,
        c.trigger,
        c.providers,
        c.started_at,
        c.finished_at,
        c.status,
        c.rows_inserted,
        c.rows_updated,
        c.rows_rejected,
        c.duration_ms,
        c.error,
    ).order_by(c.started_at.desc(), c.id.desc())
    if since is not None:
        query = query.where(c.started_at >= since)
    return [RunRow(**row) for row in conn.execute(query.limit(limit)).mappings()]


def outcomes_of(conn: Connection, run_id: int) -> list[dict[str, Any]]:
    """The per-pair outcomes recorded for a run."""
    from sqlalchemy import select

    c = ingestion_outcomes.c
    rows = conn.execute(
        select(ingestion_outcomes).where(c.run_id == run_id).order_by(c.symbol, c.interval)
    ).mappings()
    return [dict(row) for row in rows]
