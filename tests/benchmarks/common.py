"""Shared pieces of the benchmarks: the data set, databases, the CLI as a child, the table."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

if TYPE_CHECKING:
    from marketdata.domain import Candles

DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/test"
# Databases a benchmark keeps for the next run (make bench-scale SCALE_KEEP=1)
KEPT_PREFIX = "marketdata_bench_keep_"

# 100 crypto-style symbols (is_crypto: a bar every minute) x 10,000 one-minute bars.
SYMBOLS = [f"SYM{i:03d}-USD" for i in range(1, 101)]
BARS = 10_000
MINUTE = 60
NOTE_WIDTH = 100
# A pinned window in the past, so every run ingests the very same candles.
WINDOW_START = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp())
WINDOW_END = WINDOW_START + BARS * MINUTE


class BenchError(RuntimeError):
    """Something went wrong that makes the figures meaningless (not a missed target)."""


def log(message: str) -> None:
    """Progress on stderr, so stdout holds only the report."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def iso(epoch: int) -> str:
    """Epoch seconds as an ISO 8601 UTC timestamp the CLI accepts."""
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------------------ figures


@dataclass
class Figure:
    """One line of the report: a measurement, how it compares, and the target it is held to."""

    scenario: str
    seconds: float | None = None
    rows: int | None = None
    ratio: str = ""  # e.g. "0.73 of raw COPY", already formatted
    peak_mb: float | None = None
    target: str = ""
    passed: bool | None = None  # None: informational, no target

    @property
    def rows_per_second(self) -> float | None:
        """Throughput, when both rows and time are known."""
        if self.rows is None or not self.seconds:
            return None
        return self.rows / self.seconds


@dataclass
class Report:
    """Every figure, plus notes printed under the table."""

    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, figure: Figure) -> Figure:
        """Append a figure and return it."""
        self.figures.append(figure)
        return figure

    def note(self, text: str) -> None:
        """A line printed under the table."""
        self.notes.append(text)


def render(report: Report, title: str) -> str:
    """The report as a plain-text table."""
    header = ("scenario", "rows", "seconds", "rows/s", "ratio", "peak MB", "target", "result")
    lines = [
        (
            f.scenario,
            "" if f.rows is None else f"{f.rows:,}",
            "" if f.seconds is None else _seconds(f.seconds),
            "" if f.rows_per_second is None else _rate(f.rows_per_second),
            f.ratio,
            "" if f.peak_mb is None else f"{f.peak_mb:.0f}",
            f.target,
            {None: "info", True: "PASS", False: "FAIL"}[f.passed],
        )
        for f in report.figures
    ]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    right = {1, 2, 3, 5}

    def fmt(row: Sequence[str]) -> str:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    out = [title, "", fmt(header), rule, *(fmt(row) for row in lines), ""]
    for text in report.notes:
        out += textwrap.wrap(
            text, NOTE_WIDTH, initial_indent="* ", subsequent_indent="  ", break_on_hyphens=False
        )
    failed = sum(1 for f in report.figures if f.passed is False)
    passed = sum(1 for f in report.figures if f.passed is True)
    out += ["", f"{passed} targets met, {failed} missed (figures are informational: exit 0)"]
    return "\n".join(out)


def _rate(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.1f}M"
    return f"{value / 1e3:.0f}k" if value >= 1e4 else f"{value:.0f}"


def _seconds(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.2f}"


