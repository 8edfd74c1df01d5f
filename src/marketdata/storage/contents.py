"""What a database holds, counted: what a schema downgrade would take away with it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Connection

# the tables holding data a downgrade can drop (derived columns and run records follow them)
DATA_TABLES = ("candles", "markets", "rejects", "ingestion_runs")


def stored_rows(conn: Connection) -> dict[str, int]:
    """Rows in each data table that exists (an empty or partly migrated database counts 0)."""
    from sqlalchemy import func, inspect, select, table

    present = set(inspect(conn).get_table_names())
    return {
        name: int(conn.execute(select(func.count()).select_from(table(name))).scalar_one())
        for name in DATA_TABLES
        if name in present
    }
