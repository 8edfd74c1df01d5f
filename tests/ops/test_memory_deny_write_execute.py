"""The units set MemoryDenyWriteExecute=yes: the tool must work without writable-executable
memory. These runs happen under the same kernel restriction (prctl PR_SET_MDWE, which
systemd >= 254 uses for it), so a dependency that needs a JIT or W+X pages fails CI, not a
production timer."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import service_missing
from tests.fakes.coinbase import FakeCoinbase
from tests.fakes.server import serve

# prctl(PR_SET_MDWE = 65, PR_MDWE_REFUSE_EXEC_GAIN = 1), then exec: it survives execve
MDWE = """
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:
    err = ctypes.get_errno()
    sys.stderr.write("prctl(PR_SET_MDWE): " + os.strerror(err) + "\\n")
    sys.exit(97 if err == errno.EINVAL else 98)
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""
WX_MAPPING = """
import mmap
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except PermissionError:
    print("refused")
else:
    print("allowed")
"""


def under_mdwe(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-c", MDWE, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode == 97:
        service_missing("PR_SET_MDWE", "this kernel predates 6.3")
    return result


@pytest.fixture
def mdwe_env(env) -> dict[str, str]:  # the probe also proves the restriction bites
    probe = under_mdwe(["-c", WX_MAPPING], env)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "refused"  # the restriction is really on
    return env


def test_ingest_and_show_on_both_databases_run_without_writable_executable_memory(
    mdwe_env, pg_database, redis_url, tmp_path
):
    import uuid

    prefix = f"mdwe-test:{uuid.uuid4().hex[:8]}:"  # the cache's keys, dropped at the end
    fake = FakeCoinbase()
    fake.add("BTC-USD", 86400, [(1704067200 + i * 86400, 10, 12, 9, 11, 5) for i in range(40)])
    with serve(fake) as coinbase:
        env = {
            **mdwe_env,
            "DATABASE_URL": pg_database,
            "REDIS_URL": redis_url,
            "CACHE_PREFIX": prefix,
            "COINBASE_BASE_URL": coinbase.url,
        }
        ingest = under_mdwe(
            [
                "-m",
                "marketdata",
                "ingest",
                "-s",
                "BTC-USD",
                "--since",
                "2024-01-01",
                "--until",
                "2024-02-10",
                "--json",
            ],
            env,
        )
        assert ingest.returncode == 0, ingest.stderr
        assert json.loads(ingest.stdout)["status"] == "success"
    show = under_mdwe(["-m", "marketdata", "show", "BTC-USD", "--last", "3", "--json"], env)
    _drop_keys(redis_url, prefix)
    assert show.returncode == 0, show.stderr
    assert len(json.loads(show.stdout)["candles"]) == 3
    embedded = {**mdwe_env, "DATABASE_URL": f"sqlite:///{tmp_path / 'md.sqlite3'}"}
    sqlite = [
        "-m",
        "marketdata",
        "ingest",
        "-p",
        "synthetic",
        "-s",
        "ETH-USD",
        "--lookback-days",
        "3",
    ]
    result = under_mdwe(sqlite, embedded)
    assert result.returncode == 0, result.stderr


def _drop_keys(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()
