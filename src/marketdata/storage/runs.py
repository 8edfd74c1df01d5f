"""The run ledger: ingestion_runs rows and each pair's outcome."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from marketdata.domain import PairOutcome, RunResult, RunStatus
from marketdata.storage.schema import ingestion_outcomes, ingestion_runs

if TYPE_CHECKING:
    from sqlalchemy import Connection, Select


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


def record_outcomes(conn: Connection, run_id: int, outcomes: list[PairOutcome]) -> None:
    """Write many pairs' outcomes in one statement. On PostgreSQL the columns travel as
    arrays through unnest: one statement text whatever the count (a multi-row VALUES is
    compiled again for every count, which cost more than the round trips it saves)."""
    if not outcomes:
        return
    if conn.dialect.name != "postgresql":
        conn.execute(
            ingestion_outcomes.insert(), [{"run_id": run_id, **o.as_dict()} for o in outcomes]
        )
        return
    from sqlalchemy import text

    columns = ", ".join(PairOutcome.__slots__)
    arrays = ", ".join(
        f"CAST(:{name} AS {_OUTCOME_TYPES[name]}[])" for name in PairOutcome.__slots__
    )
    conn.execute(
        text(
            f"INSERT INTO ingestion_outcomes (run_id, {columns}) "
            f"SELECT :run_id, * FROM unnest({arrays})"
        ),
        {
            "run_id": run_id,
            **{name: [getattr(o, name) for o in outcomes] for name in PairOutcome.__slots__},
        },
    )


# the SQL type of each outcome column, for record_outcomes' arrays
_OUTCOME_TYPES = {
    "symbol": "text",
    "interval": "text",
    "status": "text",
    "provider": "text",
    "fetched": "integer",
    "inserted": "integer",
    "updated": "integer",
    "unchanged": "integer",
    "rejected": "integer",
    "error": "text",
}


def record_outcome_once(conn: Connection, run_id: int, outcome: PairOutcome) -> bool:
    """Write a pair's outcome unless one is recorded already (a pair whose commit may have
    gone through before its connection dropped keeps that outcome); True when written."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        statement = pg_insert(ingestion_outcomes).on_conflict_do_nothing()
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        statement = sqlite_insert(ingestion_outcomes).on_conflict_do_nothing()  # type: ignore[assignment]
    result = conn.execute(statement.values(run_id=run_id, **outcome.as_dict()))
    return bool(result.rowcount)


def finish_run(conn: Connection, result: RunResult) -> None:
    """Close the run row with its status, counts, duration and error.

    The row counts are summed from the outcomes the pairs committed with their candles, so
    they are what is stored: a pair that failed at commit counts nothing, and a pair that
    committed while the run was stopping counts although the run no longer waited for it.
    """
    from sqlalchemy import func, select

    c = ingestion_runs.c
    o = ingestion_outcomes.c
    inserted, updated, rejected = conn.execute(
        select(
            func.coalesce(func.sum(o.inserted), 0),
            func.coalesce(func.sum(o.updated), 0),
            func.coalesce(func.sum(o.rejected), 0),
        ).where(o.run_id == result.run_id, o.status == "ok")
    ).one()
    conn.execute(
        ingestion_runs.update()
        .where(c.id == result.run_id)
        .values(
            finished_at=result.finished_at,
            status=result.status.value,
            rows_inserted=int(inserted),
            rows_updated=int(updated),
            rows_rejected=int(rejected),
            duration_ms=result.duration_ms,
            error=result.error,
        )
    )


@dataclass(frozen=True)
class Abandoned:
    """A run closed as abandoned: its process died while it was `running`."""

    id: int
    host: str | None
    started_at: datetime


def close_abandoned(
    conn: Connection, *, now: datetime, lock_dir: Path | None, own: int | None = None
) -> list[Abandoned]:
    """Close every `running` run whose lease is free (its process is gone) as abandoned.

    A run holds its lease (storage/locks.py) from before its row is visible until it is
    recorded, so a free lease on a running row means nobody will ever finish it; except for
    a fleet's tick, which no process holds between its jobs: it lives while one of its jobs
    waits or runs (`runs_with_jobs`), and its last job closes it.
    """
    from sqlalchemy import select

    from marketdata.storage.locks import lease_is_free

    c = ingestion_runs.c
    o = ingestion_outcomes.c
    running = conn.execute(
        select(c.id, c.host, c.started_at).where(c.status == "running").order_by(c.id)
    ).all()
    closed: list[Abandoned] = []
    queued = runs_with_jobs(conn) if running else set()
    for run_id, host, started_at in running:
        if run_id == own or run_id in queued or not lease_is_free(conn, run_id, lock_dir):
            continue
        updated = conn.execute(
            ingestion_runs.update()
            .where(c.id == run_id, c.status == "running")
            .values(
                status=RunStatus.ABANDONED.value,
                finished_at=now,
                # its pairs that committed before it died are stored: the ledger counts them
                rows_inserted=_outcome_sum(o.inserted, run_id),
                rows_updated=_outcome_sum(o.updated, run_id),
                rows_rejected=_outcome_sum(o.rejected, run_id),
                error=f"the process on {host or 'an unknown host'} ended without recording "
                "this run (killed or crashed); closed by a later run",
            )
        )
        if updated.rowcount:
            closed.append(Abandoned(run_id, host, started_at))
    return closed


