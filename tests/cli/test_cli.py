"""The installed command, run as a user would: exit codes, one-line errors, real databases."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.helpers import one_error_line, run
from tests.fakes.coinbase import FakeCoinbase
from tests.fakes.market import walk
from tests.fakes.server import Reply, serve

DAY = 86_400


@pytest.fixture
def coinbase():
    now = int(time.time())
    today = now - now % DAY
    fake = FakeCoinbase()
    fake.add("BTC-USD", DAY, walk(today - 99 * DAY, DAY, 100))
    with serve(fake) as server:
        server.fake = fake
        yield server


def test_help_lists_every_command(env):
    result = run(["--help"], env)
    assert result.returncode == 0
    for command in ("ingest", "replay", "gaps", "rejects", "markets", "providers", "db", "config"):
        assert command in result.stdout


def test_db_check_against_a_closed_port_exits_75_quickly_with_one_line(env):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env["DATABASE_URL"] = f"postgresql://md:topsecret@127.0.0.1:{port}/md"
    started = time.monotonic()
    result = run(["db", "check"], env)
    assert time.monotonic() - started < 10
    assert result.returncode == 75
    line = one_error_line(result)
    assert f"127.0.0.1:{port}" in line and "topsecret" not in result.stderr + result.stdout


def test_a_malformed_database_url_names_the_variable_masked(env):
    env["DATABASE_URL"] = "postgresql://md:topsecret@db:notaport/md"
    result = run(["ingest", "--symbols", "BTC-USD"], env)
    assert result.returncode == 2
    line = one_error_line(result)
    assert "DATABASE_URL" in line and "md:***@db" in line and "topsecret" not in result.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["ingest", "--symbols", "BTC USD!"], "invalid symbol 'BTC USD!'"),
        (["ingest", "--symbols", "BTC-USD", "--interval", "2d"], "unknown interval '2d'"),
        (["ingest", "--symbols", "BTC-USD", "--interval", ""], "--interval is empty"),
        (["ingest", "--symbols", "BTC-USD", "--provider", "nosuch"], "unknown provider 'nosuch'"),
        (
            ["ingest", "--symbols", "BTC-USD", "--since", "2024-02-01", "--until", "2024-01-01"],
            "--since",
        ),
        (["ingest", "--symbols", "BTC-USD", "--since", "yesterday"], "not an ISO 8601"),
        (["replay", "--symbols", "BTC-USD", "--lookback-days", "0"], "--lookback-days"),
        (["markets", "disable", "NOPE"], "no market NOPE"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(env, args, fragment):
    result = run(args, env)
    assert result.returncode == 2, result.stderr
    assert fragment in one_error_line(result)


def test_ingest_lands_rows_in_the_embedded_sqlite_file_by_default(env, coinbase, tmp_path):
    env["COINBASE_BASE_URL"] = coinbase.url
    env["INGESTION_LOOKBACK_DAYS"] = "30"
    result = run(["ingest", "--symbols", "BTC-USD", "--json"], env)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "success" and summary["rows_inserted"] == 31
    database = tmp_path / "data" / "marketdata" / "marketdata.sqlite3"
    with sqlite3.connect(database) as conn:
        assert conn.execute("select count(*) from candles").fetchone() == (31,)
        assert conn.execute("select status from ingestion_runs").fetchall() == [("success",)]


def test_ingest_lands_rows_in_postgresql_with_database_url(env, coinbase, pg_database):
    import sqlalchemy as sa

    from tests.conftest import _truncate

    _truncate(pg_database)
    env.update(
        COINBASE_BASE_URL=coinbase.url, INGESTION_LOOKBACK_DAYS="10", DATABASE_URL=pg_database
    )
    result = run(["ingest", "--symbols", "BTC-USD"], env)
    assert result.returncode == 0, result.stderr
    engine = sa.create_engine(pg_database.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from candles")).scalar() == 11
    engine.dispose()


def test_a_partial_run_exits_3_and_still_writes_the_good_symbol(env, coinbase):
    env["COINBASE_BASE_URL"] = coinbase.url
    result = run(["ingest", "--symbols", "BTC-USD,NOPE-USD"], env)
    assert result.returncode == 3
    assert "1 of 2 pairs failed" in one_error_line(result)
    assert "coinbase does not list NOPE-USD" in result.stderr
    # not a terminal: a log line per pair instead of a progress bar, no escape codes
    assert "BTC-USD 1d ok: " in result.stderr and "\x1b[" not in result.stderr


def test_config_show_masks_secrets_and_names_sources(env):
    env["DATABASE_URL"] = "postgresql://md:topsecret@db:5432/md"
    env["ALERT_WEBHOOK_URL"] = "https://hooks.example/services/TOKENTOKEN123"
    result = run(["config", "show", "--json"], env)
    assert result.returncode == 0, result.stderr
    assert "topsecret" not in result.stdout and "TOKENTOKEN123" not in result.stdout
    rows = {r["name"]: r for r in json.loads(result.stdout)["settings"]}
    assert rows["DATABASE_URL"] == {
        "name": "DATABASE_URL",
        "value": "postgresql://md:***@db:5432/md",
        "source": "env",
    }
    assert rows["INGESTION_LOOKBACK_DAYS"]["source"] == "default"


def test_markets_add_disable_and_the_run_skips_it(env, coinbase):
    env["COINBASE_BASE_URL"] = coinbase.url
    assert (
        run(["markets", "add", "BTC-USD", "--provider-symbol", "binance=BTCUSDT"], env).returncode
        == 0
    )
    assert run(["markets", "disable", "btc-usd"], env).returncode == 0
    listed = json.loads(run(["markets", "list", "--json"], env).stdout)
    assert listed == [
        {
            "symbol": "BTC-USD",
            "enabled": False,
            "asset_class": "crypto",
            "provider_symbols": {"binance": "BTCUSDT"},
            "note": None,
            "calendar": "24/7",
        }
    ]
    result = run(["ingest", "--symbols", "BTC-USD", "--json"], env)
    assert json.loads(result.stdout)["pairs"][0]["status"] == "disabled"


def test_migrations_work_from_any_directory(env, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    assert run(["db", "upgrade"], env, cwd=elsewhere).returncode == 0
    result = run(["db", "check", "--json"], env, cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["pending"] == []
    assert run(["db", "downgrade", "base", "--yes"], env, cwd=elsewhere).returncode == 0
    assert run(["db", "check"], env, cwd=elsewhere).returncode == 1
    assert Path(tmp_path / "x.sqlite3").exists()


def test_a_provider_password_never_reaches_output_logs_or_the_run_ledger(env, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env["COINBASE_BASE_URL"] = f"http://proxyuser:pr0xyPassw0rd@127.0.0.1:{port}"
    env["HTTP_RETRY_ATTEMPTS"] = "1"
    result = run(["ingest", "--symbols", "BTC-USD", "--json"], env)
    assert result.returncode == 1
    assert "unreachable at http://proxyuser:***@127.0.0.1" in result.stdout
    assert "pr0xyPassw0rd" not in result.stdout + result.stderr
    database = tmp_path / "data" / "marketdata" / "marketdata.sqlite3"
    with sqlite3.connect(database) as conn:
        stored = conn.execute("select error from ingestion_runs").fetchall()
        stored += conn.execute("select error from ingestion_outcomes").fetchall()
    assert stored and all("pr0xyPassw0rd" not in (row[0] or "") for row in stored)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupt_rolls_back_the_pair_in_flight_exits_with_its_code_and_records_the_run(
    env, coinbase, tmp_path, signum, code
):
    # the pair's fetch is in flight, and stays so for 30 s, when the signal comes
    coinbase.fake.fail_next = [Reply(200, [], delay=30.0)]
    env["COINBASE_BASE_URL"] = coinbase.url
    proc = subprocess.Popen(
        [sys.executable, "-m", "marketdata", "ingest", "--symbols", "BTC-USD"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 90  # a loaded machine may be slow to start the process
    while not coinbase.requests:
        assert time.monotonic() < deadline, "the run never asked the provider"
        time.sleep(0.05)
    proc.send_signal(signum)
    started = time.monotonic()
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert time.monotonic() - started < 15  # not the 30 s the answer takes
    database = tmp_path / "data" / "marketdata" / "marketdata.sqlite3"
    with sqlite3.connect(database) as conn:
        assert conn.execute("select status from ingestion_runs").fetchall() == [("interrupted",)]
        assert conn.execute("select count(*) from candles").fetchone() == (0,)


def test_alert_test_posts_to_the_webhook_and_masks_its_token(env):
    received = []

    def hook(request):
        received.append(json.loads(request.body))
        return Reply(200, "ok")

    with serve(hook) as server:
        env["ALERT_WEBHOOK_URL"] = server.url + "/services/T0KEN0123456"
        result = run(["alert", "test", "--severity", "error"], env)
    assert result.returncode == 0, result.stderr
    assert received[0]["severity"] == "error" and received[0]["title"] == "marketdata test alert"
    assert "T0KEN0123456" not in result.stderr + result.stdout


def test_a_server_that_never_answers_is_reported_after_the_connect_timeout_not_a_hang(env):
    with socket.socket() as silent:  # accepts connections, never speaks PostgreSQL
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        env["DATABASE_URL"] = f"postgresql://md@127.0.0.1:{port}/md"
        env["DB_CONNECT_TIMEOUT"] = "2"
        started = time.monotonic()
        result = run(["db", "check"], env)
        elapsed = time.monotonic() - started
    assert result.returncode == 75, result.stderr
    assert 1.5 < elapsed < 10
    assert f"127.0.0.1:{port}" in one_error_line(result)


def test_a_dry_run_on_a_fresh_machine_plans_without_creating_the_database(env, tmp_path):
    result = run(
        ["ingest", "--symbols", "BTC-USD,ETH-USD", "--interval", "1h,1d", "--dry-run", "--json"],
        env,
    )
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["dry_run"] is True and plan["providers"] == ["coinbase"]
    hourly = next(p for p in plan["pairs"] if p["symbol"] == "BTC-USD" and p["interval"] == "1h")
    assert 90 * 24 <= hourly["bars"] <= 90 * 24 + 1  # the open hour, depending on the minute
    assert hourly["requests"] == -(-hourly["bars"] // 300)
    assert hourly["seconds"] >= 0
    assert not (tmp_path / "data" / "marketdata").exists()
