"""Worker-fleet benchmark (`make bench-workers`): a first fill and a no-op tick of many
hourly markets, by one `ingest` process and by 1, 2 and 4 `marketdata worker` processes
(stand-ins for hosts) against a synthetic provider with a simulated network latency; a
worker SIGKILLed in the middle of a fill; and the per-pair overhead of a no-op tick.

Sizes come from the environment: BENCH_MARKETS (10000), BENCH_DAYS (30), BENCH_LATENCY_MS
(50), BENCH_CONCURRENCY (jobs at once per worker process, 1), BENCH_INGEST_CONCURRENCY
(pairs at once of the one `ingest` process, 4), BENCH_WORKERS (1,2,4), BENCH_BASE_MARKETS
(markets per worker of a fleet, a quarter of BENCH_MARKETS: 1 worker fills 2,500 markets, 2
fill 5,000 and 4 fill 10,000, so that one worker, the slowest, does not take an hour; its
throughput is steady long before that), BENCH_KILL_WORKERS (the fleet one of whose workers
is SIGKILLed during a fill of BENCH_MARKETS, 4). Speed-ups are throughputs (pairs a second)
against the one-worker fleet's. Each fleet figure says how much CPU the workers and their
PostgreSQL server processes used: a fleet is latency-bound while that stays well under the
machine's cores. The no-op tick's overhead is measured on its own database of
BENCH_NOOP_MARKETS (10000) markets with BENCH_NOOP_DAYS (2) of history (a no-op tick reads
only each pair's last candle, so the depth of history does not change it), so that its
target holds at 10,000 pairs even when the fleet scenarios run smaller.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
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
# One job at once per worker: a job spends ~50 ms waiting on the provider and ~15-30 ms of
# CPU (the worker's and PostgreSQL's); four workers with two jobs each kept both cores busy,
# which measured the CPU, not the latency-bound fleet the targets are about.
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "1"))
INGEST_CONCURRENCY = int(os.environ.get("BENCH_INGEST_CONCURRENCY", "4"))
FLEETS = [int(n) for n in os.environ.get("BENCH_WORKERS", "1,2,4").split(",")]
BASE_MARKETS = int(os.environ.get("BENCH_BASE_MARKETS", str(max(1, MARKETS // 4))))
KILL_WORKERS = int(os.environ.get("BENCH_KILL_WORKERS", "4"))
SPEEDUP_TARGETS = {2: 1.8, 4: 3.0}
NOOP_MARKETS = int(os.environ.get("BENCH_NOOP_MARKETS", "10000"))
NOOP_DAYS = int(os.environ.get("BENCH_NOOP_DAYS", "2"))
NOOP_MS_PER_PAIR = 2.0
STALL_SECONDS = 5.0
PROGRESS_SECONDS = 15.0
STUCK_SECONDS = 120.0  # no pair done for that long: the fleet is stuck, the scenario fails
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
        "INGESTION_CONCURRENCY": str(INGEST_CONCURRENCY),  # `ingest`; workers: -c
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

    def cpu(self) -> dict[int, float]:
        """CPU seconds used so far by each live worker process (its threads included)."""
        return cpu_of(p.pid for p in self.procs if p.poll() is None)

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


def fleet_markets(workers: int) -> int:
    """The markets of a fleet: BENCH_BASE_MARKETS per worker, at most BENCH_MARKETS. Each
    fleet then runs about as long as the others, so fixed costs (the enqueue, the last jobs'
    tail) weigh the same in every throughput, and one worker does not take 4x the time."""
    return min(MARKETS, BASE_MARKETS * workers)


def cpu_of(pids: Iterable[int]) -> dict[int, float]:
    """CPU seconds (user + system) of these processes so far; gone ones are left out."""
    tick = os.sysconf("SC_CLK_TCK")
    used = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used[pid] = (int(fields[11]) + int(fields[12])) / tick
    return used


def backends(url: str) -> list[int]:
    """The PostgreSQL server processes connected to `url`'s database, other than this one."""
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return [int(pid) for (pid,) in rows]


