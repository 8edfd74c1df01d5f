"""What every drill shares: the services (a PostgreSQL server, fake Coinbase and Kraken on
loopback), a fresh database per drill, the table row, and the candle-for-candle tally."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tests.cli.helpers import run as cli
from tests.fakes.coinbase import FakeCoinbase
from tests.fakes.kraken import FakeKraken
from tests.fakes.market import walk
from tests.fakes.server import FakeServer, Reply, Request
from tests.reliability.processes import start

HOUR = 3_600
SYMBOLS = ["BTC-USD", "ETH-USD", "SOL-USD", "ADA-USD", "XRP-USD", "DOT-USD"]
# Kraken's canonical names of the symbols a fallback drill needs it to serve
KRAKEN_PAIRS = {"BTC-USD": "XXBTZUSD", "ETH-USD": "XETHZUSD", "SOL-USD": "SOLUSD"}
# 71 closed hourly bars: every bar is inside the 3-day lookback whatever the minute, and
# every provider serves the same ones (Kraken never serves the hour still open)
BARS = 71
INGEST = ["ingest", "--symbols", ",".join(SYMBOLS), "--interval", "1h"]


def log(message: str) -> None:
    """Progress on stderr, so stdout holds only the table."""
    print(f"drills: {message}", file=sys.stderr, flush=True)


@dataclass
class Row:
    """One drill's line in the table."""

    scenario: str
    expected: str
    observed: str = ""
    exit_code: str = ""
    lost: int | None = None
    duplicated: int | None = None
    ok: bool = False


@dataclass
class Database:
    """A fresh database for one drill."""

    url: str
    dialect: str

    def rows(self, query: str, **params: Any) -> list[tuple[Any, ...]]:
        """Rows of `query`."""
        engine = sa.create_engine(self.url.replace("postgresql://", "postgresql+psycopg://", 1))
        try:
            with engine.connect() as conn:
                return [tuple(r) for r in conn.execute(sa.text(query), params)]
        finally:
            engine.dispose()

    def statuses(self) -> list[str]:
        """The runs' statuses, oldest first."""
        return [s for (s,) in self.rows("select status from ingestion_runs order by id")]

    def outcomes(self) -> dict[str, int]:
        """Outcome status -> pairs, over every run."""
        rows = self.rows("select status, count(*) from ingestion_outcomes group by status")
        return {status: int(count) for status, count in rows}


@dataclass
class Timed:
    """A fake's handler that notes when each request came (Retry-After is measured there)."""

    inner: Callable[[Request], Reply]
    seen: list[tuple[float, str]] = field(default_factory=list)

    def __call__(self, request: Request) -> Reply:
        self.seen.append((time.monotonic(), request.path))
        return self.inner(request)

    def gaps(self, needle: str) -> list[float]:
        """Seconds between consecutive requests whose path holds `needle`."""
        times = [t for t, path in self.seen if needle in path]
        return [b - a for a, b in itertools.pairwise(times)]


@dataclass
class World:
    """The services of the drills: the PostgreSQL server, a scratch directory, the fakes."""

    server_url: str
    scratch: Path
    fake: FakeCoinbase
    http: FakeServer
    kraken: FakeKraken
    kraken_http: FakeServer
    created: list[str] = field(default_factory=list)

    def market(self) -> None:
        """The providers' candles: the last BARS closed hours, made afresh for each drill so
        that an hour turning between drills does not move a bar out of the lookback."""
        last = int(time.time()) // HOUR * HOUR - HOUR
        self.fake.candles.clear()
        self.kraken.candles.clear()
        self.kraken.now = int(time.time())
        for seed, symbol in enumerate(SYMBOLS):
            rows = walk(last - (BARS - 1) * HOUR, HOUR, BARS, seed=seed)
            self.fake.add(symbol, HOUR, rows)
            if symbol in KRAKEN_PAIRS:
                self.kraken.add(KRAKEN_PAIRS[symbol], 60, rows)
        self.fake.fail_next = []
        self.http.handler = self.fake
        self.kraken_http.handler = self.kraken
        self.http.requests.clear()
        self.kraken_http.requests.clear()

    def database(self, dialect: str) -> Database:
        """A new, migrated database of `dialect` (an SQLite file, or one on the server)."""
        label = uuid.uuid4().hex[:10]
        if dialect == "sqlite":
            url = f"sqlite:///{self.scratch / label}.sqlite3"
        else:
            name = f"marketdata_drill_{label}"
            with psycopg.connect(self.server_url, autocommit=True, connect_timeout=5) as admin:
                admin.execute(f'CREATE DATABASE "{name}"')
            self.created.append(name)
            url = make_url(self.server_url).set(database=name).render_as_string(False)
        database = Database(url, dialect)
        done = cli(["db", "upgrade"], self.env(url))
        assert done.returncode == 0, done.stderr
        return database

    def env(self, database_url: str, **values: Any) -> dict[str, str]:
        """A `marketdata` process's environment: nothing of the developer's own."""
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
        return {
            **keep,
            "XDG_DATA_HOME": str(self.scratch / "data"),
            "XDG_CACHE_HOME": str(self.scratch / "cache"),
            "DATABASE_URL": database_url,
            "COINBASE_BASE_URL": self.http.url,
            "KRAKEN_BASE_URL": self.kraken_http.url,
            "INGESTION_LOOKBACK_DAYS": "3",
            "INGESTION_CONCURRENCY": "2",
            "HTTP_RETRY_ATTEMPTS": "2",
            **{k.upper(): str(v) for k, v in values.items()},
        }

    def drop_all(self) -> None:
        """Drop every database the drills made."""
        with psycopg.connect(self.server_url, autocommit=True, connect_timeout=5) as admin:
            for name in self.created:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def wanted(world: World) -> set[tuple[str, int]]:
    """(symbol, epoch seconds) of every candle the provider has."""
    return {(s, ts) for s in SYMBOLS for ts, *_ in world.fake.candles[s][HOUR]}


def tally(world: World, database: Database, row: Row) -> None:
    """Candles lost and duplicated against the provider."""
    from marketdata.storage.schema import candles

    engine = sa.create_engine(database.url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            query = sa.select(candles.c.symbol, candles.c.ts).where(candles.c.interval == "1h")
            stored = [(symbol, int(ts.timestamp())) for symbol, ts in conn.execute(query)]
    finally:
        engine.dispose()
    row.lost = len(wanted(world) - set(stored))
    row.duplicated = len(stored) - len(set(stored))


def ledger_true(database: Database) -> bool:
    """The runs' recorded inserts add up to the candles stored."""
    [(recorded,)] = database.rows("select coalesce(sum(rows_inserted), 0) from ingestion_runs")
    [(stored,)] = database.rows("select count(*) from candles")
    return int(recorded) == int(stored)


def follow_up(world: World, database: Database) -> int:
    """The next timer's run, without any fault."""
    return cli(INGEST, world.env(database.url)).returncode


def error_lines(stderr: str) -> list[str]:
    """The `marketdata: error:` lines of a run's stderr."""
    return [line for line in stderr.splitlines() if line.startswith("marketdata: error:")]


class Watched:
    """`marketdata ARGS` as a process whose stderr is read as it comes (to act on a line)."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc: subprocess.Popen[str] = start(args, env)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def saw(self, needle: str) -> bool:
        """True once a line holding `needle` was written."""
        return any(needle in line for line in list(self.lines))

    def wait(self, timeout: float = 120) -> tuple[int, str]:
        """The exit code and the whole stderr."""
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return code, "\n".join(self.lines)
