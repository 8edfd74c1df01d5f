"""A database error in one pair is classified where it is raised: a data error fails that
pair only and the run goes on (exit 3), on both backends, from the COPY path too."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from marketdata.domain import RunStatus
from marketdata.errors import PartialRunError
from marketdata.pipeline import IngestRequest, run_ingest
from marketdata.storage.candles import count_candles
from marketdata.storage.engine import connect

NOW = datetime(2024, 4, 10, 12, 0, tzinfo=UTC)

# A trigger refusing one symbol's rows: a real constraint error raised by the database
# inside the pair's write (PostgreSQL raises it from COPY, which SQLAlchemy never wraps).
PG_TRIGGER = (
    "CREATE FUNCTION md_refuse_eth() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "IF NEW.symbol = 'ETH-USD' THEN RAISE EXCEPTION 'refused by a check' "
    "USING ERRCODE = 'check_violation'; END IF; RETURN NEW; END $$",
    "CREATE TRIGGER md_refuse_eth BEFORE INSERT ON candles "
    "FOR EACH ROW EXECUTE FUNCTION md_refuse_eth()",
)
PG_DROP = (
    "DROP TRIGGER IF EXISTS md_refuse_eth ON candles",
    "DROP FUNCTION IF EXISTS md_refuse_eth",
)
SQLITE_TRIGGER = (
    "CREATE TRIGGER md_refuse_eth BEFORE INSERT ON candles WHEN NEW.symbol = 'ETH-USD' "
    "BEGIN SELECT RAISE(ABORT, 'refused by a check'); END",
)


@pytest.fixture
def refusing_app(app_factory):
    app = app_factory(ingestion_lookback_days=20)
    app.clock = lambda: NOW
    engine = app.engine()
    postgres = app.target.dialect == "postgresql"
    with engine.begin() as conn:
        for statement in PG_TRIGGER if postgres else SQLITE_TRIGGER:
            conn.execute(sa.text(statement))
    yield app
    if postgres:  # the session's database is shared by the other tests
        with engine.begin() as conn:
            for statement in PG_DROP:
                conn.execute(sa.text(statement))


def test_a_data_error_in_one_pair_fails_that_pair_and_the_run_goes_on(refusing_app):
    request = IngestRequest(symbols=["BTC-USD", "ETH-USD", "SOL-USD"], providers=["synthetic"])
    result = run_ingest(refusing_app, request)
    assert result.status is RunStatus.PARTIAL
    assert PartialRunError("x").exit_code == 3
    by_symbol = {o.symbol: o for o in result.outcomes}
    assert by_symbol["ETH-USD"].status == "failed"
    assert "refused the statement" in (by_symbol["ETH-USD"].error or "")
    assert "refused by a check" in (by_symbol["ETH-USD"].error or "")
    assert {by_symbol[s].status for s in ("BTC-USD", "SOL-USD")} == {"ok"}
    with connect(refusing_app.engine(), refusing_app.target) as conn:
        assert count_candles(conn, "ETH-USD") == 0
        assert count_candles(conn, "BTC-USD") == count_candles(conn, "SOL-USD") > 0
