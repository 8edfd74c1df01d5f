"""`marketdata` as a process of its own, and waiting for a fault point, for tests and drills."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """`marketdata ARGS` as a process of its own."""
    return subprocess.Popen(
        [sys.executable, "-m", "marketdata", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)