class Usage:
    """The CPU a fleet and its server processes use over a tick: sampled per process at the
    start and the end (a server process that ends between the two is not counted)."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.started = time.perf_counter()
        self.workers = fleet.cpu()
        self.server = cpu_of(backends(fleet.url))

    def end(self, pairs: int) -> str:
        """CPU per pair and the share of the machine's cores it kept busy."""
        wall = time.perf_counter() - self.started
        workers = _spent(self.workers, self.fleet.cpu())
        server = _spent(self.server, cpu_of(backends(self.fleet.url)))
        cores = os.cpu_count() or 1
        share = (workers + server) / (wall * cores)
        return (
            f"CPU {(workers + server) * 1000 / pairs:.1f} ms/pair "
            f"({workers * 1000 / pairs:.1f} workers + {server * 1000 / pairs:.1f} PostgreSQL), "
            f"{share:.0%} of {cores} cores"
        )


def _spent(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(used - before.get(pid, 0.0) for pid, used in after.items())


def enqueue_and_wait(url: str, env: dict[str, str], pairs: int, on_progress: Any = None) -> Fill:
    """`ingest --enqueue`, then wait for the tick's run to close; timed from the enqueue."""
    started = time.perf_counter()
    run = run_cli(url, ["ingest", "--enqueue", "-i", "1h", "--json"], env).json()
    run_id = int(run["run_id"])
    deadline = time.monotonic() + 3600
    said = moved = time.monotonic()
    last = 0
    while True:
        if time.monotonic() > deadline:
            raise BenchError(f"run {run_id} still running after an hour")
        if time.monotonic() - moved > STUCK_SECONDS:
            raise BenchError(f"run {run_id}: no pair done in {STUCK_SECONDS:.0f} s ({last} done)")
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
        if done != last:
            last, moved = done, time.monotonic()
        if time.monotonic() - said >= PROGRESS_SECONDS:
            said = time.monotonic()
            took = time.perf_counter() - started
            log(f"  run {run_id}: {done:,} of {pairs:,} pairs after {took:.0f} s")
        if on_progress is not None:
            on_progress(done)
        time.sleep(0.2)
    return Fill(time.perf_counter() - started, run_id, 0)


def check_tick(url: str, run_id: int, markets: int) -> int:
    """Every pair of the tick done exactly once, ok; returns the rows it wrote."""
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT count(*), count(DISTINCT symbol), count(*) FILTER (WHERE status = 'ok'), "
            f"coalesce(sum(inserted + updated), 0) FROM ingestion_outcomes WHERE run_id = {run_id}"
        ).fetchone()
    assert rows is not None
    outcomes, distinct, ok, written = rows
    if not outcomes == distinct == ok == markets:
        raise BenchError(
            f"run {run_id}: {outcomes} outcomes for {distinct} pairs, {ok} ok, of {markets}"
        )
    return int(written)


