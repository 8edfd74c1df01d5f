"""Worker threads of one run: no pooled database connection is held while a provider is
asked (64 pairs in flight must not need 64 connections)."""

from __future__ import annotations

import time

from marketdata.config import load_settings
from marketdata.context import AppContext
from marketdata.domain import RunStatus
from marketdata.pipeline import IngestRequest, run_ingest
from tests.fakes.coinbase import FakeCoinbase
from tests.fakes.market import walk
from tests.fakes.server import serve

DAY = 86_400
SYMBOLS = ["BTC-USD", "ETH-USD", "SOL-USD", "ADA-USD", "XRP-USD", "DOT-USD"]


def test_pairs_hold_no_database_connection_while_their_provider_is_asked(database_url):
    now = int(time.time()) // DAY * DAY
    fake = FakeCoinbase()
    for seed, symbol in enumerate(SYMBOLS):
        fake.add(symbol, DAY, walk(now - 9 * DAY, DAY, 10, seed=seed))
    app: AppContext | None = None
    in_use: list[int] = []

    def answer(request):
        assert app is not None
        in_use.append(app.engine().pool.checkedout())
        time.sleep(0.2)  # the pairs' fetches overlap
        return fake(request)

    with serve(answer) as server:
        values = {
            "database_url": database_url,
            "coinbase_base_url": server.url,
            "ingestion_concurrency": len(SYMBOLS),
            "ingestion_lookback_days": 5,
        }
        app = AppContext(load_settings(values, environ={}))
        try:
            result = run_ingest(app, IngestRequest(symbols=SYMBOLS))
        finally:
            app.close()
    assert result.status is RunStatus.SUCCESS
    assert len(in_use) == len(SYMBOLS)
    # PostgreSQL: the run's lock session only (its lease and every pair lock); SQLite: none
    held_by_the_run = 1 if database_url.startswith("postgresql") else 0
    assert max(in_use) == held_by_the_run
