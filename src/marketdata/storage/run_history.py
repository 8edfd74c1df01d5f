"""Reads over the run ledger for reports: aggregates in SQL, the history list, and each
market's last outcome. Nothing here loads one object per recorded run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from marketdata.domain import RunStatus
from marketdata.storage.schema import ingestion_outcomes, ingestion_runs

if TYPE_CHECKING:
    from sqlalchemy import ColumnElement, Connection


@dataclass(frozen=True, slots=True)
class GroupTotals:
    """Aggregates of the finished runs with one (trigger, providers, status)."""

    trigger: str
    providers: str
    status: str
    runs: int
    durations: int  # runs with a recorded duration
    duration_sum: float
    buckets: tuple[int, ...]  # runs with duration <= each bound, cumulative
    rows_inserted: int
    rows_updated: int
    rows_rejected: int
    last_finished: datetime | None


def _finished_runs(
    since: datetime | None, symbols: Sequence[str] | None, dialect: str
) -> list[ColumnElement[bool]]:
    """The WHERE clauses: finished runs, started at or after `since`, asked for `symbols`."""
    c = ingestion_runs.c
    where: list[ColumnElement[bool]] = [c.status != "running"]
    if since is not None:
        where.append(c.started_at >= since)
    if symbols:
        where.append(_asked_for(list(symbols), dialect))
    return where


def _asked_for(symbols: list[str], dialect: str) -> ColumnElement[bool]:
    """Runs whose symbols (a JSON array) include one of `symbols`."""
    from sqlalchemy import cast, exists, func, literal, select
    from sqlalchemy.dialects.postgresql import ARRAY, JSONB
    from sqlalchemy.types import Text

    column = ingestion_runs.c.symbols
    if dialect == "postgresql":
        return cast(column, JSONB).op("?|")(literal(symbols, ARRAY(Text)))
    each = func.json_each(column).table_valued("value")
    return exists(select(literal(1)).select_from(each).where(each.c.value.in_(symbols)))


def group_totals(
    conn: Connection,
    bounds: Sequence[float],
    *,
    since: datetime | None = None,
    symbols: Sequence[str] | None = None,
) -> list[GroupTotals]:
    """Counts, duration histogram buckets, sums and last finish per (trigger, providers,
    status), in one aggregate statement."""
    from sqlalchemy import Float, case, cast, func, select

    c = ingestion_runs.c
    duration = cast(c.duration_ms, Float)
    buckets = [func.sum(case((duration <= bound, 1), else_=0)) for bound in bounds]
    query = (
        select(
            c.trigger,
            c.providers,
            c.status,
            func.count(),
            func.count(c.duration_ms),
            func.coalesce(func.sum(duration), 0.0),
            func.coalesce(func.sum(c.rows_inserted), 0),
            func.coalesce(func.sum(c.rows_updated), 0),
            func.coalesce(func.sum(c.rows_rejected), 0),
            func.max(c.finished_at),
            *buckets,
        )
        .where(*_finished_runs(since, symbols, conn.dialect.name))
        .group_by(c.trigger, c.providers, c.status)
        .order_by(c.trigger, c.providers, c.status)
    )
    return [
        GroupTotals(
            row[0],
            row[1],
            row[2],
            int(row[3]),
            int(row[4]),
            float(row[5]),
            tuple(int(v or 0) for v in row[10:]),
            int(row[6]),
            int(row[7]),
            int(row[8]),
            row[9],
        )
        for row in conn.execute(query)
    ]


def duration_quantiles(
    conn: Connection,
    quantiles: Sequence[int],
    *,
    since: datetime | None = None,
    symbols: Sequence[str] | None = None,
) -> dict[tuple[str, str], dict[int, float]]:
    """Nearest-rank percentiles of run durations (the value at rank ceil(q/100 * n)) for all
    runs ('all', ''), per trigger ('trigger', name) and per provider chain ('provider', chain).

    PostgreSQL computes them in one statement (percentile_disc over grouping sets); SQLite has
    no percentile aggregate, so each group's durations come back as one text and numpy picks
    the ranks.
    """
    where = [
        ingestion_runs.c.duration_ms.is_not(None),
        *_finished_runs(since, symbols, conn.dialect.name),
    ]
    if conn.dialect.name == "postgresql":
        return _percentile_disc(conn, quantiles, where)
    return _nearest_ranks(conn, quantiles, where)


def _percentile_disc(
    conn: Connection, quantiles: Sequence[int], where: list[ColumnElement[bool]]
) -> dict[tuple[str, str], dict[int, float]]:
    from sqlalchemy import Float, cast, func, literal_column, select, text
    from sqlalchemy.dialects.postgresql import ARRAY

    c = ingestion_runs.c
    fractions = literal_column(
        "ARRAY[" + ", ".join(f"{q / 100:.2f}" for q in quantiles) + "]", ARRAY(Float)
    )
    values = func.percentile_disc(fractions).within_group(cast(c.duration_ms, Float))
    query = (
        select(
            func.grouping(c.trigger),
            func.grouping(c.providers),
            c.trigger,
            c.providers,
            values.label("values"),
        )
        .where(*where)
        .group_by(text("GROUPING SETS ((), (trigger), (providers))"))
    )
    found: dict[tuple[str, str], dict[int, float]] = {}
    for no_trigger, no_provider, trigger, providers, points in conn.execute(query):
        if points is None:  # the grand total of no rows at all
            continue
        key = ("all", "")
        if not no_trigger:
            key = ("trigger", trigger)
        elif not no_provider:
            key = ("provider", providers)
        found[key] = {q: float(v) for q, v in zip(quantiles, points, strict=True)}
    return found


def _nearest_ranks(
    conn: Connection, quantiles: Sequence[int], where: list[ColumnElement[bool]]
) -> dict[tuple[str, str], dict[int, float]]:
    """SQLite: each (trigger, providers) group's durations leave the database as one
    group_concat text (a handful of rows, not one per run: fetching 100,000 rows one by one
    was most of the report's time), then numpy picks the ranks. '%!.17g' prints 17
    significant digits, enough for every double to read back exactly."""
    import numpy as np
    from sqlalchemy import func, select

    c = ingestion_runs.c
    groups: dict[tuple[str, str], list[np.ndarray]] = {}
    query = select(
        c.trigger, c.providers, func.group_concat(func.printf("%!.17g", c.duration_ms))
    ).where(*where)
    for trigger, providers, joined in conn.execute(query.group_by(c.trigger, c.providers)):
        values = np.array(joined.split(","), dtype=np.float64)
        for key in (("all", ""), ("trigger", trigger), ("provider", providers)):
            groups.setdefault(key, []).append(values)
    found: dict[tuple[str, str], dict[int, float]] = {}
    for key, parts in groups.items():
        durations = np.concatenate(parts)
        ranks = {q: (len(durations) * q + 99) // 100 - 1 for q in quantiles}
        chosen = np.partition(durations, sorted(set(ranks.values())))
        found[key] = {q: float(chosen[rank]) for q, rank in ranks.items()}
    return found


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One run as the `runs` command lists it."""

    id: int
    trigger: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    duration_ms: float | None
    rows_inserted: int
    rows_updated: int
    rows_rejected: int
    providers: str
    host: str | None
    error: str | None


def run_history(
    conn: Connection, *, last: int, statuses: Sequence[str] | None = None
) -> list[HistoryRow]:
    """The newest `last` runs (optionally of some statuses only), newest first."""
    from sqlalchemy import select

    c = ingestion_runs.c
    query = select(
        c.id,
        c.trigger,
        c.status,
        c.started_at,
        c.finished_at,
        c.duration_ms,
        c.rows_inserted,
        c.rows_updated,
        c.rows_rejected,
        c.providers,
        c.host,
        c.error,
    )
    if statuses:
        query = query.where(c.status.in_(list(statuses)))
    query = query.order_by(c.id.desc()).limit(last)
    return [HistoryRow(**row) for row in conn.execute(query).mappings()]


@dataclass(frozen=True, slots=True)
class LastOutcome:
    """The latest recorded outcome of one market, with its run."""

    run_id: int
    status: str
    run_status: str
    finished_at: datetime | None
    error: str | None


def last_outcomes(
    conn: Connection, pairs: Sequence[tuple[str, str]], *, max_runs: int = 2_000
) -> dict[tuple[str, str], LastOutcome]:
    """Each pair's latest outcome, reading runs newest first by primary key in chunks until
    every pair is found (or `max_runs` runs were read): the latest run usually has them all.
    """
    from sqlalchemy import select

    wanted = set(pairs)
    found: dict[tuple[str, str], LastOutcome] = {}
    r, o = ingestion_runs.c, ingestion_outcomes.c
    below: int | None = None
    read = 0
    chunk = 50
    while wanted - found.keys() and read < max_runs:
        ids_query = select(r.id).order_by(r.id.desc()).limit(chunk)
        if below is not None:
            ids_query = ids_query.where(r.id < below)
        ids = [int(i) for i in conn.execute(ids_query).scalars()]
        if not ids:
            break
        rows = conn.execute(
            select(o.run_id, o.symbol, o.interval, o.status, o.error, r.status, r.finished_at)
            .join(ingestion_runs, r.id == o.run_id)
            .where(o.run_id.in_(ids))
            .order_by(o.run_id.desc())
        )
        for run_id, symbol, interval, status, error, run_status, finished in rows:
            key = (symbol, interval)
            if key in wanted and key not in found:
                found[key] = LastOutcome(int(run_id), status, run_status, finished, error)
        below = ids[-1]
        read += len(ids)
        chunk = min(chunk * 4, 1_000)
    return found


RUN_STATES = ("running", *(s.value for s in RunStatus))
"""Every status a run row can have."""
_STATE_ALIASES = {"failed": RunStatus.FAILURE.value, "ok": RunStatus.SUCCESS.value}


def parse_run_states(values: Sequence[str]) -> list[str]:
    """Run statuses from `--status` flags (comma lists, 'failed' for failure); InputError
    naming an unknown one."""
    from marketdata.errors import InputError

    states: dict[str, None] = {}
    for value in values:
        for part in value.split(","):
            name = part.strip().lower()
            if not name:
                continue
            name = _STATE_ALIASES.get(name, name)
            if name not in RUN_STATES:
                raise InputError(
                    f"unknown run status {part.strip()!r}",
                    hint=f"choose from {', '.join(RUN_STATES)} (or failed)",
                )
            states.setdefault(name, None)
    return list(states)
