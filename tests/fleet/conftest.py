"""A PostgreSQL database of the fleet tests' own, and `marketdata` run in subprocesses on it
with short heartbeats and stall times."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import own_database

QUEUE_TABLES = (
    "procrastinate_events, procrastinate_periodic_defers, procrastinate_jobs, procrastinate_workers"
)


@pytest.fixture(scope="module")
def fleet_db(pg_server_url: str) -> Iterator[str]:
    """A database for this module's workers (they must not see other tests' jobs)."""
    with own_database(pg_server_url, "marketdata_fleet") as url:
        yield url


class Fleet:
    """Workers and commands on one database; every worker is killed at the end."""

    def __init__(self, url: str, env: dict[str, str], logs: Path) -> None:
        self.logs = logs
        self.url = url
        self.env = env
        self.engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        self.workers: list[subprocess.Popen[str]] = []

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "marketdata", *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )

    def json(self, *args: str, **env: str) -> Any:
        result = self.run(*args, "--json", **env)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def start_worker(self, *args: str, **env: str) -> subprocess.Popen[str]:
        log = self.logs / f"worker{len(self.workers)}.log"
        with log.open("w") as stderr:  # a file: a pipe nobody reads would fill and block it
            worker = subprocess.Popen(
                [sys.executable, "-m", "marketdata", "worker", *args],
                env={**self.env, **env},
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                text=True,
            )
        self.workers.append(worker)
        return worker

    def log_of(self, index: int) -> str:
        return (self.logs / f"worker{index}.log").read_text()

    def query(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params))

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            for worker in self.workers:
                if worker.poll() not in (None, -signal.SIGKILL, 0):
                    pytest.fail(f"a worker died: {worker.returncode}")
            time.sleep(0.1)
        pytest.fail(f"timed out waiting for {what}")

    def job_statuses(self) -> dict[str, int]:
        rows = self.query("SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY status")
        return dict(rows)

    def close(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.kill()
            worker.wait(10)
        self.engine.dispose()


@pytest.fixture
def fleet(fleet_db: str, tmp_path: Any) -> Iterator[Fleet]:
    """The module's database emptied (candles, runs and queue), and an environment for the
    commands: synthetic provider, heartbeats every 0.3 s, a worker silent 1.5 s is stalled."""
    from marketdata.storage.schema import metadata

    engine = sa.create_engine(fleet_db.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        names = ", ".join(t.name for t in metadata.sorted_tables)
        conn.execute(sa.text(f"TRUNCATE {names}, {QUEUE_TABLES} RESTART IDENTITY CASCADE"))
    engine.dispose()
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    env = {
        **keep,
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "COLUMNS": "200",
        "DATABASE_URL": fleet_db,
        "INGESTION_PROVIDER": "synthetic",
        "INGESTION_LOOKBACK_DAYS": "10",
        "WORKER_HEARTBEAT_SECONDS": "0.3",
        "WORKER_STALL_SECONDS": "1.5",
        "WORKER_RETRY_BACKOFF": "0",
        "WORKER_RETRY_ATTEMPTS": "2",
        "HTTP_RETRY_ATTEMPTS": "1",
    }
    built = Fleet(fleet_db, env, tmp_path)
    yield built
    built.close()
