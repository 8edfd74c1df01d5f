"""A foreground scheduler for hosts without systemd (containers): runs a command on a cron.

Each run is a child process started when the schedule fires and waited for, so runs never
overlap: times that pass during a run are skipped, as a systemd timer skips an elapse while
its service is still active. After a pause (the process stopped, the host suspended) the
run that was due starts at once, one run for however many were missed. A stop signal is
passed on to the run in flight, which rolls back its pair and records itself interrupted;
the scheduler then exits with the run's code (0 when it was idle).
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from loguru import logger

from marketdata.cron import Cron


def local_now() -> datetime:
    """The wall clock in the local time zone, as cron reads its fields."""
    return datetime.now().astimezone()


@dataclass
class Scheduler:
    """Runs `command` whenever `cron` fires, one run at a time, until stop() is called."""

    cron: Cron
    command: Sequence[str]
    env: Mapping[str, str] | None = None
    clock: Callable[[], datetime] = local_now
    # the longest single wait: the wall clock is read again after it (suspend, clock changes)
    poll_seconds: float = 30.0
    _stopping: threading.Event = field(default_factory=threading.Event)
    _signal: int | None = None
    _child: subprocess.Popen[bytes] | None = None
    _forwarded: bool = False

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop after the run in flight, which gets `signum` (safe in a signal handler)."""
        self._signal = signum
        self._stopping.set()
        if self._child is not None:
            self._forward()

    def run(self) -> int:
        """Fire until stopped; returns the exit code of the run a stop interrupted, else 0."""
        due = self.cron.next_after(self.clock())
        logger.info("schedule {}: first run at {}", self.cron.text, due.isoformat())
        while self._sleep_until(due):
            late = self._missed_since(due)
            if late:
                logger.warning(
                    "the run due at {} starts late; {} more missed runs are not made up",
                    due.isoformat(),
                    late,
                )
            code = self._run_once(due)
            if self._stopping.is_set():
                return code
            due = self.cron.next_after(self.clock())
            logger.info("next run at {}", due.isoformat())
        logger.info("scheduler stopped while idle")
        return 0

    def _sleep_until(self, due: datetime) -> bool:
        """Wait for `due`; False when stopped first."""
        while not self._stopping.is_set():
            remaining = (due - self.clock()).total_seconds()
            if remaining <= 0:
                return True
            self._stopping.wait(min(remaining, self.poll_seconds))
        return False

    def _missed_since(self, due: datetime) -> int:
        """How many later runs were due by now too (a pause), capped at 1000."""
        now = self.clock()
        fires = itertools.takewhile(lambda t: t <= now, self.cron.fires_after(due))
        return sum(1 for _ in itertools.islice(fires, 1000))

    def _run_once(self, due: datetime) -> int:
        started = self.clock()
        logger.info("run due at {} starting: {}", due.isoformat(), " ".join(self.command))
        # its own process group: a Ctrl-C in the terminal reaches the scheduler, which
        # passes it on once, rather than both at once
        child = subprocess.Popen(self.command, env=self.env, process_group=0)  # noqa: S603
        self._forwarded = False
        self._child = child
        if self._stopping.is_set():  # a signal came between Popen and the line above
            self._forward()
        code = child.wait()
        self._child = None
        if code < 0:  # killed by a signal it did not handle: report it as a shell would
            code = 128 - code
        seconds = (self.clock() - started).total_seconds()
        if code == 0:
            logger.info("run due at {} finished in {:.1f} s", due.isoformat(), seconds)
        else:
            logger.error("run due at {} exited {} after {:.1f} s", due.isoformat(), code, seconds)
        return code

    def _forward(self) -> None:
        child = self._child
        if child is None or self._forwarded or child.poll() is not None:
            return
        self._forwarded = True
        child.send_signal(self._signal or signal.SIGTERM)
