"""`metrics`, `runs` and `status` as a user runs them, and a planted password and webhook token
searched for in every output a run and these commands produce."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families

from tests.cli.helpers import one_error_line, run
from tests.fakes.server import Reply, serve
from tests.test_metrics import listen, received

JSON_NAMES = {
    "ingestion_success_total",
    "ingestion_failure_total",
    "ingestion_partial_total",
    "ingestion_interrupted_total",
    "ingestion_duration_ms",
    "ingestion_rows_written_total",
    "ingestion_last_success",
    "ingestion_last_failure",
    "by_trigger",
    "by_provider",
    "freshness",
    "stale",
}


def down(request):
    return Reply(503, "down")


def test_metrics_runs_and_status_report_the_recorded_history(env, tmp_path):
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'md.sqlite3'}"
    assert run(["ingest", "-s", "BTC-USD", "-p", "synthetic", "-i", "1h"], env).returncode == 0
    with serve(down) as coinbase:
        env_down = {**env, "COINBASE_BASE_URL": coinbase.url, "HTTP_RETRY_ATTEMPTS": "1"}
        failed = run(["ingest", "-s", "ETH-USD", "-p", "coinbase", "--trigger", "timer"], env_down)
    assert failed.returncode == 1

    data = json.loads(run(["metrics", "--json"], env).stdout)
    assert data.keys() >= JSON_NAMES
    assert (data["ingestion_success_total"], data["ingestion_failure_total"]) == (1, 1)
    assert data["ingestion_duration_ms"]["count"] == 2
    assert data["by_trigger"]["timer"]["ingestion_failure_total"] == 1
    assert data["by_provider"]["synthetic"]["ingestion_rows_written_total"] > 0
    [btc] = data["freshness"]
    assert (btc["symbol"], btc["interval"], btc["stale"]) == ("BTC-USD", "1h", False)
    assert data["ingestion_last_success"].endswith("Z")

    table = run(["metrics"], env)
    assert "run duration (ms)" in table.stderr and "█" in table.stdout
    assert "BTC-USD" in table.stdout

    text = run(["metrics", "--format", "prometheus"], env).stdout
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"ingestion_success", "ingestion_duration_ms", "market_staleness_seconds"} <= names

    textfile = tmp_path / "marketdata.prom"
    quiet = run(["metrics", "--textfile", str(textfile)], env)
    assert quiet.returncode == 0 and quiet.stdout == ""
    assert {f.name for f in text_string_to_metric_families(textfile.read_text())} == names

    runs = json.loads(run(["runs", "--json"], env).stdout)
    assert [(r["run_id"], r["status"], r["trigger"]) for r in runs] == [
        (2, "failure", "timer"),
        (1, "success", "manual"),
    ]
    assert runs[1]["providers"] == ["synthetic"] and runs[1]["rows_inserted"] > 0
    [failure] = json.loads(run(["runs", "--status", "failed", "--json"], env).stdout)
    assert "HTTP 503" in failure["error"] and failure["started_at"].endswith("Z")
    assert len(json.loads(run(["runs", "-n", "1", "--json"], env).stdout)) == 1
    listed = run(["runs"], env).stdout
    assert "failure" in listed and "HTTP 503" in listed

    status = run(["status", "--json"], env)
    assert status.returncode == 0
    [market] = json.loads(status.stdout)
    assert (market["symbol"], market["last_outcome"], market["stale"]) == ("BTC-USD", "ok", False)
    assert market["last_run_id"] == 1


def test_status_exits_1_after_the_report_when_a_market_is_stale(env, tmp_path):
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'md.sqlite3'}"
    until = (datetime.now(UTC) - timedelta(days=3)).strftime("%Y-%m-%d")
    ingest = ["ingest", "-s", "BTC-USD,AAPL", "-p", "synthetic", "-i", "1d", "--until", until]
    assert run(ingest, env).returncode == 0
    result = run(["status"], env)
    assert result.returncode == 1
    assert "stale" in result.stdout and "BTC-USD" in result.stdout
    line = one_error_line(result)
    assert "markets are stale beyond ALERT_STALE_AFTER (2h): " in line and "BTC-USD 1d" in line
    as_json = run(["status", "--json"], {**env, "ALERT_STALE_AFTER": "30d"})
    assert as_json.returncode == 0
    assert {m["stale"] for m in json.loads(as_json.stdout)} == {False}


def test_bad_options_are_one_usage_error_line(env, tmp_path):
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'md.sqlite3'}"
    for args, words in [
        (["metrics", "--since", "yesterday"], "--since 'yesterday' is neither"),
        (["runs", "--status", "broken"], "unknown run status 'broken'"),
        (["metrics", "--textfile", str(tmp_path / "no" / "such.prom")], "cannot write"),
    ]:
        result = run(args, env)
        assert result.returncode == 2, result.stderr
        assert words in one_error_line(result)


def test_a_planted_password_and_token_appear_in_no_output(env, tmp_path, pg_database):
    from sqlalchemy.engine import make_url

    from tests.conftest import _truncate

    _truncate(pg_database)
    url = make_url(pg_database)
    password = url.password or "PlantedPw9x"
    token = "PlantedT0kenXyz"
    database = url.set(password=password).render_as_string(hide_password=False)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    unreachable = url.set(password=password, port=closed).render_as_string(hide_password=False)
    bodies: list[str] = []

    def hook(request):
        bodies.append(request.body.decode())
        return Reply(200, "ok")

    log_file = tmp_path / "logs" / "ingestion.log"
    outputs: list[str] = []
    with serve(hook) as webhook, serve(down) as coinbase, listen() as udp:
        env.update(
            {
                "DATABASE_URL": database,
                "ALERT_WEBHOOK_URL": f"{webhook.url}/services/{token}",
                "COINBASE_BASE_URL": coinbase.url,
                "HTTP_RETRY_ATTEMPTS": "1",
                "STATSD_HOST": "127.0.0.1",
                "STATSD_PORT": str(udp.getsockname()[1]),
                "LOG_FILE": str(log_file),
                "LOG_LEVEL": "DEBUG",
            }
        )
        commands = [
            ["ingest", "-s", "BTC-USD", "-p", "synthetic", "--until", "2024-01-10"],
            ["ingest", "-s", "BTC-USD,ETH-USD", "-p", "coinbase"],
            ["--log-format", "json", "ingest", "-s", "ETH-USD", "-p", "coinbase"],
            ["metrics"],
            ["metrics", "--json"],
            ["metrics", "--format", "prometheus", "--textfile", str(tmp_path / "m.prom")],
            ["runs"],
            ["runs", "--json"],
            ["status"],
            ["status", "--json"],
            ["config", "show"],
            ["--database-url", unreachable, "ingest", "-s", "BTC-USD"],
        ]
        for args in commands:
            result = run(args, env)
            outputs += [result.stdout, result.stderr]
        udp.settimeout(0.5)
        datagrams = received(udp)
    severities = {json.loads(b)["severity"] for b in bodies}
    assert severities == {"error", "critical"}  # failed runs, stale BTC-USD, no database
    assert any("database unreachable" in b for b in bodies)
    assert datagrams and log_file.exists()
    everything = [
        *outputs,
        *bodies,
        *datagrams,
        (tmp_path / "m.prom").read_text(),
        *(p.read_text() for p in log_file.parent.iterdir()),
    ]
    for secret in (password, token):
        leaks = [text for text in everything if secret in text]
        assert leaks == [], f"{secret} leaked"
