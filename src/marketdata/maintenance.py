"""Database upkeep behind `marketdata db prune|maintain|stats`: retention by policy, the
partitions the next writes need, and what the candles take up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from marketdata.domain import Interval, epoch_of
from marketdata.errors import InputError

if TYPE_CHECKING:
    from marketdata.context import AppContext
    from marketdata.storage.retention import Pruned
    from marketdata.storage.table_stats import CandleStats


def retention_plan(
    app: AppContext, interval: Interval | None, older_than: int | None
) -> list[tuple[Interval, int]]:
    """Which intervals to prune and how old their candles may be, in seconds.

    With an interval: --older-than, else its RETENTION_<INTERVAL>. Without: every interval
    whose RETENTION_<INTERVAL> is set (none by default, so nothing is pruned).

    Raises:
        InputError: --older-than without --interval, or an interval with no retention.
    """
    settings = app.settings
    if interval is None:
        if older_than is not None:
            raise InputError(
                "--older-than needs --interval: retention is kept per interval",
                hint="e.g. `marketdata db prune --interval 1m --older-than 90d`",
            )
        chosen = [(i, settings.retention(i.value)) for i in Interval]
        return [(i, seconds) for i, seconds in chosen if seconds is not None]
    seconds = older_than if older_than is not None else settings.retention(interval.value)
    if seconds is None:
        raise InputError(
            f"no retention is set for {interval} candles",
            hint=f"set RETENTION_{interval.value.upper()} (e.g. 90d) or pass --older-than",
        )
    return [(interval, seconds)]


def prune(
    app: AppContext,
    interval: Interval | None = None,
    older_than: int | None = None,
    *,
    dry_run: bool = False,
) -> list[Pruned]:
    """Remove candles older than their retention, one transaction per interval; what went
    (or, in a dry run, would go)."""
    from marketdata.storage import retention
    from marketdata.storage.engine import connect

    plan = retention_plan(app, interval, older_than)
    if not plan or not app.database_exists():
        return []
    now = epoch_of(app.clock())
    done = []
    with connect(app.engine(), app.target) as conn:
        for chosen, seconds in plan:
            with conn.begin():
                done.append(retention.prune(conn, chosen, now - seconds, dry_run=dry_run))
    return done


@dataclass(frozen=True)
class Maintained:
    """What `db maintain` did."""

    backend: str
    partitioned: bool
    created: tuple[str, ...]  # partitions made for the current and next periods
    vacuumed: tuple[str, ...]  # tables vacuumed and analysed: many dead rows (after a prune)


# VACUUM (ANALYZE) a candles table once this share of its rows is dead (a prune's boundary
# DELETE, corrections); autovacuum would too, in its own time.
DEAD_SHARE = 0.1


def maintain(app: AppContext) -> Maintained:
    """Create the partitions the next writes need (the current and next period of every
    interval), then vacuum and analyse the candle tables with many dead rows. On SQLite:
    `PRAGMA optimize` (its planner statistics); there is nothing to partition."""
    from sqlalchemy import text

    from marketdata.storage import partitions
    from marketdata.storage.engine import connect

    engine = app.engine()
    with connect(engine, app.target) as conn, conn.begin():
        partitioned = partitions.is_partitioned(conn)
        made = partitions.ensure(conn, partitions.ahead(epoch_of(app.clock())))
        if app.target.dialect == "sqlite":
            conn.execute(text("PRAGMA optimize"))
            return Maintained("sqlite", False, (), ())
        dead = conn.execute(
            text(
                "SELECT relname FROM pg_stat_user_tables WHERE (relname = 'candles' "
                "OR relname LIKE 'candles\\_%') AND n_dead_tup > 1000 "
                "AND n_dead_tup > :share * (n_live_tup + n_dead_tup) ORDER BY relname"
            ),
            {"share": DEAD_SHARE},
        ).scalars()
        tables = tuple(name for name in dead if name == "candles" or partitions.is_partition(name))
    # VACUUM cannot run inside a transaction block
    with connect(engine, app.target) as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        for name in tables:
            conn.execute(text(f"VACUUM (ANALYZE) {name}"))
    return Maintained(app.target.dialect, partitioned, tuple(p.name for p in made), tables)


def stats(app: AppContext) -> CandleStats:
    """Rows, oldest and newest candle, table and index bytes per interval and partition."""
    from marketdata.storage.engine import connect
    from marketdata.storage.table_stats import candle_stats

    with connect(app.engine(), app.target) as conn:
        return candle_stats(conn)
