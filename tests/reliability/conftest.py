"""Running `marketdata` as a real process against the test database, and reading its ledger."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from tests.fakes.coinbase import FakeCoinbase
from tests.fakes.market import walk
from tests.fakes.server import FakeServer, serve
from tests.reliability.processes import start, wait_for

__all__ = ["ledger", "start", "wait_for"]

DAY = 86_400
HOUR = 3_600


@pytest.fixture
def coinbase() -> Iterator[tuple[FakeCoinbase, FakeServer]]:
    """A fake Coinbase with 40 days of BTC-USD and ETH-USD up to now."""
    now = int(time.time()) // DAY * DAY
    fake = FakeCoinbase()
    fake.add("BTC-USD", DAY, walk(now - 39 * DAY, DAY, 40))
    fake.add("ETH-USD", DAY, walk(now - 39 * DAY, DAY, 40, seed=7))
    with serve(fake) as server:
        yield fake, server


@pytest.fixture
def cli_env(tmp_path) -> Callable[..., dict[str, str]]:
    """The environment of a `marketdata` process: nothing of the developer's own."""

    def build(**values: Any) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
        return {
            **keep,
            "XDG_DATA_HOME": str(tmp_path / "data"),
            "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "INGESTION_LOOKBACK_DAYS": "30",
            **{k.upper(): str(v) for k, v in values.items()},
        }

    return build


def ledger(url: str, query: str) -> list[tuple[Any, ...]]:
    """Rows of `query` on the test database (SQLite or PostgreSQL)."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.text(query))]
    finally:
        engine.dispose()