def runs_with_jobs(conn: Connection) -> set[int]:
    """The runs (fleet ticks) with a job waiting or running in the job queue; empty where
    there is no queue (SQLite, or before its migration). A job whose worker died stays
    `doing` until another worker queues it again, so its run is still alive meanwhile."""
    from sqlalchemy import text

    if conn.dialect.name != "postgresql" or not conn.dialect.has_table(conn, "procrastinate_jobs"):
        return set()
    rows = conn.execute(
        text(
            "SELECT DISTINCT (args->>'run_id')::bigint FROM procrastinate_jobs "
            "WHERE status IN ('todo', 'doing') AND args ? 'run_id'"
        )
    )
    return {int(row[0]) for row in rows}


def _outcome_sum(column: Any, run_id: int) -> Any:
    """SUM(column) over run `run_id`'s committed outcomes, 0 for none (a scalar subquery)."""
    from sqlalchemy import func, select

    total = func.coalesce(func.sum(column), 0)
    return select(total).where(ingestion_outcomes.c.run_id == run_id).scalar_subquery()


def skipped_since(conn: Connection, symbol: str, interval: str) -> datetime | None:
    """When the pair's current streak of `skipped` outcomes began (None when its latest
    outcome is not a skip)."""
    from sqlalchemy import select

    o = ingestion_outcomes.c
    r = ingestion_runs.c
    history = conn.execute(
        select(o.status, r.started_at)
        .join(ingestion_runs, r.id == o.run_id)
        .where(o.symbol == symbol, o.interval == interval, o.status != "disabled")
        .order_by(r.started_at.desc(), r.id.desc())
        .limit(1000)
    ).all()
    since: datetime | None = None
    for status, started_at in history:
        if status != "skipped":
            break
        since = started_at
    return since


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
    host: str | None = None


def _run_rows() -> Select[Any]:
    from sqlalchemy import select

    c = ingestion_runs.c
    return select(
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
        c.host,
    )


def recent_runs(
    conn: Connection, *, limit: int = 20, since: datetime | None = None
) -> list[RunRow]:
    """Runs, newest first."""
    c = ingestion_runs.c
    query = _run_rows().order_by(c.started_at.desc(), c.id.desc())
    if since is not None:
        query = query.where(c.started_at >= since)
    return [RunRow(**row) for row in conn.execute(query.limit(limit)).mappings()]


@dataclass(frozen=True)
class WatchedRun:
    """A run `status` points out: still running (alive, or its process gone), or abandoned."""

    run: RunRow
    process_gone: bool = False  # running, but nobody holds its lease any more


def runs_to_watch(conn: Connection, lock_dir: Path | None, *, recent: int = 50) -> list[WatchedRun]:
    """Runs still `running` (a long one may be stuck; one whose lease is free lost its
    process and is closed by the next run) and runs `abandoned` among the latest `recent`,
    oldest first: what `status` points out under its table."""
    from marketdata.storage.locks import lease_is_free

    c = ingestion_runs.c
    running = list(
        conn.execute(
            _run_rows().where(c.status == "running").order_by(c.id).limit(recent)
        ).mappings()
    )
    queued = runs_with_jobs(conn) if running else set()
    watched = {
        row["id"]: WatchedRun(
            RunRow(**row),
            row["id"] not in queued and lease_is_free(conn, row["id"], lock_dir),
        )
        for row in running
    }
    for row in recent_runs(conn, limit=recent):
        if row.status == RunStatus.ABANDONED.value:
            watched[row.id] = WatchedRun(row)
    return sorted(watched.values(), key=lambda w: w.run.id)


def outcomes_of(conn: Connection, run_id: int) -> list[dict[str, Any]]:
    """The per-pair outcomes recorded for a run."""
    from sqlalchemy import select

    c = ingestion_outcomes.c
    rows = conn.execute(
        select(ingestion_outcomes).where(c.run_id == run_id).order_by(c.symbol, c.interval)
    ).mappings()
    return [dict(row) for row in rows]
