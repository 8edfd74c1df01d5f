"""Database faults in the middle of a run, on real PostgreSQL: a session killed just after a
pair commits (or just before), and a database that stops answering."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from marketdata.config import load_settings
from marketdata.context import AppContext
from marketdata.domain import RunStatus
from marketdata.observability.metrics import RecordingMetrics
from marketdata.pipeline import IngestRequest, run_ingest
from tests.fakes.tcpproxy import PgSessionKiller, proxy_to
from tests.reliability.conftest import ledger

OUTCOME_INSERT = b"INSERT INTO ingestion_outcomes"


def through(proxy, database_url: str) -> str:
    """`database_url` reached through `proxy`, in clear text so the proxy can read it."""
    url = make_url(database_url).set(host="127.0.0.1", port=proxy.port)
    return url.render_as_string(hide_password=False) + "?sslmode=disable"


def app_on(database_url: str, coinbase_url: str) -> AppContext:
    values = {
        "database_url": database_url,
        "coinbase_base_url": coinbase_url,
        "ingestion_concurrency": 1,  # BTC-USD first, then ETH-USD
        "ingestion_lookback_days": 30,
        "http_retry_attempts": 1,
    }
    return AppContext(load_settings(values, environ={}), metrics=RecordingMetrics())


@pytest.fixture
def pg_url(pg_database):
    from tests.conftest import _truncate

    _truncate(pg_database)
    return pg_database


def ingest(app: AppContext):
    try:
        return run_ingest(app, IngestRequest(symbols=["BTC-USD", "ETH-USD"]))
    finally:
        app.close()


def test_a_session_killed_just_after_its_pair_committed_keeps_the_pair_and_the_run_going(
    pg_url, coinbase
):
    _, server = coinbase
    with proxy_to(make_url(pg_url).port or 5432) as proxy:
        killer = PgSessionKiller(proxy, pg_url, OUTCOME_INSERT, after_commit=True)
        result = ingest(app_on(through(proxy, pg_url), server.url))
    assert len(killer.killed) == 1  # the fault happened
    assert result.status is RunStatus.SUCCESS
    assert {(o.symbol, o.status) for o in result.outcomes} == {
        ("BTC-USD", "ok"),
        ("ETH-USD", "ok"),  # the pair after the fault was still attempted
    }
    outcomes = ledger(pg_url, "select symbol, status from ingestion_outcomes order by symbol")
    assert outcomes == [("BTC-USD", "ok"), ("ETH-USD", "ok")]  # one outcome per pair
    [(status, inserted)] = ledger(pg_url, "select status, rows_inserted from ingestion_runs")
    [(stored,)] = ledger(pg_url, "select count(*) from candles")
    assert status == "success" and inserted == stored == 62


def test_a_pair_whose_commit_never_arrived_is_written_again_and_counted_once(pg_url, coinbase):
    # the session is killed before the pair's COMMIT (a transient fault): the write is tried
    # again in a new transaction, and the pair counts its rows once
    _, server = coinbase
    with proxy_to(make_url(pg_url).port or 5432) as proxy:
        killer = PgSessionKiller(proxy, pg_url, OUTCOME_INSERT, after_commit=False)
        result = ingest(app_on(through(proxy, pg_url), server.url))
    assert len(killer.killed) == 1
    assert result.status is RunStatus.SUCCESS
    by_symbol = {o.symbol: o for o in result.outcomes}
    assert by_symbol["BTC-USD"].status == "ok" and by_symbol["BTC-USD"].inserted == 31
    assert by_symbol["ETH-USD"].status == "ok"
    outcomes = ledger(pg_url, "select symbol, status from ingestion_outcomes order by symbol")
    assert outcomes == [("BTC-USD", "ok"), ("ETH-USD", "ok")]
    [(status, inserted)] = ledger(pg_url, "select status, rows_inserted from ingestion_runs")
    [(stored,)] = ledger(pg_url, "select count(*) from candles")
    assert status == "success" and inserted == stored == 62
    assert result.rows_inserted == 62


def test_sigterm_ends_a_run_whose_database_stopped_answering(pg_url, coinbase, cli_env):
    """The database freezes while a pair is being fetched (bytes stop, sockets stay open):
    the pair's writer blocks for good; SIGTERM still ends the process with 143, and once the
    database is back the next run closes the unrecorded run as abandoned."""
    import signal
    import time

    from tests.reliability.conftest import start, wait_for

    fake, server = coinbase
    with proxy_to(make_url(pg_url).port or 5432) as proxy:
        original = fake.__call__

        def freeze_then_answer(request):
            proxy.freeze()  # the database stops answering while the provider is asked
            return original(request)

        server.handler = freeze_then_answer
        proc = start(
            ["ingest", "--symbols", "BTC-USD"],
            cli_env(database_url=through(proxy, pg_url), coinbase_base_url=server.url),
        )
        wait_for(lambda: bool(server.requests))
        time.sleep(1.0)  # the pair is blocked writing to the frozen database
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 143, stderr
        assert "could not be recorded" in stderr
        proxy.thaw()  # the database answers again; the dead process's sessions end
    assert ledger(pg_url, "select count(*) from candles") == [(0,)]
    server.handler = original
    app = app_on(pg_url, server.url)
    wait_for(lambda: _no_session_of_the_dead_run(pg_url))
    result = ingest(app)
    assert result.status is RunStatus.SUCCESS
    statuses = ledger(pg_url, "select status from ingestion_runs order by id")
    assert statuses == [("abandoned",), ("success",)]


def _no_session_of_the_dead_run(url: str) -> bool:
    """True once PostgreSQL has ended the frozen run's sessions (the lease with them)."""
    from marketdata.storage.locks import run_key

    rows = ledger(
        url,
        "select count(*) from pg_locks where locktype = 'advisory' and granted and "
        f"((classid::bigint << 32) | objid::bigint) = {run_key(1) & 0xFFFFFFFFFFFFFFFF}",
    )
    return rows == [(0,)]
