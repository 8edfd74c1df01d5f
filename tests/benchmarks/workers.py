"""Worker-fleet benchmark (`make bench-workers`): a first fill and a no-op tick of many
hourly markets, by one `ingest` process and by 1, 2 and 4 `marketdata worker` processes
(stand-ins for hosts) against a synthetic provider with a simulated network latency; a
worker SIGKILLed in the middle of a fill; and the per-pair overhead of a no-op tick.

Sizes come from the environment: BENCH_MARKETS (10000), BENCH_DAYS (30), BENCH_LATENCY_MS
(50), BENCH_CONCURRENCY (pairs at once per process, 2), BENCH_WORKERS (1,2,4). The no-op
tick's overhead is measured on its own database of BENCH_NOOP_MARKETS (10000) markets with
BENCH_NOOP_DAYS (2) of history (a no-op tick reads only each pair's last candle, so the depth
of history does not change it), so that its target holds at 10,000 pairs even when the fleet
scenarios run smaller.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from tests.benchmarks.common import (
    BenchError,
    Figure,
    Report,
    Server,
    _child_environment,
    _cli_command,
    connect,
    log,
    render,
    run_cli,
    scalar,
)

MARKETS = int(os.environ.get("BENCH_MARKETS", "10000"))
DAYS = int(os.environ.get("BENCH_DAYS", "30"))
LATENCY_MS = int(os.environ.get("BENCH_LATENCY_MS", "50"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "2"))
FLEETS = [int(n) for n in os.environ.get("BENCH_WORKERS", "1,2,4").split(",")]
SPEEDUP_TARGETS = {2: 1.8, 4: 3.0}
NOOP_MARKETS = int(os.environ.get("BENCH_NOOP_MARKETS", "10000"))
NOOP_DAYS = int(os.environ.get("BENCH_NOOP_DAYS", "2"))
NOOP_MS_PER_PAIR = 2.0
STALL_SECONDS = 5.0
SYMBOLS = [f"W{i:05d}-USD" for i in range(max(MARKETS, NOOP_MARKETS))]


@dataclass
class Fill:
    """One measured tick: wall time, the run it made and the data it left."""

    seconds: float
    run_id: int
    rows: int
    digest: tuple[int, int] = (0, 0)


def settings(latency_ms: int) -> dict[str, str]:
    """The environment of every measured process."""
    return {
        "INGESTION_PROVIDER": "synthetic",
        "INGESTION_LOOKBACK_DAYS": str(DAYS),
        "INGESTION_CONCURRENCY": str(CONCURRENCY),
        "SYNTHETIC_LATENCY_MS": str(latency_ms),
        "WORKER_HEARTBEAT_SECONDS": "1",
        "WORKER_STALL_SECONDS": str(STALL_SECONDS),
        "WORKER_RETRY_BACKOFF": "0",
        "ANALYTICS_INTERVALS": "1d",  # hourly bars without stored indicators: the fleet's cost
        "LOG_LEVEL": "WARNING",
    }


def add_markets(url: str, count: int = MARKETS) -> None:
    """`count` benchmark markets, enabled, so a tick's default selection is all of them."""
    now = datetime.now(UTC)
    copy = "COPY markets (symbol, enabled, created_at, updated_at) FROM STDIN"
    with connect(url) as conn, conn.cursor() as cur, cur.copy(copy) as cp:
        for symbol in SYMBOLS[:count]:
            cp.write_row((symbol, True, now, now))


def noop_tick(server: Server, report: Report) -> None:
    """The per-pair overhead of a tick with nothing new, NOOP_MARKETS pairs in one process
    (no latency): everything but fetching the one candle each pair asks for again."""
    log(f"no-op tick: {NOOP_MARKETS} markets x {NOOP_DAYS} days of 1h, no latency")
    url = server.create("noop")
    add_markets(url, NOOP_MARKETS)
    env = {**settings(0), "INGESTION_LOOKBACK_DAYS": str(NOOP_DAYS)}
    fill = run_cli(url, ["ingest", "-i", "1h", "--json"], env)
    hour = int(time.time()) // 3600
    tick = run_cli(url, ["ingest", "-i", "1h", "--json"], env)
    result = tick.json()
    written = int(result["rows_inserted"]) + int(result["rows_updated"])
    per_pair = tick.seconds * 1000 / NOOP_MARKETS
    report.add(
        Figure(
            f"no-op tick, 1 ingest process, {NOOP_MARKETS} pairs",
            tick.seconds,
            None,
            f"{per_pair:.2f} ms/pair",
            tick.peak_mb,
            f"<= {NOOP_MS_PER_PAIR:.0f} ms/pair",
            per_pair <= NOOP_MS_PER_PAIR,
        )
    )
    crossed = int(time.time()) // 3600 != hour or written
    report.note(
        f"no-op tick: {NOOP_MARKETS:,} pairs filled with {NOOP_DAYS} days in {fill.seconds:.0f} s, "
        f"then ticked again: {written} rows written"
        + (" (an hour began between the two: not a no-op)" if crossed else "")
        + f"; its time is the whole process, start-up included; it used {tick.cpu_seconds:.1f} s "
        f"of CPU ({tick.cpu_seconds * 1000 / NOOP_MARKETS:.2f} ms/pair) besides PostgreSQL's."
    )


