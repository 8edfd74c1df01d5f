"""Logs and progress as people and scripts see them: flat JSON logs with library records
filtered by the same level, a progress display that leaves only the summary, -q and -v."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.cli.terminal import Run, home_env, run_all
from tests.fakes.server import Reply, serve

PAIRS = ["ingest", "-s", "BTC-USD,ETH-USD", "-p", "synthetic", "-i", "1d,1h"]


@pytest.fixture
def home(tmp_path) -> dict[str, str]:
    return home_env(tmp_path)


def test_json_logs_are_one_flat_object_per_line_with_the_run_context(home):
    [run] = run_all([Run(PAIRS, {**home, "LOG_FORMAT": "json"})])

    assert run.code == 0, run
    logs = [line for line in run.stderr.splitlines() if line.startswith("{")]
    records = [json.loads(line) for line in logs]  # notes (a table's title) are plain text
    assert len(records) >= 6
    for record in records:
        assert list(record)[:3] == ["time", "level", "message"]
        assert record["time"].endswith("Z")
        assert not any(isinstance(v, dict | list) for v in record.values())  # flat
    pairs = [r for r in records if "symbol" in r]
    assert {(r["symbol"], r["interval"]) for r in pairs} >= {("BTC-USD", "1d"), ("ETH-USD", "1h")}
    assert all(r["run_id"] == 1 and r["provider"] == "synthetic" for r in pairs)


def test_library_records_go_through_the_same_sink_and_level(home):
    with serve(lambda request: Reply(503, "down")) as coinbase:
        env = {**home, "COINBASE_BASE_URL": coinbase.url, "LOG_FORMAT": "json"}
        args = ["ingest", "-s", "BTC-USD", "-p", "coinbase", "--lookback-days", "2"]
        [debug] = run_all([Run(["--log-level", "DEBUG", *args], env)])
        [warning] = run_all([Run(["--log-level", "WARNING", *args], env)])

    assert debug.code == warning.code == 1
    records = [json.loads(line) for line in debug.stderr.splitlines() if line.startswith("{")]
    httpx = [r for r in records if r["logger"].startswith("httpx")]
    assert httpx and "503" in httpx[0]["message"]  # a standard-library record, flat JSON
    retries = [r for r in records if "retry_num" in r]
    assert retries and retries[0]["level"] == "INFO" and "caused_by" in retries[0]
    shown = warning.stderr
    assert "httpx" not in shown and "retry" not in shown and "stamina" not in shown
    logged = [json.loads(line) for line in shown.splitlines() if line.startswith("{")]
    assert all(r["level"] in ("WARNING", "ERROR") for r in logged)


def test_at_a_terminal_the_bar_is_cleared_and_the_summary_shown_once(home):
    [run] = run_all([Run(PAIRS, home, columns=100)])

    assert run.code == 0, run
    screen = run.shown
    assert screen.count("run 1: success") == 1
    assert "━" not in screen and "INFO" not in screen  # no bar left, no log lines
    assert [line.split()[:2] for line in run.screen if line.startswith(("BTC", "ETH"))] == [
        ["BTC-USD", "1d"],
        ["BTC-USD", "1h"],
        ["ETH-USD", "1d"],
        ["ETH-USD", "1h"],
    ]


def test_a_failed_pair_is_printed_once_at_a_terminal(home):
    with serve(lambda request: Reply(503, "down")) as coinbase:
        env = {**home, "COINBASE_BASE_URL": coinbase.url}
        args = ["ingest", "-s", "BTC-USD", "-p", "coinbase", "--lookback-days", "2"]
        [run] = run_all([Run(args, env, columns=120)])

    assert run.code == 1, run
    assert run.shown.count("HTTP 503") == 1, run  # under the table, not in a log line too
    assert run.screen.count("marketdata: error: run 1 failed: 1 of 1 pairs failed") == 1


def test_quiet_prints_errors_only_and_verbose_adds_timed_info_lines(home):
    [verbose] = run_all([Run(["-v", "ingest", "-s", "SOL-USD", "-p", "synthetic"], home, 100)])
    [noted] = run_all([Run(["gaps", "-s", "SOL-USD"], home, columns=100)])
    [quiet] = run_all([Run(["-q", "gaps", "-s", "SOL-USD"], home, columns=100)])
    [failed] = run_all([Run(["-q", "gaps", "-s", "DOGE-USD"], home, columns=100)])

    info = [line for line in verbose.screen if " INFO " in line]
    assert verbose.code == 0 and info and info[0][:4].isdigit()  # timestamped
    assert noted.code == 0 and "no gaps" in noted.shown
    assert quiet.code == 0 and quiet.shown == ""
    assert failed.code == 2 and failed.shown.startswith("marketdata: error: nothing stored")


def _completions(home: dict[str, str], line: str) -> list[str]:
    env = {**home, "_MARKETDATA_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": line}
    [run] = run_all([Run([], env)])
    assert run.code == 0, run
    return re.findall(r'"([^"]+)"', run.stdout)


def test_completion_offers_intervals_providers_and_stored_symbols(home, tmp_path):
    assert _completions(home, "marketdata gaps -s ") == []  # nothing stored yet
    assert not (tmp_path / "data").exists()  # and completing created no database
    [ingested] = run_all([Run(["ingest", "-s", "SOL-USD", "-p", "synthetic"], home)])
    assert ingested.code == 0, ingested

    assert _completions(home, "marketdata ingest -i 1h,1") == ["1h,1m", "1h,15m", "1h,1h", "1h,1d"]
    assert _completions(home, "marketdata ingest -p coinbase,k") == ["coinbase,kraken"]
    assert _completions(home, "marketdata status -s S") == ["SOL-USD"]


def test_version_prints_the_installed_version(home):
    from importlib.metadata import version

    [run] = run_all([Run(["--version"], home)])

    assert (run.code, run.stdout) == (0, f"marketdata {version('marketdata')}\n")


def test_a_downgrade_that_would_drop_data_needs_yes_when_not_at_a_terminal(home):
    from marketdata.storage.migrate import SCHEMA_HEAD

    [ingested] = run_all([Run(["ingest", "-s", "SOL-USD", "-p", "synthetic"], home)])
    [refused] = run_all([Run(["db", "downgrade", "0003", "--json"], home)])
    [current] = run_all([Run(["db", "current", "--json"], home)])
    [done] = run_all([Run(["db", "downgrade", "0003", "--yes", "--json"], home)])

    assert ingested.code == 0, ingested
    assert refused.code == 2 and "91 candles" in refused.stderr, refused
    assert "hint: add --yes to go ahead" in refused.stderr
    assert json.loads(current.stdout)["current"] == SCHEMA_HEAD  # nothing was dropped
    assert done.code == 0, done
    assert json.loads(done.stdout) | {"database": None} == {
        "database": None,
        "previous": SCHEMA_HEAD,
        "current": "0003",
        "analytics_rebuild_needed": False,
    }


def test_purging_rejects_asks_first_too(home):
    from datetime import UTC, datetime, timedelta

    import sqlalchemy as sa

    from marketdata.storage.rejects import record_rejects
    from marketdata.validation import Rejected

    [ingested] = run_all([Run(["ingest", "-s", "SOL-USD", "-p", "synthetic"], home)])
    database = Path(home["XDG_DATA_HOME"]) / "marketdata" / "marketdata.sqlite3"
    engine = sa.create_engine(f"sqlite:///{database}")
    old = datetime.now(UTC) - timedelta(days=3)
    with engine.begin() as conn:
        bad = Rejected(1_767_225_600, 1.0, 0.5, 0.8, 0.9, 1.0, "high below open or close")
        record_rejects(conn, None, "SOL-USD", "1d", "synthetic", [bad], old)
    engine.dispose()
    [refused] = run_all([Run(["rejects", "purge", "--before", "1d"], home)])
    [kept] = run_all([Run(["rejects", "--json"], home)])
    [purged] = run_all([Run(["rejects", "purge", "--before", "1d", "--yes", "--json"], home)])
    [left] = run_all([Run(["rejects", "--json"], home)])

    assert ingested.code == 0, ingested
    assert refused.code == 2 and "delete 1 rejected candles" in refused.stderr, refused
    assert [r["count"] for r in json.loads(kept.stdout)] == [1]
    assert json.loads(purged.stdout) == {"deleted": 1, "matched": 1, "dry_run": False}
    assert json.loads(left.stdout) == []
