"""Stop signals against a real `marketdata ingest` process: the handler only sets the cancel
event, every wait answers it within a second, and the run is recorded once, interrupted."""

from __future__ import annotations

import signal
import time
from types import SimpleNamespace

import pytest

from tests.cli.helpers import one_error_line
from tests.fakes.server import Reply
from tests.reliability.conftest import ledger, start, wait_for


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_during_a_retry_after_wait_ends_the_run_at_once_recorded_once_as_interrupted(
    coinbase, cli_env, database_url, signum, code
):
    fake, server = coinbase
    # BTC-USD is stored; ETH-USD is told to come back in 50 s
    env = cli_env(
        database_url=database_url,
        coinbase_base_url=server.url,
        ingestion_concurrency=1,
        http_retry_attempts=3,
    )
    waiting = Reply(429, {"message": "slow down"}, headers={"Retry-After": "50"})
    original = fake.__call__

    def answer(request):
        if "ETH-USD" in request.path:
            return waiting
        return original(request)

    server.handler = answer
    proc = start(["ingest", "--symbols", "BTC-USD,ETH-USD"], env)
    # a loaded machine may take a while to start the process and store BTC-USD first
    wait_for(lambda: any("ETH-USD" in r.path for r in server.requests), timeout=90)
    time.sleep(0.3)  # well inside the 50 s wait
    proc.send_signal(signum)
    sent = time.monotonic()
    _, stderr = proc.communicate(timeout=30)
    took = time.monotonic() - sent
    assert proc.returncode == code, stderr
    # the wait was 50 s; the drills time the answer itself (under 1.5 s), this bound only
    # leaves a loaded machine room to record the run and exit
    assert took < 15, f"took {took:.1f}s to stop"
    assert signal.Signals(signum).name in one_error_line(SimpleNamespace(stderr=stderr))
    runs = ledger(database_url, "select status, finished_at, rows_inserted from ingestion_runs")
    [(status, finished_at, inserted)] = runs
    assert status == "interrupted" and finished_at is not None
    stored = ledger(database_url, "select count(*) from candles where symbol = 'BTC-USD'")
    assert inserted == stored[0][0] == 31  # the pair committed before the stop is counted
    assert ledger(database_url, "select count(*) from candles where symbol = 'ETH-USD'") == [(0,)]
    outcomes = ledger(database_url, "select symbol, status from ingestion_outcomes")
    assert outcomes == [("BTC-USD", "ok")]


def test_sigterm_ends_a_run_whose_worker_is_blocked_on_a_provider_that_never_answers(
    coinbase, cli_env, database_url
):
    fake, server = coinbase
    fake.fail_next = [Reply(200, [], delay=40.0)]  # an answer that takes 40 s
    env = cli_env(database_url=database_url, coinbase_base_url=server.url, http_timeout=60)
    proc = start(["ingest", "--symbols", "BTC-USD"], env)
    wait_for(lambda: bool(server.requests), timeout=90)
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    _, stderr = proc.communicate(timeout=30)
    took = time.monotonic() - sent
    assert proc.returncode == 143, stderr
    # the worker is still waiting for its answer, 40 s away
    assert took < 15, f"took {took:.1f}s to stop"
    assert ledger(database_url, "select status from ingestion_runs") == [("interrupted",)]
    assert ledger(database_url, "select count(*) from candles") == [(0,)]
