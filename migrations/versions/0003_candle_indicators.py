"""candles: derived indicator columns (returns, volatility, drawdown, moving averages)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 12:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    "simple_return",
    "log_return",
    "volatility_7",
    "volatility_30",
    "volatility_90",
    "drawdown",
    "sma_20",
    "sma_50",
    "sma_200",
)


def upgrade() -> None:
    # nullable columns without defaults: PostgreSQL adds them without rewriting the table
    with op.batch_alter_table("candles") as batch:
        for column in COLUMNS:
            batch.add_column(sa.Column(column, sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("candles") as batch:
        for column in reversed(COLUMNS):
            batch.drop_column(column)