class Fleet:
    """`marketdata worker` processes on one database."""

    def __init__(self, url: str, env: dict[str, str]) -> None:
        self.url = url
        self.env = env
        self.scratch = Path(tempfile.mkdtemp(prefix="marketdata-bench-fleet-"))
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, count: int) -> None:
        """Start `count` workers and wait until each has registered its heartbeat."""
        before = self.registered()
        for _ in range(count):
            index = len(self.procs)
            env_file = self.scratch / "empty.env"
            env_file.write_text("")
            command = [*_cli_command(), "--env-file", str(env_file), "--database-url", self.url]
            command += ["worker", "--no-ticks", "-c", str(CONCURRENCY)]
            with (self.scratch / f"worker{index}.log").open("w") as err:
                self.procs.append(
                    subprocess.Popen(
                        command,
                        stdout=subprocess.DEVNULL,
                        stderr=err,
                        env=_child_environment(self.scratch, self.env),
                    )
                )
        deadline = time.monotonic() + 60
        while self.registered() < before + count:
            if time.monotonic() > deadline:
                raise BenchError("workers did not start within 60 s")
            time.sleep(0.1)

    def registered(self) -> int:
        with connect(self.url) as conn:
            return int(scalar(conn, "SELECT count(*) FROM procrastinate_workers"))

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def enqueue_and_wait(url: str, env: dict[str, str], on_progress: Any = None) -> Fill:
    """`ingest --enqueue`, then wait for the tick's run to close; timed from the enqueue."""
    started = time.perf_counter()
    run = run_cli(url, ["ingest", "--enqueue", "-i", "1h", "--json"], env).json()
    run_id = int(run["run_id"])
    deadline = time.monotonic() + 3600
    while True:
        if time.monotonic() > deadline:
            raise BenchError(f"run {run_id} still running after an hour")
        try:
            with connect(url) as conn:
                status = scalar(conn, f"SELECT status FROM ingestion_runs WHERE id = {run_id}")
                done = int(
                    scalar(conn, f"SELECT count(*) FROM ingestion_outcomes WHERE run_id = {run_id}")
                )
        except psycopg.OperationalError as exc:  # a shared server out of connections a moment
            log(f"polling run {run_id}: {exc}; again")
            time.sleep(1)
            continue
        if status != "running":
            break
        if on_progress is not None:
            on_progress(done)
        time.sleep(0.2)
    return Fill(time.perf_counter() - started, run_id, 0)


def check_tick(url: str, run_id: int) -> int:
    """Every pair of the tick done exactly once, ok; returns the rows it wrote."""
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT count(*), count(DISTINCT symbol), count(*) FILTER (WHERE status = 'ok'), "
            f"coalesce(sum(inserted + updated), 0) FROM ingestion_outcomes WHERE run_id = {run_id}"
        ).fetchone()
    assert rows is not None
    outcomes, distinct, ok, written = rows
    if not outcomes == distinct == ok == MARKETS:
        raise BenchError(
            f"run {run_id}: {outcomes} outcomes for {distinct} pairs, {ok} ok, of {MARKETS}"
        )
    return int(written)


def digest(url: str, start: int, end: int) -> tuple[int, int]:
    """Count and a checksum of the candles in [start, end): equal data, equal digest."""
    with connect(url) as conn:
        row = conn.execute(
            "SELECT count(*), coalesce(sum(('x' || substr(md5(symbol || ts::text || "
            "open::text || high::text || low::text || close::text || volume::text), 1, 15))"
            "::bit(60)::bigint), 0) FROM candles "
            f"WHERE ts >= to_timestamp({start}) AND ts < to_timestamp({end})"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def span(url: str) -> tuple[int, int]:
    """The first and last stored bar (epoch seconds)."""
    with connect(url) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM min(ts))::bigint, extract(epoch FROM max(ts))::bigint "
            "FROM candles"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def stored(url: str) -> int:
    with connect(url) as conn:
        return int(scalar(conn, "SELECT count(*) FROM candles"))


