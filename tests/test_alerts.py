"""Webhook alerts over a real HTTP server: what a run sends, thresholds, a webhook that fails."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from marketdata.config import load_settings
from marketdata.context import AppContext, build_alerts
from marketdata.errors import InputError, MarketdataError
from marketdata.observability.alerts import Alert, NullAlerts, WebhookAlerts, send_test_alert
from marketdata.pipeline import IngestRequest, run_ingest
from tests.fakes.coinbase import FakeCoinbase
from tests.fakes.server import Reply, serve

NOW = datetime(2024, 4, 10, 12, tzinfo=UTC)


class Receiver:
    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.bodies: list[dict] = []

    def __call__(self, request):
        self.bodies.append(json.loads(request.body))
        return Reply(self.status, "ok")


def app_for(database_url: str, **values) -> AppContext:
    loaded = load_settings(
        {"database_url": database_url, "http_retry_attempts": 1, **values}, environ={}
    )
    app = AppContext(loaded, alerts=build_alerts(loaded.settings))
    app.clock = lambda: NOW
    return app


def test_a_failed_run_posts_an_error_alert_naming_the_pairs(database_url):
    receiver = Receiver()
    down = FakeCoinbase(fail_next=[Reply(503, "down")] * 20)
    with serve(receiver) as hook, serve(down) as coinbase:
        app = app_for(
            database_url,
            alert_webhook_url=hook.url + "/services/T0K3N",
            coinbase_base_url=coinbase.url,
        )
        try:
            run_ingest(app, IngestRequest(symbols=["BTC-USD"]))
        finally:
            app.close()
    [body] = receiver.bodies
    assert body["severity"] == "error"
    assert body["title"] == f"ingestion run {body['run_id']} failure: 1 of 1 pairs failed"
    assert "BTC-USD 1d: coinbase answered HTTP 503" in body["detail"]
    assert body["text"].startswith("[error] ingestion run")


def test_a_successful_run_sends_nothing_and_the_threshold_filters(database_url):
    receiver = Receiver()
    with serve(receiver) as hook:
        app = app_for(database_url, alert_webhook_url=hook.url, ingestion_provider="synthetic")
        try:
            run_ingest(app, IngestRequest(symbols=["BTC-USD"]))
        finally:
            app.close()
        sink = WebhookAlerts(hook.url, "error")
        assert sink.send(Alert("warning", "t", "x")) is False
        assert sink.send(Alert("critical", "t", "x")) is True
    assert [b["severity"] for b in receiver.bodies] == ["critical"]


def test_a_webhook_that_fails_never_fails_the_run_nor_shows_its_token(database_url, capfd):
    from marketdata.observability.logging import configure_logging

    configure_logging("INFO", "text")
    receiver = Receiver(status=500)
    down = FakeCoinbase(fail_next=[Reply(503, "down")] * 20)
    with serve(receiver) as hook, serve(down) as coinbase:
        app = app_for(
            database_url,
            alert_webhook_url=hook.url + "/hooks/S3CRETT0KEN",
            coinbase_base_url=coinbase.url,
        )
        try:
            result = run_ingest(app, IngestRequest(symbols=["BTC-USD"]))
        finally:
            app.close()
    assert result.status.value == "failure"
    err = capfd.readouterr().err
    assert "alert not delivered" in err and "HTTP 500" in err
    assert "S3CRETT0KEN" not in err


def test_alert_test_needs_a_webhook_and_reports_a_refusal():
    with pytest.raises(InputError, match="ALERT_WEBHOOK_URL is not set"):
        send_test_alert(load_settings(environ={}).settings, "warning")
    with pytest.raises(InputError, match="--severity"):
        send_test_alert(
            load_settings({"alert_webhook_url": "http://x"}, environ={}).settings, "loud"
        )
    receiver = Receiver(status=403)
    with serve(receiver) as hook, pytest.raises(MarketdataError, match="did not accept"):
        send_test_alert(
            load_settings({"alert_webhook_url": hook.url + "/abc"}, environ={}).settings, "info"
        )
    assert receiver.bodies[0]["severity"] == "info"


def test_without_a_webhook_alerts_are_off():
    assert isinstance(build_alerts(load_settings(environ={}).settings), NullAlerts)
