"""`providers list` and `providers check` as a user runs them."""

from __future__ import annotations

import json

from tests.cli.helpers import run
from tests.fakes.coinbase import FakeCoinbase
from tests.fakes.server import Reply, serve


def test_providers_list_shows_every_provider_with_its_limits(env):
    result = run(["providers", "list", "--json"], env)
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert set(rows) == {
        "coinbase",
        "kraken",
        "binance",
        "coingecko",
        "yahoo",
        "stooq",
        "csv",
        "synthetic",
    }
    assert rows["coinbase"]["max_rows_per_request"] == 300
    assert rows["coinbase"]["intervals"] == ["1m", "5m", "15m", "1h", "6h", "1d"]
    assert rows["coinbase"]["base_url"] == "https://api.exchange.coinbase.com"
    assert "6h" not in rows["kraken"]["intervals"]


def test_providers_check_reports_up_with_latency_and_exits_0(env):
    with serve(FakeCoinbase()) as server:
        env["COINBASE_BASE_URL"] = server.url
        result = run(["providers", "check", "coinbase", "--json"], env)
    assert result.returncode == 0, result.stderr
    [row] = json.loads(result.stdout)
    assert row["provider"] == "coinbase" and row["status"] == "up"
    assert row["latency_ms"] >= 0


def test_providers_check_exits_1_when_a_provider_is_down(env):
    fake = FakeCoinbase(fail_next=[Reply(503, "down")] * 10)
    with serve(fake) as server:
        env.update(COINBASE_BASE_URL=server.url, HTTP_RETRY_ATTEMPTS="1")
        result = run(["providers", "check"], env)
    assert result.returncode == 1
    assert "provider(s) down: coinbase" in result.stderr
    assert "HTTP 503" in result.stdout


def test_a_base_url_password_never_shows(env):
    env["KRAKEN_BASE_URL"] = "https://user:hunter2pass@mirror.example"
    result = run(["providers", "list"], env)
    assert result.returncode == 0
    assert "hunter2pass" not in result.stdout + result.stderr
