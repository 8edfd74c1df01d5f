"""candles: partitioned on PostgreSQL, by interval then by time (SQLite unchanged)

Revision ID: 0011
Revises: 0008
Create Date: 2026-12-02 10:00:00

The existing table is converted in place, rows and derived columns with it, in the
migration's one transaction: renamed aside, a partitioned `candles` made in its place with
the partitions its rows need (see marketdata.storage.partitions), the rows copied over,
the old table dropped. The copy rewrites every row once, so on a big table the migration
first logs how long that should take. Downgrade does the reverse, into one plain table.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from loguru import logger

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ASIDE = "candles_unpartitioned"
# What the conversion sustained on a busy 2-core machine (make bench-scale: 1,000,000 rows
# in about 14.6 s), rounded down, for the estimate logged before a big table is converted.
ROWS_PER_SECOND = 60_000
BIG = 1_000_000  # rows: above this the estimate is a warning, so an operator sees it
BYTES_PER_ROW = 200  # table and key per candle with derived columns, about


def _columns(bind: sa.Connection, table: str) -> str:
    names = bind.execute(
        sa.text(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(:t) "
            "AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
        ),
        {"t": table},
    ).scalars()
    return ", ".join(f'"{name}"' for name in names)


def _announce(bind: sa.Connection, action: str) -> None:
    rows, size = bind.execute(
        sa.text(
            "SELECT c.reltuples::bigint, pg_total_relation_size(c.oid) "
            "FROM pg_class AS c WHERE c.oid = to_regclass('candles')"
        )
    ).one()
    if rows < 0:  # never analysed: count a small table, judge a big one by its size
        small = size <= 64 * 1024 * 1024
        rows = (
            bind.execute(sa.text("SELECT count(*) FROM candles")).scalar_one()
            if small
            else size // BYTES_PER_ROW
        )
    seconds = rows / ROWS_PER_SECOND
    log = logger.warning if rows > BIG else logger.info
    log(
        "{} candles: about {:,} rows, {:,} MB; expect about {:.0f} s (at {:,} rows/s); "
        "the table is locked meanwhile",
        action,
        rows,
        size // (1024 * 1024),
        seconds,
        ROWS_PER_SECOND,
    )


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    from marketdata.domain import Interval, epoch_of
    from marketdata.storage import partitions

    _announce(bind, "partitioning")
    started = time.perf_counter()
    op.execute(f"ALTER TABLE candles RENAME TO {ASIDE}")
    op.execute(f"ALTER TABLE {ASIDE} RENAME CONSTRAINT pk_candles TO pk_{ASIDE}")
    op.execute(
        f"CREATE TABLE candles (LIKE {ASIDE} INCLUDING DEFAULTS) PARTITION BY LIST (interval)"
    )
    for interval in Interval:
        op.execute(
            f"CREATE TABLE {partitions.interval_table(interval)} PARTITION OF candles "
            f"FOR VALUES IN ('{interval.value}') PARTITION BY RANGE (ts)"
        )
    spans = bind.execute(
        sa.text(
            "SELECT interval, CAST(EXTRACT(epoch FROM min(ts)) AS bigint), "
            f"CAST(EXTRACT(epoch FROM max(ts)) AS bigint) FROM {ASIDE} GROUP BY interval"
        )
    ).all()
    wanted = partitions.ahead(epoch_of(datetime.now(UTC)))
    for name, first, last in spans:
        wanted += partitions.periods(Interval(name), first, last)
    partitions.ensure(bind, wanted)
    columns = _columns(bind, ASIDE)
    copied = bind.execute(
        sa.text(f"INSERT INTO candles ({columns}) SELECT {columns} FROM {ASIDE}")
    ).rowcount
    # the key after the copy: one sorted build per partition, not row-by-row insertion
    op.execute("ALTER TABLE candles ADD CONSTRAINT pk_candles PRIMARY KEY (symbol, interval, ts)")
    op.execute(f"DROP TABLE {ASIDE}")
    op.execute("ANALYZE candles")
    logger.info("partitioned candles: {:,} rows in {:.1f} s", copied, time.perf_counter() - started)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    _announce(bind, "unpartitioning")
    op.execute(f"CREATE TABLE {ASIDE} (LIKE candles INCLUDING DEFAULTS)")
    columns = _columns(bind, "candles")
    op.execute(f"INSERT INTO {ASIDE} ({columns}) SELECT {columns} FROM candles")
    op.execute("DROP TABLE candles CASCADE")  # its partitions with it
    op.execute(f"ALTER TABLE {ASIDE} RENAME TO candles")
    op.execute("ALTER TABLE candles ADD CONSTRAINT pk_candles PRIMARY KEY (symbol, interval, ts)")
    op.execute("ANALYZE candles")