def best_of(repeat: int, work: Callable[[], object]) -> float:
    """The shortest wall time of `repeat` runs of `work` (the least disturbed one)."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def median(values: Sequence[float]) -> float:
    """The median, for repeated child runs."""
    return float(statistics.median(values))


# ---------------------------------------------------------------------------------- databases


def _sqlalchemy_url(raw: str) -> Any:
    from sqlalchemy.engine import make_url

    return make_url(raw.replace("postgres://", "postgresql://", 1))


def _plain(url: Any) -> str:
    text: str = url.set(drivername="postgresql").render_as_string(hide_password=False)
    return text


class Server:
    """The PostgreSQL server of TEST_DATABASE_URL, where benchmark databases come and go."""

    def __init__(self, raw_url: str) -> None:
        self.url = _sqlalchemy_url(raw_url)
        self.prefix = f"marketdata_bench_{uuid.uuid4().hex[:8]}"
        self.created: list[str] = []

    @classmethod
    def from_env(cls) -> Server:
        """The server of TEST_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/test)."""
        return cls(os.environ.get("TEST_DATABASE_URL", DEFAULT_SERVER_URL))

    def admin(self) -> psycopg.Connection[Any]:
        """An autocommit connection to the database named in TEST_DATABASE_URL."""
        try:
            return psycopg.connect(_plain(self.url), autocommit=True, connect_timeout=5)
        except psycopg.OperationalError as exc:
            shown = self.url.render_as_string(hide_password=True)
            reason = str(exc).strip().splitlines()[0]
            raise BenchError(f"PostgreSQL at {shown} unreachable: {reason}") from None

    def version(self) -> str:
        """The server's version string, for the report header."""
        with self.admin() as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"

    def create(self, label: str, *, keep: bool = False) -> str:
        """A new database migrated with `marketdata db upgrade`; returns its URL. A kept one
        is named `marketdata_bench_LABEL` (no run's prefix) and not dropped by drop_all."""
        name = f"{KEPT_PREFIX}{label}" if keep else f"{self.prefix}_{label}"
        with self.admin() as conn:
            if keep:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        if not keep:
            self.created.append(name)
        url = _plain(self.url.set(database=name))
        run_cli(url, ["db", "upgrade"])
        return url

    def kept(self, label: str) -> str | None:
        """The URL of the kept database `label` (see create), migrated to the head; None
        when there is none or an earlier run died before it held any candles."""
        name = f"{KEPT_PREFIX}{label}"
        with self.admin() as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if found.fetchone() is None:
                return None
        url = _plain(self.url.set(database=name))
        run_cli(url, ["db", "upgrade"])
        with connect(url) as conn:
            if conn.execute("SELECT 1 FROM candles LIMIT 1").fetchone() is None:
                return None
        return url

    def drop_all(self) -> None:
        """Drop every database this run created."""
        if not self.created:
            return
        with self.admin() as conn:
            for name in self.created:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()


@contextmanager
def connect(url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to a benchmark database."""
    with psycopg.connect(url, autocommit=True) as conn:
        yield conn


def make_partitions(url: str, interval: str, start: datetime, end: datetime) -> None:
    """Create the candle partitions [start, end] needs, for seeds that COPY candles directly
    instead of through the write path (which makes them itself)."""
    import sqlalchemy as sa

    from marketdata.domain import Interval, epoch_of
    from marketdata.storage import partitions

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as conn:
            wanted = partitions.periods(Interval(interval), epoch_of(start), epoch_of(end))
            partitions.ensure(conn, wanted)
    finally:
        engine.dispose()


def backend_cpu(url: str) -> float | None:
    """CPU seconds (user + system) the server processes now connected to `url`'s database
    have used, other than this query's own; None when they cannot be seen from here (a
    server on another host). Less disturbed by other load than wall time is."""
    tick = os.sysconf("SC_CLK_TCK")
    with connect(url) as conn:
        pids = conn.execute(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    total = 0.0
    for (pid,) in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def scalar(conn: psycopg.Connection[Any], sql: str) -> Any:
    """The single value of a query."""
    row = conn.execute(sql).fetchone()
    assert row is not None
    return row[0]


def wal_lsn(conn: psycopg.Connection[Any]) -> str:
    """The server's current WAL position (cluster-wide: other sessions count too)."""
    return str(scalar(conn, "SELECT pg_current_wal_lsn()"))


