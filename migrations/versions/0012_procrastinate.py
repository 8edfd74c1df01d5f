"""procrastinate's job queue (worker fleets), on PostgreSQL only

Revision ID: 0012
Revises: 0008
Create Date: 2026-12-02 09:40:00

The schema of the procrastinate release we were built against (3.10.0) is applied from a
copy kept beside this script, so the migration never changes under an upgraded package.
A later procrastinate whose schema changed gets a migration of ours that applies its
migration scripts. SQLite has no job queue: there the migration does nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA_FILE = "0012_procrastinate_3_10_0.sql"

# Every object the schema creates, for the way down (functions are found by name).
_DROP = """
DROP TABLE IF EXISTS procrastinate_events, procrastinate_periodic_defers,
    procrastinate_jobs, procrastinate_workers CASCADE;
DO $$
DECLARE f record;
BEGIN
    FOR f IN SELECT p.oid::regprocedure AS sig FROM pg_proc p
             JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = current_schema() AND p.proname LIKE 'procrastinate\\_%'
    LOOP
        EXECUTE 'DROP FUNCTION ' || f.sig || ' CASCADE';
    END LOOP;
END $$;
DROP TYPE IF EXISTS procrastinate_job_to_defer_v1, procrastinate_job_event_type,
    procrastinate_job_status CASCADE;
"""


def _execute_script(sql: str) -> None:
    # the driver's own cursor: the script has many statements, '%' and ':' of its own, which
    # SQLAlchemy's text() and parameter styles would misread
    bind = op.get_bind()
    with bind.connection.dbapi_connection.cursor() as cursor:  # type: ignore[union-attr]
        cursor.execute(sql)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    sql = resources.files("marketdata.migrations.versions").joinpath(SCHEMA_FILE).read_text()
    _execute_script(sql)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _execute_script(_DROP)
