"""marketdata-alert@UNIT: a critical alert naming the unit that failed, and why."""

from __future__ import annotations

import json

from tests.cli.helpers import one_error_line, run
from tests.fakes.server import Reply, serve


def test_the_failed_unit_is_named_with_what_systemd_said(cli):
    received = []

    def hook(request):
        received.append(json.loads(request.body))
        return Reply(200, "ok")

    monitor = {
        "MONITOR_SERVICE_RESULT": "oom-kill",
        "MONITOR_EXIT_CODE": "killed",
        "MONITOR_EXIT_STATUS": "KILL",
        "MONITOR_INVOCATION_ID": "0123abcd",
        "ALERT_MIN_SEVERITY": "critical",
    }
    with serve(hook) as server:
        result = cli(
            ["alert", "unit-failed", "marketdata-ingest@equities.service"],
            **monitor,
            ALERT_WEBHOOK_URL=server.url + "/hooks/S3CRETTOKEN",
        )
    assert result.returncode == 0, result.stderr
    [alert] = received
    assert alert["severity"] == "critical"
    assert alert["title"] == "systemd unit marketdata-ingest@equities.service failed"
    assert "result oom-kill, killed KILL" in alert["detail"]
    assert "journalctl _SYSTEMD_INVOCATION_ID=0123abcd" in alert["detail"]
    assert "S3CRETTOKEN" not in result.stderr


def test_a_refused_alert_fails_the_alert_unit_and_no_webhook_is_a_usage_error(env, cli):
    with serve(lambda request: Reply(500, "down")) as server:
        refused = run(
            ["alert", "unit-failed", "x.service"], {**env, "ALERT_WEBHOOK_URL": server.url}
        )
    assert refused.returncode == 1
    assert "did not accept the alert that x.service failed" in one_error_line(refused)
    unset = cli(["alert", "unit-failed", "x.service"])
    assert unset.returncode == 2
    assert "ALERT_WEBHOOK_URL is not set" in unset.stderr


def test_a_partial_or_interrupted_run_is_not_alerted_twice(cli):
    received = []

    def hook(request):
        received.append(request)
        return Reply(200, "ok")

    with serve(hook) as server:
        base = {"ALERT_WEBHOOK_URL": server.url, "MONITOR_EXIT_CODE": "exited"}
        partial = cli(["alert", "unit-failed", "x.service"], **base, MONITOR_EXIT_STATUS="3")
        failed = cli(["alert", "unit-failed", "x.service"], **base, MONITOR_EXIT_STATUS="75")
    assert (partial.returncode, failed.returncode) == (0, 0), partial.stderr + failed.stderr
    assert "an outcome its run alerted on itself: not sent" in partial.stderr
    assert len(received) == 1  # exit 75: the database was unreachable