def wal_since(conn: psycopg.Connection[Any], lsn: str) -> int:
    """WAL bytes written since `lsn`."""
    return int(scalar(conn, f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{lsn}')"))


def full_page_images(conn: psycopg.Connection[Any]) -> int:
    """Full-page images written to WAL since the statistics were reset (cluster-wide)."""
    return int(scalar(conn, "SELECT wal_fpi FROM pg_stat_wal"))


def table_bytes(conn: psycopg.Connection[Any], table: str = "candles") -> int:
    """Heap, indexes and TOAST of a table."""
    return int(scalar(conn, f"SELECT pg_total_relation_size('{table}')"))


def checkpoint(conn: psycopg.Connection[Any]) -> bool:
    """Flush dirty buffers before a measurement, so one run does not pay for the last one's.

    Needs superuser or pg_checkpoint; without them the measurement just goes ahead.
    """
    try:
        conn.execute("CHECKPOINT")
    except psycopg.Error:
        return False
    return True


# -------------------------------------------------------------------------------- the CLI


@dataclass
class ChildRun:
    """One `marketdata` process: wall time from start to exit, its peak RSS, its output."""

    seconds: float
    peak_mb: float
    stdout: str
    stderr: str
    cpu_seconds: float = 0.0  # user + system time of the process (its threads included)

    def json(self) -> dict[str, Any]:
        """The --json summary on stdout."""
        data: dict[str, Any] = json.loads(self.stdout)
        return data


def _cli_command() -> list[str]:
    # The console script operators run; `python -m marketdata` if it is not installed.
    script = Path(sys.executable).parent / "marketdata"
    return [str(script)] if script.exists() else [sys.executable, "-m", "marketdata"]


def _child_environment(home: Path, extra: dict[str, str]) -> dict[str, str]:
    from marketdata.config import Settings

    # None of the developer's own settings may leak into a measured run.
    own = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in own}
    for name in ("INVOCATION_ID", "JOURNAL_STREAM"):
        env.pop(name, None)
    env.update(
        XDG_DATA_HOME=str(home / "data"),
        XDG_CACHE_HOME=str(home / "cache"),
        XDG_STATE_HOME=str(home / "state"),
    )
    env.update(extra)
    return env


# Started by a small interpreter of its own: on Linux a child's ru_maxrss includes the RSS of
# the process it was forked from (counted at exec), and this one holds a million rows.
_SPAWN = """
import os, sys, time
result, command = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
pid = os.posix_spawn(command[0], command, os.environ)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - started
with open(result, "w") as out:
    cpu = usage.ru_utime + usage.ru_stime
    out.write(f"{os.waitstatus_to_exitcode(status)} {seconds!r} {usage.ru_maxrss} {cpu!r}")
"""


def run_cli(url: str, args: Sequence[str], env: dict[str, str] | None = None) -> ChildRun:
    """Run `marketdata --database-url URL ARGS...`, timed from process start to exit.

    A small launcher process spawns it and takes its wall time and peak RSS (wait4 on that
    very child), so neither this process's memory nor the launcher's start-up counts. An
    empty --env-file and a scratch home keep the developer's env files and caches out of
    it. A non-zero exit is a BenchError.
    """
    with tempfile.TemporaryDirectory(prefix="marketdata-bench-") as scratch:
        home = Path(scratch)
        env_file, result = home / "bench.env", home / "result"
        env_file.write_text("")
        command = [*_cli_command(), "--env-file", str(env_file), "--database-url", url, *args]
        with (home / "stdout").open("w+") as out, (home / "stderr").open("w+") as err:
            subprocess.run(
                [sys.executable, "-S", "-c", _SPAWN, str(result), *command],
                stdout=out,
                stderr=err,
                cwd=home,
                env=_child_environment(home, env or {}),
                check=True,
            )
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
        code, seconds, max_rss, cpu = result.read_text().split()
    if int(code) != 0:
        tail = "\n".join(stderr.strip().splitlines()[-5:])
        raise BenchError(f"`marketdata {' '.join(args[:2])}` exited {code}:\n{tail}")
    # ru_maxrss is in kilobytes on Linux
    return ChildRun(float(seconds), int(max_rss) / 1024.0, stdout, stderr, float(cpu))


def ingest_args(
    symbols: Sequence[str], since: int | None = None, until: int | None = None
) -> list[str]:
    """`ingest` from the synthetic provider, one-minute bars, JSON summary."""
    args = ["ingest", "--provider", "synthetic", "--interval", "1m", "--symbols", ",".join(symbols)]
    if since is not None:
        args += ["--since", iso(since)]
    if until is not None:
        args += ["--until", iso(until)]
    return [*args, "--json"]


# ---------------------------------------------------------------------------------- the data


def synthetic_batches(symbols: Sequence[str], since: int, until: int) -> list[Candles]:
    """The candles the synthetic provider serves for these symbols, as the CLI fetches them."""
    from marketdata.config import load_settings
    from marketdata.domain import Interval, Window
    from marketdata.providers.base import ProviderContext
    from marketdata.providers.synthetic import SyntheticProvider

    with ProviderContext(load_settings({}, environ={}).settings) as ctx:
        provider = SyntheticProvider(ctx)
        return [provider.fetch(s, Interval.M1, Window(since, until)) for s in symbols]
