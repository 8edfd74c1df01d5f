"""Metrics benchmark: the `metrics` report over 100,000 recorded runs, on PostgreSQL and SQLite,
next to the same report over 1,000 runs and to one bare aggregate over the same table."""

from __future__ import annotations

import json
import random
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.benchmarks.common import (
    BenchError,
    Figure,
    Report,
    Server,
    best_of,
    connect,
    log,
    make_partitions,
    median,
    run_cli,
)

RUNS = 100_000
BASELINE_RUNS = 1_000
MARKETS = 200
SECONDS_TARGET = 1.0
REPEAT = 5
CLI_ROUNDS = 3
START = datetime(2023, 1, 1, tzinfo=UTC)
NOW = START + timedelta(days=400)
COLUMNS = (
    "trigger",
    "providers",
    "symbols",
    "intervals",
    "started_at",
    "finished_at",
    "status",
    "rows_inserted",
    "rows_updated",
    "rows_rejected",
    "duration_ms",
    "error",
    "host",
)


def history(count: int) -> Iterator[tuple[Any, ...]]:
    """`count` runs, one every five minutes, with a realistic mix of outcomes."""
    rng = random.Random(count)
    statuses = ["success"] * 90 + ["partial"] * 5 + ["failure"] * 4 + ["interrupted"]
    for i in range(count):
        started = START + timedelta(minutes=5 * i)
        duration = rng.lognormvariate(7.5, 1.0)  # a median of about 1.8 s
        status = rng.choice(statuses)
        yield (
            "timer" if i % 10 else "manual",
            rng.choice(("coinbase", "coinbase,kraken", "binance")),
            json.dumps([f"M{rng.randrange(MARKETS):03d}-USD"]),
            json.dumps(["1h"]),
            started,
            started + timedelta(milliseconds=duration),
            status,
            rng.randrange(200),
            rng.randrange(5),
            0,
            duration,
            "provider down" if status == "failure" else None,
            "bench",
        )


def candles() -> Iterator[tuple[Any, ...]]:
    """Two hourly candles per market, for the freshness part of the report."""
    for m in range(MARKETS):
        for hours in (2, 1):
            yield (f"M{m:03d}-USD", "1h", NOW - timedelta(hours=hours), 1, 1, 1, 1, 1, "bench", NOW)


def seed_postgres(url: str, count: int) -> None:
    """COPY the runs and candles into a migrated database."""
    make_partitions(url, "1h", NOW - timedelta(hours=2), NOW)
    with connect(url) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY ingestion_runs ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for row in history(count):
                copy.write_row(row)
        with cur.copy(
            "COPY candles (symbol, interval, ts, open, high, low, close, volume, provider, "
            "ingested_at) FROM STDIN"
        ) as copy:
            for row in candles():
                copy.write_row(row)
        cur.execute("ANALYZE")


def seed_sqlite(path: Path, count: int) -> str:
    """A migrated SQLite file holding the runs and candles; its URL."""
    url = f"sqlite:///{path}"
    run_cli(url, ["db", "upgrade"])

    def text(row: tuple[Any, ...]) -> tuple[Any, ...]:
        # stored as the tool stores them: naive UTC timestamps
        return tuple(
            v.replace(tzinfo=None).isoformat(" ") if isinstance(v, datetime) else v for v in row
        )

    with sqlite3.connect(path) as conn:
        marks = ", ".join("?" * len(COLUMNS))
        conn.executemany(
            f"INSERT INTO ingestion_runs ({', '.join(COLUMNS)}) VALUES ({marks})",
            (text(r) for r in history(count)),
        )
        conn.executemany(
            "INSERT INTO candles (symbol, interval, ts, open, high, low, close, volume, "
            "provider, ingested_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (text(r) for r in candles()),
        )
        conn.execute("ANALYZE")
    return url


@contextmanager
def sqlalchemy_connection(url: str) -> Iterator[Any]:
    from marketdata.config import load_settings
    from marketdata.storage.engine import create_engine, resolve_target

    settings = load_settings({"database_url": url}, environ={}).settings
    engine = create_engine(settings, resolve_target(settings))
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def time_report(url: str) -> tuple[float, int]:
    """Best-of wall time of build_report, and the number of runs it counted."""
    from marketdata.run_metrics import build_report

    with sqlalchemy_connection(url) as conn:
        report = build_report(conn, NOW, 7200)
        counted = sum(report.total.counts.values())
        return best_of(REPEAT, lambda: build_report(conn, NOW, 7200)), counted


def time_bare_aggregate(url: str) -> float:
    """One aggregate over the same rows, the floor any report over them pays."""
    from sqlalchemy import text

    with sqlalchemy_connection(url) as conn:
        sql = text("SELECT count(*), sum(duration_ms), max(finished_at) FROM ingestion_runs")
        return best_of(REPEAT, lambda: conn.execute(sql).all())


def measure(backend: str, big: str, small: str, report: Report) -> None:
    seconds, counted = time_report(big)
    if counted != RUNS:
        raise BenchError(f"{backend}: the report counted {counted:,} runs, not {RUNS:,}")
    baseline, _ = time_report(small)
    bare = time_bare_aggregate(big)
    report.add(
        Figure(
            f"metrics report, {RUNS:,} runs ({backend})",
            seconds=seconds,
            rows=RUNS,
            ratio=f"{seconds / baseline:.1f}x {BASELINE_RUNS:,} runs; {seconds / bare:.1f}x "
            "one bare aggregate",
            target=f"< {SECONDS_TARGET:.0f} s",
            passed=seconds < SECONDS_TARGET,
        )
    )
    cli = median([run_cli(big, ["metrics", "--json"]).seconds for _ in range(CLI_ROUNDS)])
    report.add(
        Figure(
            f"`marketdata metrics --json`, {RUNS:,} runs ({backend}), process start to exit",
            seconds=cli,
            rows=RUNS,
            target="informational",
        )
    )


def run(server: Server, report: Report) -> None:
    """Seed both backends and measure."""
    log(f"metrics: seeding {RUNS:,} and {BASELINE_RUNS:,} runs on PostgreSQL")
    big, small = server.create("metrics_big"), server.create("metrics_small")
    seed_postgres(big, RUNS)
    seed_postgres(small, BASELINE_RUNS)
    measure("PostgreSQL", big, small, report)
    with tempfile.TemporaryDirectory(prefix="marketdata-bench-") as scratch:
        log(f"metrics: seeding {RUNS:,} and {BASELINE_RUNS:,} runs on SQLite")
        big_file = seed_sqlite(Path(scratch) / "big.sqlite3", RUNS)
        small_file = seed_sqlite(Path(scratch) / "small.sqlite3", BASELINE_RUNS)
        measure("SQLite", big_file, small_file, report)
