"""candles: undefined indicators are NULL on PostgreSQL too (they were stored as NaN)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 10:00:00

SQL over both backends must give the same answer: SQLite always stored an undefined
indicator as NULL (its driver turns a float NaN into NULL), PostgreSQL's binary COPY wrote
NaN. Only PostgreSQL has rows to change; the downgrade leaves NULL in place, which the
older code reads as undefined too.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Prices are never NaN (validation rejects such candles); every other float column of
# candles is derived. Read from the database itself, so this stays true as columns come.
PRICES = frozenset({"open", "high", "low", "close", "volume"})


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    derived = [
        column["name"]
        for column in sa.inspect(bind).get_columns("candles")
        if isinstance(column["type"], sa.Float) and column["name"] not in PRICES
    ]
    if not derived:
        return
    assignments = ", ".join(f"{c} = NULLIF({c}, 'NaN'::double precision)" for c in derived)
    # only rows holding a NaN are rewritten (the names come from the catalog)
    where = " OR ".join(f"{c} = 'NaN'::double precision" for c in derived)
    op.execute(f"UPDATE candles SET {assignments} WHERE {where}")


def downgrade() -> None:
    """NULL is read as undefined by every earlier revision: nothing to undo."""
