"""markets: the trading calendar a market follows (24/7, 24/5 or an exchange code)

Revision ID: 0008
Revises: 0003
Create Date: 2026-12-02 06:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL means "follow the asset class" (see marketdata.calendars.default_calendar)
    with op.batch_alter_table("markets") as batch:
        batch.add_column(sa.Column("calendar", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("markets") as batch:
        batch.drop_column("calendar")