def run(server: Server, report: Report) -> None:
    """Every scenario, each on a fresh database."""
    latent = settings(LATENCY_MS)
    urls: dict[str, str] = {}

    # one process
    log(f"one ingest process: {MARKETS} markets x {DAYS} days of 1h, {LATENCY_MS} ms a request")
    url = urls["ingest"] = server.create("ingest")
    add_markets(url)
    first = run_cli(url, ["ingest", "-i", "1h", "--json"], latent)
    base = first.seconds
    result = first.json()
    if result["status"] != "success":
        raise BenchError(f"the one-process fill ended {result['status']}")
    written = check_tick(url, int(result["run_id"]))
    report.add(Figure(f"fill, 1 ingest process (x{CONCURRENCY})", base, written, "1.00x"))
    noop = run_cli(url, ["ingest", "-i", "1h", "--json"], latent)
    report.add(
        Figure(
            f"no-op tick, 1 ingest process, {LATENCY_MS} ms latency",
            noop.seconds,
            None,
            f"{noop.seconds * 1000 / MARKETS:.2f} ms/pair",
            noop.peak_mb,
        )
    )

    # fleets
    one_worker = None
    for count in FLEETS:
        log(f"{count} worker(s): fill and no-op tick")
        url = urls[f"workers{count}"] = server.create(f"workers{count}")
        add_markets(url)
        fleet = Fleet(url, latent)
        try:
            fleet.start(count)
            fill = enqueue_and_wait(url, latent)
            rows = check_tick(url, fill.run_id)
            one_worker = one_worker or (fill.seconds if count == 1 else None)
            speedup = (one_worker or fill.seconds) / fill.seconds
            target = SPEEDUP_TARGETS.get(count)
            report.add(
                Figure(
                    f"fill, {count} worker(s) (x{CONCURRENCY} each)",
                    fill.seconds,
                    rows,
                    f"{speedup:.2f}x 1 worker, {base / fill.seconds:.2f}x ingest",
                    None,
                    f">= {target}x 1 worker" if target else "",
                    None if target is None or one_worker is None else speedup >= target,
                )
            )
            tick = enqueue_and_wait(url, latent)
            check_tick(url, tick.run_id)
            report.add(
                Figure(
                    f"no-op tick, {count} worker(s), {LATENCY_MS} ms latency",
                    tick.seconds,
                    None,
                    f"{tick.seconds * 1000 / MARKETS:.2f} ms/pair",
                )
            )
        finally:
            fleet.stop()

    # a worker killed in the middle of a fill
    log("2 workers, one SIGKILLed at 40% of the fill")
    url = urls["killed"] = server.create("killed")
    add_markets(url)
    fleet = Fleet(url, latent)
    killed_at: list[float] = []
    started = time.perf_counter()

    def kill_at_40(done: int) -> None:
        if not killed_at and done >= MARKETS * 0.4:
            fleet.procs[0].send_signal(signal.SIGKILL)
            killed_at.append(time.perf_counter() - started)

    try:
        fleet.start(2)
        started = time.perf_counter()
        fill = enqueue_and_wait(url, latent, kill_at_40)
        check_tick(url, fill.run_id)
    finally:
        fleet.stop()
    with connect(url) as conn:
        retried = int(scalar(conn, "SELECT count(*) FROM procrastinate_jobs WHERE attempts > 1"))
    two = next((f.seconds for f in report.figures if f.scenario.startswith("fill, 2 worker")), None)
    cost = "" if two is None else f"stall cost {fill.seconds - two:+.1f} s vs 2 workers"
    report.add(Figure("fill, 2 workers, one SIGKILLed at 40%", fill.seconds, None, cost))
    report.note(
        f"SIGKILL at {killed_at[0] if killed_at else float('nan'):.1f} s: {retried} jobs ran "
        f"twice (in flight when killed, retried after WORKER_STALL_SECONDS={STALL_SECONDS:.0f}); "
        f"every pair of the tick ended ok exactly once."
    )

    # the same data everywhere, over the hours every database holds
    spans = [span(u) for u in urls.values()]
    start, end = max(s for s, _ in spans), min(e for _, e in spans)
    digests = {label: digest(u, start, end) for label, u in urls.items()}
    if len(set(digests.values())) != 1:
        raise BenchError(f"stored data differ between scenarios: {digests}")
    report.note(
        f"stored candles equal in every scenario: {next(iter(digests.values()))[0]:,} candles "
        f"in the {(end - start) // 3600 + 0} hours all databases hold, same checksum."
    )


def main() -> int:
    """Run the scenarios, print the table."""
    started = time.perf_counter()
    server = Server.from_env()
    report = Report()
    load = os.getloadavg()[0]
    try:
        version = server.version()
        noop_tick(server, report)
        run(server, report)
    except (BenchError, psycopg.Error) as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        print(render(report, "marketdata worker-fleet benchmark: the figures measured before it"))
        return 1
    finally:
        server.drop_all()
    report.note(
        f"load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end, on "
        f"{os.cpu_count()} CPUs: every figure shares the machine with that load."
    )
    report.note(
        f"{MARKETS} markets x {DAYS} days of 1h bars, synthetic provider with {LATENCY_MS} ms "
        f"a request, {CONCURRENCY} pairs at once per process; worker times run from "
        "`ingest --enqueue` to the tick's run closed (workers already started)."
    )
    title = (
        f"marketdata worker-fleet benchmark: PostgreSQL {version}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {time.perf_counter() - started:.0f} s in all"
    )
    print(render(report, title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
