"""Logs as a server sees them: journald priorities from a real subprocess, LOG_FILE JSON lines
carrying the run's context, rotation and retention, and two processes sharing one file."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from marketdata.observability.logfile import (
    Retention,
    Rotation,
    SharedLogFile,
    parse_retention,
    parse_rotation,
)
from tests.cli.helpers import one_error_line
from tests.fakes.server import Reply, serve


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    return {
        **keep,
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'md.sqlite3'}",
    }


def marketdata(args, env, *, stderr_path: Path | None = None, journal: bool = False):
    """Run the CLI; with `journal`, stderr is a file whose device:inode is JOURNAL_STREAM,
    exactly as systemd sets it for a service whose output goes to the journal."""
    env = dict(env)
    if stderr_path is None:
        return subprocess.run(
            [sys.executable, "-m", "marketdata", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    with stderr_path.open("w") as stderr:
        if journal:
            st = os.fstat(stderr.fileno())
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        return subprocess.run(
            [sys.executable, "-m", "marketdata", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            timeout=120,
        )


ISO_START = re.compile(r"^(<\d>)?\d{4}-\d\d-\d\dT")


def test_under_journald_lines_carry_a_syslog_priority_and_no_timestamp(env, tmp_path):
    stderr = tmp_path / "journal.txt"
    with serve(lambda request: Reply(503, "down")) as coinbase:
        env["COINBASE_BASE_URL"] = coinbase.url
        env["HTTP_RETRY_ATTEMPTS"] = "1"
        result = marketdata(
            ["ingest", "-s", "BTC-USD,ETH-USD", "-p", "coinbase"],
            env,
            stderr_path=stderr,
            journal=True,
        )
    assert result.returncode == 1
    lines = [line for line in stderr.read_text().splitlines() if line.strip()]
    records = [line for line in lines if re.search(r"\b(INFO|WARNING|ERROR|DEBUG)\b", line)]
    assert records and all(re.match(r"^<[0-7]>", line) for line in records), lines
    assert not any(ISO_START.match(line) for line in lines)
    assert any(line.startswith("<6>INFO") and "started" in line for line in lines)
    assert any(line.startswith("<4>WARNING") and "BTC-USD 1d failed" in line for line in lines)
    assert lines[-2].startswith("<3>marketdata: error: run ")
    assert lines[-1].startswith("<3>hint: ")


def test_off_journald_the_same_stream_variable_changes_nothing(env, tmp_path):
    env["JOURNAL_STREAM"] = "1:1"  # set, but not our stderr: e.g. a shell inside a service
    result = marketdata(["ingest", "-s", "BTC-USD", "-p", "synthetic"], env)
    assert result.returncode == 0
    assert not re.search(r"^<\d>", result.stderr, re.MULTILINE)


def test_log_file_lines_are_flat_json_carrying_the_runs_context(env, tmp_path):
    log = tmp_path / "logs" / "ingestion.log"
    env["LOG_FILE"] = str(log)
    result = marketdata(
        ["ingest", "-s", "BTC-USD,AAPL", "-p", "synthetic", "-i", "1d,1h", "--trigger", "timer"],
        env,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in log.read_text().splitlines()]
    run = [r for r in records if "run_id" in r]
    assert len(run) >= 6  # started, one line per pair, the summary
    for record in records:
        assert {"time", "level", "message", "logger", "pid"} <= record.keys()
        assert record["time"].endswith("Z")
        assert not any(isinstance(v, dict | list) for v in record.values())  # flat
    assert all(r["trigger"] == "timer" and r["run_id"] == run[0]["run_id"] for r in run)
    started = next(r for r in records if "started" in r["message"])
    assert started["run_id"] == 1 and started["trigger"] == "timer"


def test_a_pairs_records_carry_symbol_interval_and_provider(app_factory, tmp_path):
    from loguru import logger

    from marketdata.observability.logging import configure_logging
    from marketdata.pipeline import IngestRequest, run_ingest

    log = tmp_path / "run.log"
    configure_logging("DEBUG", "text", log)
    with serve(lambda request: Reply(503, "down")) as coinbase:
        app = app_factory(coinbase_base_url=coinbase.url, ingestion_lookback_days=2)
        try:
            run_ingest(app, IngestRequest(symbols=["BTC-USD"], providers=["coinbase,synthetic"]))
        finally:
            app.close()
            configure_logging("INFO", "text", None)
            logger.remove()
    records = [json.loads(line) for line in log.read_text().splitlines()]
    fell_back = next(r for r in records if "served by synthetic" in r["message"])
    assert fell_back["symbol"] == "BTC-USD" and fell_back["interval"] == "1d"
    assert fell_back["provider"] == "synthetic"
    assert fell_back["run_id"] and fell_back["trigger"] == "manual"
    assert all("run_id" in r for r in records if r["logger"].startswith("marketdata.pipeline"))


def test_size_rotation_keeps_the_newest_files_the_retention_names(tmp_path):
    path = tmp_path / "ingestion.log"
    sink = SharedLogFile(path, Rotation(max_bytes=400), Retention(files=2))
    for i in range(40):
        sink.write(record_message(f"line {i:02d} " + "x" * 60))
    sink.close()
    rotated = sink.rotated_files()
    assert len(rotated) == 2
    assert all(p.stat().st_size <= 400 for p in [*rotated, path])
    lines = [line for p in [*rotated, path] for line in p.read_text().splitlines()]
    kept = [json.loads(line)["message"] for line in lines]
    assert kept[-1].startswith("line 39") and kept == sorted(kept)


def test_period_rotation_starts_a_new_file_when_the_day_changes(tmp_path):
    path = tmp_path / "ingestion.log"
    now = time.time()
    sink = SharedLogFile(path, parse_rotation("1d"), parse_retention("14d"), clock=lambda: now)
    sink.write(record_message("yesterday"))
    os.utime(path, (now - 86_400, now - 86_400))
    old = tmp_path / "ingestion.20200101T000000.000000Z.log"
    old.write_text("{}\n")
    os.utime(old, (now - 30 * 86_400, now - 30 * 86_400))
    sink.write(record_message("today"))
    sink.close()
    [rotated] = sink.rotated_files()  # the 30-day-old one was pruned
    assert "yesterday" in rotated.read_text() and "today" in path.read_text()


def test_two_processes_writing_one_file_lose_and_tear_no_line(tmp_path):
    path = tmp_path / "shared.log"
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from loguru import logger
        from marketdata.observability.logging import configure_logging
        configure_logging("INFO", "text", Path({str(path)!r}), rotation="8 KB",
                          retention="10000 files")
        for i in range(1500):
            logger.info("writer {{}} line {{}} " + "y" * 80, sys.argv[1], i)
        """
    )
    writers = [
        subprocess.Popen([sys.executable, "-c", script, name], stderr=subprocess.DEVNULL)
        for name in ("a", "b")
    ]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    files = sorted(tmp_path.glob("shared*.log"))
    assert len(files) > 10  # rotated many times while both were writing
    seen: dict[str, list[int]] = {"a": [], "b": []}
    for file in files:
        for line in file.read_text().splitlines():
            message = json.loads(line)["message"]  # a torn line would not parse
            _, name, _, number, _ = message.split(" ", 4)
            seen[name].append(int(number))
    assert sorted(seen["a"]) == list(range(1500))
    assert sorted(seen["b"]) == list(range(1500))


@pytest.mark.parametrize(
    ("name", "value"), [("LOG_ROTATION", "often"), ("LOG_RETENTION", "0 files")]
)
def test_a_bad_rotation_or_retention_is_a_usage_error(env, name, value):
    env[name] = value
    result = marketdata(["runs"], env)
    assert result.returncode == 2
    assert f"{name}={value} is invalid" in one_error_line(result)


def record_message(text: str):
    """A loguru message as a sink receives it (a str with its record)."""
    from loguru import logger

    captured = []
    handler = logger.add(captured.append, format="{message}")
    try:
        logger.info(text)
    finally:
        logger.remove(handler)
    return captured[0]
