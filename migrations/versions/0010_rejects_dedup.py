"""rejects: one row per provider, pair, time and reason, with how often and when last seen

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-02 10:10:00

Re-ingesting the same bad candle used to add a row each time. Existing duplicates are folded
into their first row (times_seen = how many there were, last_seen_at = the newest), then a
unique index keeps it so; the writer upserts against it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = ["provider", "symbol", "interval", "ts", "reason"]
UNIQUE = "uq_rejects_provider_symbol_interval_ts_reason"
SAME = " AND ".join(f'r2."{c}" = rejects."{c}"' for c in KEY)


def upgrade() -> None:
    with op.batch_alter_table("rejects") as batch:
        batch.add_column(
            sa.Column("times_seen", sa.Integer(), nullable=False, server_default=sa.text("1"))
        )
        batch.add_column(sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE rejects SET "
        f"times_seen = (SELECT count(*) FROM rejects r2 WHERE {SAME}), "
        f"last_seen_at = (SELECT max(r2.rejected_at) FROM rejects r2 WHERE {SAME})"
    )
    columns = ", ".join(f'"{c}"' for c in KEY)
    # a derived table, so that MySQL-style "same table in the subquery" limits do not apply
    op.execute(
        "DELETE FROM rejects WHERE id NOT IN "
        f"(SELECT id FROM (SELECT min(id) AS id FROM rejects GROUP BY {columns}) AS firsts)"
    )
    with op.batch_alter_table("rejects") as batch:
        batch.alter_column("last_seen_at", existing_type=sa.DateTime(timezone=True), nullable=False)
    op.create_index(UNIQUE, "rejects", KEY, unique=True)


def downgrade() -> None:
    op.drop_index(UNIQUE, table_name="rejects")
    with op.batch_alter_table("rejects") as batch:
        batch.drop_column("last_seen_at")
        batch.drop_column("times_seen")
