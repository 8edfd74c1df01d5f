"""`python -m tests.benchmarks.scale [--rows N]` (make bench-scale): the same figures over
1,000,000 stored 1m candles and over N (SCALE_ROWS, default 10,000,000), in one run.

Each size is a database of its own, filled by the bulk loader (tests/benchmarks/loader.py:
the tool's own write path, indicators included) with 100 markets' bars ending now, then:
a no-op incremental run over the 100 markets, `show SYMBOL --json`, the indicator tail after
one new candle, table + index bytes per candle, and `db prune` of the oldest month. Bytes per
candle of the unpartitioned table (schema 0008) are measured on the 1M set. Every database it
creates is dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from tests.benchmarks.common import (
    MINUTE,
    SYMBOLS,
    BenchError,
    ChildRun,
    Figure,
    Report,
    Server,
    connect,
    ingest_args,
    log,
    median,
    render,
    run_cli,
)
from tests.benchmarks.loader import Loader
from tests.benchmarks.partitioned import flat_database

BASE_ROWS = 1_000_000
DEFAULT_TOP = 10_000_000
ROUNDS = 3
TAIL_REPEAT = 9
INCREMENTAL_TARGET = 1.2
SHOW_TARGET = 1.5
TAIL_TARGET = 1.5
ENV = {"ANALYTICS_INTERVALS": "1m"}
ENV_SETTINGS = {"analytics_intervals": "1m"}
SHOWN = SYMBOLS[0]


@dataclass
class Size:
    """What one size measured."""

    rows: int
    load_seconds: float | None
    incremental: float
    incremental_fetched: int
    show: float
    show_read: float
    startup: float
    tail: float
    bytes_per_candle: float
    partitions: int
    prune_seconds: float
    pruned_rows: int
    pruned_partitions: int


def _stats(url: str) -> dict[str, object]:
    data: dict[str, object] = run_cli(url, ["db", "stats", "--json"]).json()
    return data


def build(server: Server, rows: int, *, keep: bool = False) -> tuple[str, float | None]:
    """A database filled with `rows` candles ending now; (its URL, load seconds).

    With `keep` the database is named after its size and kept at the end; a kept one that
    is already there is reused (migrated to the head, then brought up to now by the
    measurement's catch-up ingest; load seconds None), so a second run at 100M skips the
    half hour the load takes.
    """
    if keep:
        url = server.kept(f"scale_r{rows}")
        if url is not None:
            log(f"{rows:,} rows: reusing the kept database")
            return url, None
    bars = rows // len(SYMBOLS)
    url = server.create(f"scale_r{rows}" if keep else f"r{rows}", keep=keep)
    until = int(time.time()) // MINUTE * MINUTE + MINUTE  # the end of the bar open now
    loader = Loader(url)
    try:
        log(f"{rows:,} rows: loading {len(SYMBOLS)} x {bars:,} bars ...")
        loaded, seconds = loader.load(SYMBOLS, until - bars * MINUTE, until)
    finally:
        loader.close()
    log(f"{rows:,} rows: loaded {loaded:,} in {seconds:.0f} s; vacuum, analyze ...")
    with connect(url) as conn:
        conn.execute("VACUUM (ANALYZE) candles")
    return url, seconds


def measure(built: dict[int, tuple[str, float | None]]) -> dict[int, Size]:
    """Every figure on every size, the reads in alternating rounds (drift hits all alike),
    then the prune of each."""
    for url, _ in built.values():
        run_cli(url, ingest_args(SYMBOLS), ENV)  # catch up with the minutes the loads took
    runs: dict[int, list[ChildRun]] = {rows: [] for rows in built}
    shows: dict[int, list[float]] = {rows: [] for rows in built}
    starts: dict[int, list[float]] = {rows: [] for rows in built}
    reads: dict[int, list[float]] = {rows: [] for rows in built}
    tails: dict[int, list[float]] = {rows: [] for rows in built}
    for round_ in range(1, ROUNDS + 1):
        for rows, (url, _) in built.items():
            log(f"{rows:,} rows: reads, round {round_} ...")
            runs[rows].append(noop_run(url))
            show = ["show", SHOWN, "--interval", "1m", "--json"]
            shows[rows].append(run_cli(url, show, ENV).seconds)
            starts[rows].append(run_cli(url, ["db", "current"]).seconds)
            reads[rows].append(read_seconds(url))
            tails[rows].append(tail_seconds(url))
    sizes = {}
    for rows, (url, load_seconds) in built.items():
        stats = _stats(url)
        total, tables = stats["total"], stats["tables"]
        assert isinstance(total, dict) and isinstance(tables, list)
        seconds, pruned = prune_oldest(url, tables)
        sizes[rows] = Size(
            rows=int(total["rows"]),
            load_seconds=load_seconds,
            incremental=median([r.seconds for r in runs[rows]]),
            incremental_fetched=max(
                sum(int(p["fetched"]) for p in r.json()["pairs"]) for r in runs[rows]
            ),
            show=median(shows[rows]),
            show_read=min(reads[rows]),
            startup=median(starts[rows]),
            tail=min(tails[rows]),
            bytes_per_candle=float(total["bytes_per_candle"]),
            partitions=sum(1 for t in tables if t["interval"] == "1m"),
            prune_seconds=seconds,
            pruned_rows=int(pruned["rows"]),
            pruned_partitions=len(pruned["partitions_dropped"]),
        )
    return sizes


def prune_oldest(url: str, tables: list[dict[str, Any]]) -> tuple[float, dict[str, Any]]:
    """`db prune` of the oldest month holding candles: (seconds, its JSON for 1m)."""
    from marketdata.domain import epoch_of

    oldest = min((t for t in tables if t["rows"]), key=lambda t: t["start"])
    end = epoch_of(_parse(oldest["end"]))
    age = int(time.time()) - end - 60  # a minute's margin: the cutoff lands just after it
    log(f"db prune of the oldest month ({oldest['name']}) ...")
    pruned = run_cli(url, ["db", "prune", "--interval", "1m", "--older-than", f"{age}s", "--json"])
    done: dict[str, Any] = pruned.json()["intervals"][0]
    return pruned.seconds, done


NOOP_ATTEMPTS = 3


def noop_run(url: str) -> ChildRun:
    """A plain `ingest` of the markets right after a catch-up one: a no-op, unless a minute
    began between the two (then each market also writes that bar with its indicators, a
    different workload); such a run is measured again, up to NOOP_ATTEMPTS times."""
    for attempt in range(1, NOOP_ATTEMPTS + 1):
        run_cli(url, ingest_args(SYMBOLS), ENV)
        run = run_cli(url, ingest_args(SYMBOLS), ENV)
        fetched = sum(int(p["fetched"]) for p in run.json()["pairs"])
        if fetched <= len(SYMBOLS):
            return run
        log(f"  a minute began during the run ({fetched:,} fetched, attempt {attempt})")
    return run


def tail_seconds(url: str) -> float:
    """Best of TAIL_REPEAT in-process writes of the next candle of one pair with its
    indicator tail, each rolled back."""
    loader = Loader(url)
    try:
        newest = int(time.time()) // MINUTE * MINUTE + MINUTE
        return min(loader.write_next(SYMBOLS[1], newest) for _ in range(TAIL_REPEAT))
    finally:
        loader.close()


def read_seconds(url: str) -> float:
    """Best of TAIL_REPEAT in-process `show` reads (reports.show: the latest 20 candles with
    their indicators and ROI), without the CLI's start-up."""
    from marketdata.cache.keys import pair_pattern
    from marketdata.context import AppContext
    from marketdata.domain import Interval
    from marketdata.reports import show

    with tempfile.TemporaryDirectory(prefix="marketdata-bench-") as scratch:
        settings = {"database_url": url, "cache_dir": scratch, **ENV_SETTINGS}
        app = AppContext.from_settings(settings, environ={})
        try:
            times = []
            for _ in range(TAIL_REPEAT):
                # each read misses the cache, as a CLI run with a cold cache does: the
                # figure is the database's part, not a cache hit
                app.cache.delete_pattern(pair_pattern(SHOWN))
                started = time.perf_counter()
                report = show(app, SHOWN, Interval.M1, 20)
                times.append(time.perf_counter() - started)
        finally:
            app.close()
    if len(report.candles) != 20 or report.computed:
        raise BenchError(f"show read {len(report.candles)} candles, computed={report.computed}")
    return min(times)


def _parse(text: str):  # type: ignore[no-untyped-def]
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def flat_bytes_per_candle(server: Server, rows: int) -> tuple[float, float]:
    """Table + index bytes per candle of the unpartitioned table holding the same rows, and
    the seconds `db upgrade` then takes to partition it in place (migration 0011)."""
    url = flat_database(server, "flat")
    bars = rows // len(SYMBOLS)
    until = int(time.time()) // MINUTE * MINUTE + MINUTE
    loader = Loader(url)
    try:
        log(f"unpartitioned table: loading {rows:,} rows ...")
        loader.load(SYMBOLS, until - bars * MINUTE, until)
    finally:
        loader.close()
    with connect(url) as conn:
        conn.execute("VACUUM (ANALYZE) candles")
        row = conn.execute(
            "SELECT pg_total_relation_size('candles')::float8 / count(*) FROM candles"
        ).fetchone()
    assert row is not None
    log(f"db upgrade: partitioning the {rows:,} rows in place ...")
    upgrade = run_cli(url, ["db", "upgrade"])
    return float(row[0]), upgrade.seconds


def report_sizes(base: Size, top: Size, flat: float) -> Report:
    """The figures, and the ratios of the top size to the base one."""
    report = Report()
    for size in (base, top):
        label = f"{size.rows // 1_000_000}M"
        loaded = "(bulk loader)" if size.load_seconds is not None else "(kept from a run before)"
        report.add(Figure(f"load {label} {loaded}", size.load_seconds, size.rows))
        report.add(
            Figure(f"no-op incremental, {label}", size.incremental, size.incremental_fetched)
        )
        report.add(Figure(f"show --json, {label}", size.show))
        report.add(Figure(f"  show's reads in-process, {label}", size.show_read))
        report.add(Figure(f"  CLI start-up (db current), {label}", size.startup))
        report.add(Figure(f"indicator tail, 1 candle, {label}", size.tail, 1))
        report.add(Figure(f"db prune oldest month, {label}", size.prune_seconds, size.pruned_rows))
        report.add(Figure(f"bytes/candle, {label}", ratio=f"{size.bytes_per_candle:.1f} B"))
    for name, attribute, target in (
        ("no-op incremental", "incremental", INCREMENTAL_TARGET),
        ("show --json", "show", SHOW_TARGET),
        ("show's reads in-process", "show_read", SHOW_TARGET),
        ("indicator tail", "tail", TAIL_TARGET),
    ):
        ratio = getattr(top, attribute) / getattr(base, attribute)
        report.add(
            Figure(
                f"{name}: top / 1M",
                ratio=f"{ratio:.2f}x",
                target=f"<= {target}x",
                passed=ratio <= target,
            )
        )
    report.add(
        Figure(
            "db prune oldest month: top / 1M",
            ratio=f"{top.prune_seconds / base.prune_seconds:.2f}x the time for "
            f"{top.pruned_rows / max(base.pruned_rows, 1):.2f}x the rows, "
            f"{top.rows / base.rows:.0f}x the table",
        )
    )
    for size in (base, top):
        report.add(
            Figure(
                f"bytes/candle partitioned / flat, {size.rows // 1_000_000}M",
                ratio=f"{size.bytes_per_candle / flat:.3f} ({flat:.1f} B flat)",
            )
        )
    report.note(
        f"sizes: {base.rows:,} and {top.rows:,} 1m candles of {len(SYMBOLS)} markets ending "
        "now, loaded through the write path with indicators (ANALYTICS_INTERVALS=1m), then "
        "VACUUM (ANALYZE); partitions: "
        f"{base.partitions} and {top.partitions} (monthly, 1m)"
    )
    report.note(
        f"CLI figures: median of {ROUNDS} runs from process start to exit; no-op incremental: "
        "plain `ingest` of the 100 markets right after a catch-up run, measured again (up to "
        f"{NOOP_ATTEMPTS} times) when a minute began between the two (rows: candles fetched, "
        "the stored last bar of each and any minute begun since: the most of any run); "
        "in-process figures: best of "
        f"{ROUNDS} x {TAIL_REPEAT}: show's reads (reports.show, 20 candles, stored "
        "indicators, ROI), and the indicator tail (one new candle written with its "
        "indicators, rolled back); the sizes measured in alternating rounds"
    )
    report.note(
        f"db prune: the oldest month's partition dropped ({base.pruned_partitions} and "
        f"{top.pruned_partitions} partitions), plus the minute after its end deleted from the "
        "next; rows: candles removed"
    )
    report.note(
        "bytes/candle: pg_total_relation_size over the candles (tables, primary keys, TOAST) "
        f"after VACUUM; 'flat' = the unpartitioned table of schema 0008 with the same "
        f"{BASE_ROWS:,} candles; db upgrade: that table partitioned in place by migration 0011 "
        "(CLI, start-up included)"
    )
    return report


def main() -> int:
    """Measure both sizes on fresh databases, print the table; 0 unless something broke."""
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.scale")
    parser.add_argument("--rows", type=int, default=DEFAULT_TOP, help="the top size")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the top size's database for the next run, or reuse the one a run kept",
    )
    args = parser.parse_args()
    top_rows = args.rows
    started = time.perf_counter()
    server = Server.from_env()
    try:
        version = server.version()
        # only the top size is kept: the prune at the end takes its oldest month (a few
        # percent of it), but most of the 1M set's week, which is rebuilt in seconds
        built = {BASE_ROWS: build(server, BASE_ROWS)}
        built[top_rows] = build(server, top_rows, keep=args.keep)
        flat, migration = flat_bytes_per_candle(server, BASE_ROWS)
        sizes = measure(built)
        base, top = sizes[BASE_ROWS], sizes[top_rows]
    except BenchError as exc:
        print(f"bench-scale: error: {exc}", file=sys.stderr)
        return 1
    finally:
        server.drop_all()
    title = (
        f"marketdata scale benchmark: PostgreSQL {version} at {server.url.host}:"
        f"{server.url.port}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{time.perf_counter() - started:.0f} s in all"
    )
    report = report_sizes(base, top, flat)
    report.add(Figure("db upgrade to 0011 (partition in place)", migration, BASE_ROWS))
    print(render(report, title))
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