def digest(url: str, start: int, end: int, markets: int) -> tuple[int, int]:
    """Count and a checksum of the first `markets` markets' candles in [start, end): equal
    data, equal digest."""
    with connect(url) as conn:
        row = conn.execute(
            "SELECT count(*), coalesce(sum(('x' || substr(md5(symbol || ts::text || "
            "open::text || high::text || low::text || close::text || volume::text), 1, 15))"
            "::bit(60)::bigint), 0) FROM candles "
            f"WHERE ts >= to_timestamp({start}) AND ts < to_timestamp({end}) "
            "AND symbol <= %s",
            (SYMBOLS[markets - 1],),
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


class Scenarios:
    """Every scenario, each on a fresh database; one that fails is reported and the next
    one runs, so the table always holds what was measured."""

    def __init__(self, server: Server, report: Report) -> None:
        self.server = server
        self.report = report
        self.latent = settings(LATENCY_MS)
        self.urls: dict[str, tuple[str, int]] = {}  # label: (url, markets)
        self.rates: dict[int, float] = {}  # workers: pairs a second of their fill
        self.fills: dict[int, float] = {}  # workers: seconds of their fill

    def attempt(self, label: str, scenario: Any) -> None:
        """Run one scenario; an error becomes a line of the table."""
        try:
            scenario()
        except Exception as exc:  # noqa: BLE001 - any failure: the next scenario still runs
            text = f"{type(exc).__name__}: {exc}"
            log(f"{label}: error: {text}")
            self.report.add(Figure(f"{label}: error", None, None, text.splitlines()[0][:60]))

    def database(self, label: str, markets: int) -> str:
        url = self.server.create(label)
        add_markets(url, markets)
        self.urls[label] = (url, markets)
        return url

    def one_process(self) -> None:
        log(
            f"one ingest process: {MARKETS} markets x {DAYS} days of 1h, "
            f"{LATENCY_MS} ms a request, {INGEST_CONCURRENCY} pairs at once"
        )
        url = self.database("ingest", MARKETS)
        first = run_cli(url, ["ingest", "-i", "1h", "--json"], self.latent)
        result = first.json()
        if result["status"] != "success":
            raise BenchError(f"the one-process fill ended {result['status']}")
        written = check_tick(url, int(result["run_id"]), MARKETS)
        self.fills[0] = first.seconds
        self.report.add(
            Figure(f"fill, 1 ingest process (x{INGEST_CONCURRENCY})", first.seconds, written, "")
        )
        noop = run_cli(url, ["ingest", "-i", "1h", "--json"], self.latent)
        self.report.add(
            Figure(
                f"no-op tick, 1 ingest process, {LATENCY_MS} ms latency",
                noop.seconds,
                None,
                f"{noop.seconds * 1000 / MARKETS:.2f} ms/pair",
                noop.peak_mb,
            )
        )

    def fleet(self, count: int) -> None:
        markets = fleet_markets(count)
        log(f"{count} worker(s) (x{CONCURRENCY} each): fill and no-op tick of {markets} markets")
        url = self.database(f"workers{count}", markets)
        fleet = Fleet(url, self.latent)
        try:
            fleet.start(count)
            usage = Usage(fleet)
            fill = enqueue_and_wait(url, self.latent, markets)
            cpu = usage.end(markets)
            rows = check_tick(url, fill.run_id, markets)
            self.rates[count], self.fills[count] = markets / fill.seconds, fill.seconds
            base = self.rates.get(1)
            speedup = None if base is None else self.rates[count] / base
            target = SPEEDUP_TARGETS.get(count)
            self.report.add(
                Figure(
                    f"fill, {count} worker(s) (x{CONCURRENCY} each), {markets} pairs",
                    fill.seconds,
                    rows,
                    "" if speedup is None else f"{speedup:.2f}x 1 worker",
                    None,
                    f">= {target}x 1 worker" if target else "",
                    None if target is None or speedup is None else speedup >= target,
                )
            )
            self.report.note(f"fill, {count} worker(s): {cpu}.")
            usage = Usage(fleet)
            tick = enqueue_and_wait(url, self.latent, markets)
            cpu = usage.end(markets)
            check_tick(url, tick.run_id, markets)
            self.report.add(
                Figure(
                    f"no-op tick, {count} worker(s), {LATENCY_MS} ms latency",
                    tick.seconds,
                    None,
                    f"{tick.seconds * 1000 / markets:.2f} ms/pair",
                )
            )
            self.report.note(f"no-op tick, {count} worker(s): {cpu}.")
        finally:
            fleet.stop()

    def killed(self) -> None:
        count = KILL_WORKERS
        if count < 2:
            raise BenchError("BENCH_KILL_WORKERS must be 2 or more: one is killed, one finishes")
        log(f"{count} workers, one SIGKILLed at 40% of the fill")
        url = self.database("killed", MARKETS)
        fleet = Fleet(url, self.latent)
        killed_at: list[float] = []
        started = time.perf_counter()

        def kill_at_40(done: int) -> None:
            if not killed_at and done >= MARKETS * 0.4:
                fleet.procs[0].send_signal(signal.SIGKILL)
                killed_at.append(time.perf_counter() - started)

        try:
            fleet.start(count)
            started = time.perf_counter()
            fill = enqueue_and_wait(url, self.latent, MARKETS, kill_at_40)
            check_tick(url, fill.run_id, MARKETS)
        finally:
            fleet.stop()
        with connect(url) as conn:
            retried = int(
                scalar(conn, "SELECT count(*) FROM procrastinate_jobs WHERE attempts > 1")
            )
        same = self.fills.get(count)
        cost = "" if same is None else f"stall cost {fill.seconds - same:+.1f} s vs {count} workers"
        self.report.add(
            Figure(f"fill, {count} workers, one SIGKILLed at 40%", fill.seconds, None, cost)
        )
        self.report.note(
            f"SIGKILL at {killed_at[0] if killed_at else float('nan'):.1f} s: {retried} jobs ran "
            f"twice (in flight when killed, retried after WORKER_STALL_SECONDS="
            f"{STALL_SECONDS:.0f}); every pair of the tick ended ok exactly once."
        )

    def same_data(self) -> None:
        """The same data everywhere, over the hours and markets every database holds."""
        if len(self.urls) < 2:
            return
        spans = [span(url) for url, _ in self.urls.values()]
        start, end = max(s for s, _ in spans), min(e for _, e in spans)
        markets = min(m for _, m in self.urls.values())
        digests = {label: digest(url, start, end, markets) for label, (url, _) in self.urls.items()}
        if len(set(digests.values())) != 1:
            raise BenchError(f"stored data differ between scenarios: {digests}")
        self.report.note(
            f"stored candles equal in every scenario: {next(iter(digests.values()))[0]:,} "
            f"candles of the first {markets:,} markets in the {(end - start) // 3600} hours all "
            "databases hold, same checksum."
        )


def run(server: Server, report: Report) -> None:
    """Every scenario, each on a fresh database."""
    scenarios = Scenarios(server, report)
    scenarios.attempt("no-op tick", lambda: noop_tick(server, report))
    scenarios.attempt("one ingest process", scenarios.one_process)
    for count in FLEETS:
        scenarios.attempt(f"{count} worker(s)", lambda count=count: scenarios.fleet(count))
    scenarios.attempt("killed worker", scenarios.killed)
    scenarios.attempt("stored data", scenarios.same_data)
    if 0 in scenarios.fills and 1 in scenarios.rates:
        ingest_rate = MARKETS / scenarios.fills[0]
        report.note(
            "fleet throughput against the one ingest process's: "
            + ", ".join(f"{n} worker(s) {r / ingest_rate:.2f}x" for n, r in scenarios.rates.items())
            + "."
        )


def main() -> int:
    """Run the scenarios, print the table."""
    started = time.perf_counter()
    server = Server.from_env()
    report = Report()
    load = os.getloadavg()[0]
    try:
        version = server.version()
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
        f"{MARKETS} markets (fleets: {BASE_MARKETS} per worker) x {DAYS} days of 1h bars, "
        f"synthetic provider with {LATENCY_MS} ms a request, {CONCURRENCY} job(s) at once per "
        "worker; worker times run from `ingest --enqueue` to the tick's run closed (workers "
        "already started); speed-ups are pairs a second against one worker's."
    )
    title = (
        f"marketdata worker-fleet benchmark: PostgreSQL {version}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {time.perf_counter() - started:.0f} s in all"
    )
    print(render(report, title))
    return 1 if any(f.scenario.endswith(": error") for f in report.figures) else 0


if __name__ == "__main__":
    sys.exit(main())
