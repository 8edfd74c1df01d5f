"""`schedule run`: a real scheduler process, real runs, real signals."""

from __future__ import annotations

import itertools
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.fakes.server import Reply, serve

EVERY_2S = "*/2 * * * * *"  # a seconds field in front: a test cannot wait for minutes
EVERY_5S = "*/5 * * * * *"
"""For a test that needs the scheduler idle between runs: a run is a new process, seen to
take 1.7 to 2.3 s from start to exit on a 2-core machine, which left no idle second between
fires 2 s apart."""


class Scheduler:
    """`marketdata schedule run` in a subprocess, its log lines collected as they come."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "marketdata", "schedule", "run", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(1 for line in list(self.lines) if re.search(pattern, line)) >= count:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        pytest.fail(f"no {count} x {pattern!r} in:\n" + "\n".join(self.lines))

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30) -> int:
        self.proc.send_signal(signum)
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def idle_with_margin(self, margin: float = 1.0, timeout: float = 60) -> int:
        """Wait until the scheduler is idle with its next run at least `margin` seconds away
        (runs that end just before the next fire are passed over); the count of log lines
        then, so that later lines can be told apart. Fails after `timeout` seconds: when
        every run ends less than `margin` before the next fire, no idle time ever comes."""
        deadline = time.monotonic() + timeout
        seen = sum(1 for line in list(self.lines) if "next run at" in line)
        while True:
            if time.monotonic() > deadline:
                self.kill()
                shown = "\n".join(self.lines)
                pytest.fail(f"never idle {margin} s before a run within {timeout} s:\n{shown}")
            self.wait_for(r"next run at", count=max(seen, 1))
            lines = list(self.lines)
            nexts = [m for line in lines if (m := re.search(r"next run at (\S+)", line))]
            due = datetime.fromisoformat(nexts[-1].group(1))
            if (due - datetime.now().astimezone()).total_seconds() >= margin:
                return len(lines)
            seen = len(nexts) + 1

    def matching(self, pattern: str) -> list[re.Match[str]]:
        return [m for line in self.lines if (m := re.search(pattern, line))]


@pytest.fixture
def database(tmp_path) -> Path:
    return tmp_path / "runs.sqlite3"


@pytest.fixture
def scheduler_env(env, database) -> dict[str, str]:
    return {
        **env,
        "DATABASE_URL": f"sqlite:///{database}",
        "INGESTION_SYMBOLS": "BTC-USD",
        "INGESTION_LOOKBACK_DAYS": "2",
    }


def stored_runs(database: Path) -> list[tuple[str, str, str | None]]:
    with sqlite3.connect(database) as conn:
        return conn.execute(
            "select status, started_at, finished_at from ingestion_runs order by id"
        ).fetchall()


def test_runs_never_overlap_and_sigterm_interrupts_the_run_in_flight(scheduler_env, database):
    slow = Reply(200, [], delay=2.5)  # each run outlasts the 2 s between fires
    with serve(lambda request: slow) as coinbase:
        env = {**scheduler_env, "COINBASE_BASE_URL": coinbase.url}
        scheduler = Scheduler(env, "--cron", EVERY_2S)
        try:
            scheduler.wait_for(r"finished in", count=1)
            scheduler.wait_for(r"starting", count=2)
            while len(coinbase.requests) < 2:
                time.sleep(0.05)
            started = time.monotonic()
            code = scheduler.stop(signal.SIGTERM)
        finally:
            scheduler.kill()
    assert code == 143, "\n".join(scheduler.lines)
    assert time.monotonic() - started < 15
    runs = stored_runs(database)
    assert [status for status, _, _ in runs] == ["success", "interrupted"]
    for (_, _, finished), (_, next_started, _) in itertools.pairwise(runs):
        assert finished is not None and finished <= next_started  # one at a time
    assert "scheduler stopped while idle" not in "\n".join(scheduler.lines)


def test_a_pause_is_made_up_by_one_run_and_sigterm_when_idle_exits_0(scheduler_env):
    # a quick run: the synthetic provider needs no network
    env = {**scheduler_env, "INGESTION_PROVIDER": "synthetic"}
    scheduler = Scheduler(env, "--cron", EVERY_5S)
    try:
        scheduler.wait_for(r"finished in", count=1)
        # stop it while idle, well before its next run (a loaded machine may have run late)
        idle = scheduler.idle_with_margin()
        scheduler.proc.send_signal(signal.SIGSTOP)
        time.sleep(11)  # at least two fires pass
        resumed = datetime.now().astimezone()
        scheduler.proc.send_signal(signal.SIGCONT)
        scheduler.wait_for(r"finished in", count=2)
        scheduler.idle_with_margin()
        code = scheduler.stop(signal.SIGTERM)
    finally:
        scheduler.kill()
    log = "\n".join(scheduler.lines)
    assert code == 0, log
    assert "scheduler stopped while idle" in log
    # the first run after the pause says how many more it stands for (a loaded machine may
    # make later runs late too: only the first one after the pause is about the pause)
    late = [
        int(m.group(1))
        for line in scheduler.lines[idle:]
        if (m := re.search(r"starts late; (\d+) more missed runs are not made up", line))
    ]
    assert late and late[0] >= 1, log
    after_pause = [
        datetime.fromisoformat(m.group(1))
        for line in scheduler.lines[idle:]
        if (m := re.search(r"run due at (\S+) starting", line))
    ]
    # after the pause, exactly one run for the times missed during it
    assert sum(1 for due in after_pause if due < resumed) == 1, log


def test_a_bad_cron_stops_the_scheduler_before_any_run(env):
    result = subprocess.run(
        [sys.executable, "-m", "marketdata", "schedule", "run", "--cron", "* * * *"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().endswith(
        '--cron "* * * *" has 4 fields\nhint: cron takes five: minute hour day-of-month month '
        "day-of-week"
    )
    assert "starting" not in result.stderr  # no run was attempted
