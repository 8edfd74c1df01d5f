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


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll `condition` until true; fail after `timeout` seconds. The default is long: on a
    loaded machine a new process can take 10 s and more to reach its fault point, and a
    longer wait costs nothing when the condition comes true."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)
