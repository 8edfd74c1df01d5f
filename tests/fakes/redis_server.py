"""A private redis-server on a spare loopback port, started and stopped by the test."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import service_missing


def spare_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PrivateRedis:
    """A redis-server process of the test's own."""

    port: int
    process: subprocess.Popen[bytes]
    password: str | None = None

    def url(self, password: str | None = None, db: int = 0) -> str:
        """redis://[:password@]127.0.0.1:port/db (the server's own password by default)."""
        secret = self.password if password is None else password
        auth = f":{secret}@" if secret else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        """Stop the server now (SIGKILL: clients see their connections drop)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)


@contextmanager
def private_redis(workdir: Path, *, password: str | None = None) -> Iterator[PrivateRedis]:
    """Start redis-server on a spare port (no persistence), wait until it answers, stop it
    at the end. Skips (fails under CI) when redis-server is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        service_missing("redis-server", "not on PATH")
    assert binary is not None
    port = spare_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    args += ["no", "--dir", str(workdir)]
    if password:
        args += ["--requirepass", password]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = PrivateRedis(port, process, password)
    try:
        _wait_listening(port, process)
        yield server
    finally:
        server.stop()


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"redis-server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    pytest.fail("redis-server did not listen within 10 s")
