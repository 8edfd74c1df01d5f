"""Webhook alerts over a real HTTP server: what a run sends, thresholds, a webhook that fails,
one alert per run from one client off the hot path, staleness, an unreachable database."""

from __future__ import annotations

import json
import socket
import threading
from datetime import UTC, datetime, timedelta

import pytest

from marketdata.config import load_settings
from marketdata.context import AppContext, build_alerts, build_metrics
from marketdata.domain import Interval
from marketdata.errors import ConfigError, DatabaseUnavailableError, InputError, MarketdataError
from marketdata.observability.alerts import Alert, NullAlerts, WebhookAlerts, send_test_alert
from marketdata.pipeline import IngestRequest, run_ingest
from tests.fakes.coinbase import FakeCoinbase
from tests.fakes.server import Reply, serve
from tests.fakes.tcpproxy import TcpProxy
from tests.test_metrics import listen, received

NOW = datetime(2024, 4, 10, 12, tzinfo=UTC)
PAYLOAD_FIELDS = {
    "severity",
    "title",
    "detail",
    "text",
    "run_id",
    "trigger",
    "providers",
    "symbols",
    "error",
    "host",
    "time",
}


class Receiver:
    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.status = status
        self.delay = delay
        self.bodies: list[dict] = []
        self.peers: list[tuple[str, int]] = []

    def __call__(self, request):
        self.bodies.append(json.loads(request.body))
        self.peers.append(request.peer)
        return Reply(self.status, "ok", delay=self.delay)


def app_for(database_url: str, clock: datetime = NOW, **values) -> AppContext:
    loaded = load_settings(
        {"database_url": database_url, "http_retry_attempts": 1, **values}, environ={}
    )
    app = AppContext(
        loaded, alerts=build_alerts(loaded.settings), metrics=build_metrics(loaded.settings)
    )
    app.clock = lambda: clock
    return app


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """A migrated SQLite file: the alert logic is the same on both backends."""
    from tests.conftest import _migrate

    url = f"sqlite:///{tmp_path / 'alerts.sqlite3'}"
    _migrate(url)
    return url


@pytest.fixture
def text_logs():
    """Logs on (captured) stderr for this test only."""
    from loguru import logger

    from marketdata.observability.logging import configure_logging

    configure_logging("INFO", "text")
    yield
    logger.remove()


def always(status: int):
    return lambda request: Reply(status, "down")


def test_a_failed_run_posts_an_error_alert_with_every_payload_field(database_url):
    receiver = Receiver()
    down = FakeCoinbase(fail_next=[Reply(503, "down")] * 20)
    with serve(receiver) as hook, serve(down) as coinbase:
        app = app_for(
            database_url,
            alert_webhook_url=hook.url + "/services/T0K3N",
            coinbase_base_url=coinbase.url,
        )
        try:
            run_ingest(app, IngestRequest(symbols=["BTC-USD"], trigger="timer"))
        finally:
            app.close()
    [body] = receiver.bodies
    assert body.keys() >= PAYLOAD_FIELDS
    assert body["severity"] == "error"
    assert body["title"] == f"ingestion run {body['run_id']} failure: 1 of 1 pairs failed"
    assert "BTC-USD 1d: coinbase answered HTTP 503" in body["detail"]
    assert body["text"].startswith("[error] ingestion run")
    assert body["trigger"] == "timer"
    assert body["providers"] == ["coinbase"]
    assert body["symbols"] == ["BTC-USD"]
    assert "HTTP 503" in body["error"]
    assert body["host"] == socket.gethostname()
    assert datetime.fromisoformat(body["time"].replace("Z", "+00:00")).tzinfo is not None


def test_a_successful_run_sends_nothing_and_the_threshold_filters(sqlite_url):
    receiver = Receiver()
    with serve(receiver) as hook:
        app = app_for(sqlite_url, alert_webhook_url=hook.url, ingestion_provider="synthetic")
        try:
            run_ingest(app, IngestRequest(symbols=["BTC-USD"]))
        finally:
            app.close()
        sink = WebhookAlerts(hook.url, "error")
        assert sink.send(Alert("warning", "t", "x")) is False
        assert sink.send(Alert("critical", "t", "x")) is True
        assert sink.send(Alert("critical", "t", "x")) is False  # the same alert, once
        sink.close()
    assert [b["severity"] for b in receiver.bodies] == ["critical"]


def test_a_webhook_that_fails_never_fails_the_run_nor_shows_its_token(sqlite_url, capfd, text_logs):
    receiver = Receiver(status=500)
    down = FakeCoinbase(fail_next=[Reply(503, "down")] * 20)
    with serve(receiver) as hook, serve(down) as coinbase:
        app = app_for(
            sqlite_url,
            alert_webhook_url=hook.url + "/hooks/S3CRETT0KEN",
            coinbase_base_url=coinbase.url,
        )
        try:
            result = run_ingest(app, IngestRequest(symbols=["BTC-USD"]))
        finally:
            app.close()
    assert result.status.value == "failure"
    # a 500 is retried (stamina's testing mode: 3 attempts, no waiting), then logged
    assert len(receiver.bodies) == 3
    err = capfd.readouterr().err
    assert "alert not delivered" in err and "HTTP 500" in err
    assert "S3CRETT0KEN" not in err


def test_a_webhook_that_times_out_is_retried_then_given_up_without_blocking_the_sender(
    capfd, text_logs
):
    receiver = Receiver(delay=1.0)
    with serve(receiver) as hook:
        sink = WebhookAlerts(hook.url + "/hooks/T1MEOUTT0KEN", "info", timeout=0.2)
        assert sink.send(Alert("error", "slow", "x"))
        assert sink.flush(timeout=10)
        # skipped for a while after it could not be reached: no second round of timeouts
        sink.send(Alert("error", "second", "x"))
        sink.close()
    assert [b["title"] for b in receiver.bodies] == ["slow"] * 3
    err = capfd.readouterr().err
    assert "alert not delivered" in err and "ReadTimeout" in err
    assert "could not be reached a moment ago" in err
    assert "T1MEOUTT0KEN" not in err


def test_a_4xx_answer_is_not_retried():
    receiver = Receiver(status=404)
    with serve(receiver) as hook:
        sink = WebhookAlerts(hook.url, "info")
        assert sink.deliver(Alert("error", "t", "x")) is False
        sink.close()
    assert len(receiver.bodies) == 1


def test_sending_only_queues_while_the_webhook_is_still_answering():
    release = threading.Event()
    got = []

    def slow(request):
        got.append(request)
        release.wait(10)
        return Reply(200, "ok")

    with serve(slow) as hook:
        sink = WebhookAlerts(hook.url, "info")
        for n in range(5):
            assert sink.send(Alert("error", f"alert {n}", "x"))
        assert not release.is_set()  # every send returned while the first POST hangs
        release.set()
        assert sink.flush(timeout=10)
        sink.close()
    assert len(got) == 5


def test_an_outage_across_many_pairs_sends_one_alert_per_run_from_one_client(sqlite_url):
    symbols = [f"S{i:03d}-USD" for i in range(60)]
    receiver = Receiver()
    with serve(receiver) as hook, serve(always(503)) as coinbase:
        app = app_for(
            sqlite_url,
            alert_webhook_url=hook.url,
            coinbase_base_url=coinbase.url,
            ingestion_provider="coinbase,synthetic",
            ingestion_lookback_days=2,
            ingestion_concurrency=8,
        )
        try:
            result = run_ingest(app, IngestRequest(symbols=symbols))
        finally:
            app.close()
    assert result.status.value == "success"
    [body] = receiver.bodies
    assert body["severity"] == "warning"
    assert body["title"] == "60 pairs served by fallback provider synthetic"
    assert body["detail"].endswith("... and 50 more")
    assert len(body["symbols"]) == 50 and body["symbols_total"] == 60
    assert len(set(receiver.peers)) == 1


def test_an_outage_failing_every_pair_sends_one_error_alert(sqlite_url):
    symbols = [f"S{i:03d}-USD" for i in range(30)]
    receiver = Receiver()
    with serve(receiver) as hook, serve(always(503)) as coinbase:
        app = app_for(sqlite_url, alert_webhook_url=hook.url, coinbase_base_url=coinbase.url)
        try:
            run_ingest(app, IngestRequest(symbols=symbols))
        finally:
            app.close()
    assert [b["title"].split(":")[1] for b in receiver.bodies] == [" 30 of 30 pairs failed"]


def test_a_market_older_than_alert_stale_after_sends_an_error_alert_and_a_gauge(database_url):
    receiver = Receiver()
    later = NOW + timedelta(hours=5)
    with serve(receiver) as hook, serve(always(503)) as coinbase, listen() as udp:
        settings = {
            "alert_webhook_url": hook.url,
            "alert_stale_after": "2h",
            "ingestion_lookback_days": 2,
            "statsd_host": "127.0.0.1",
            "statsd_port": udp.getsockname()[1],
        }
        first = app_for(database_url, ingestion_provider="synthetic", **settings)
        request = IngestRequest(symbols=["BTC-USD", "^GSPC"], intervals=[Interval.H1])
        try:
            run_ingest(first, request)
        finally:
            first.close()
        assert receiver.bodies == []  # fresh after the first run
        second = app_for(database_url, clock=later, coinbase_base_url=coinbase.url, **settings)
        try:
            run_ingest(second, request)
        finally:
            second.close()
        udp.settimeout(0.5)
        lines = received(udp)
    stale = {b["title"]: b for b in receiver.bodies if "stale" in b["title"]}
    assert set(stale) == {"BTC-USD 1h is stale", "^GSPC 1h is stale"}
    body = stale["BTC-USD 1h is stale"]
    assert body["severity"] == "error"
    assert body["symbols"] == ["BTC-USD"]
    assert "newest candle 2024-04-10T12:00:00Z, 5h old" in body["detail"]
    assert "due 3h ago" in body["detail"]
    assert body["run_id"] is not None and body["trigger"] == "manual"
    # 5 h after the last candle at 12:00, the 13:00 bar was due at 14:00: 3 h = 10,800 s
    assert "marketdata.market.staleness_seconds.BTC-USD.1h:0|g" in lines
    assert "marketdata.market.staleness_seconds.BTC-USD.1h:10800|g" in lines
    assert "marketdata.market.staleness_seconds._GSPC.1h:10800|g" in lines


def test_many_stale_markets_send_a_bounded_number_of_alerts(sqlite_url):
    symbols = [f"S{i:03d}-USD" for i in range(15)]
    receiver = Receiver()
    with serve(receiver) as hook, serve(always(503)) as coinbase:
        first = app_for(sqlite_url, ingestion_provider="synthetic", ingestion_lookback_days=1)
        try:
            run_ingest(first, IngestRequest(symbols=symbols))
        finally:
            first.close()
        second = app_for(
            sqlite_url,
            clock=NOW + timedelta(days=3),
            alert_webhook_url=hook.url,
            coinbase_base_url=coinbase.url,
        )
        try:
            run_ingest(second, IngestRequest(symbols=symbols))
        finally:
            second.close()
    titles = [b["title"] for b in receiver.bodies]
    assert len([t for t in titles if t.endswith(" is stale")]) == 10
    assert "5 more markets are stale" in titles
    assert len(titles) == 12  # plus the run's own failure alert


def test_an_unreachable_database_sends_a_critical_alert_with_the_password_masked():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    receiver = Receiver()
    with serve(receiver) as hook:
        app = app_for(
            f"postgresql://marketdata:PlantedPa55word@127.0.0.1:{port}/marketdata",
            alert_webhook_url=hook.url + "/hooks/PLANTEDT0KEN",
            ingestion_provider="coinbase,kraken",
            db_connect_timeout=1,
        )
        try:
            with pytest.raises(DatabaseUnavailableError):
                run_ingest(app, IngestRequest(symbols=["BTC-USD", "ETH-USD"], trigger="timer"))
        finally:
            app.close()
    [body] = receiver.bodies
    assert body["severity"] == "critical"
    assert body["title"] == "database unreachable: ingestion run could not start"
    assert f"127.0.0.1:{port}" in body["error"]
    assert body["trigger"] == "timer"
    assert body["providers"] == ["coinbase", "kraken"]
    assert body["symbols"] == ["BTC-USD", "ETH-USD"]
    assert body["run_id"] is None
    assert "PlantedPa55word" not in json.dumps(body)
    assert "PLANTEDT0KEN" not in json.dumps(body)


@pytest.mark.parametrize(
    "url", ["ftp://hooks.example/T0K3N", "hooks.example/services/T0K3N", "file:///etc/hook"]
)
def test_only_http_and_https_webhook_urls_are_accepted(url):
    with pytest.raises(ConfigError) as caught:
        load_settings({"alert_webhook_url": url}, environ={})
    assert caught.value.exit_code == 2
    assert "http:// or https://" in caught.value.one_line()
    assert "T0K3N" not in caught.value.one_line()


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


def test_a_database_lost_during_a_run_sends_a_critical_alert_naming_the_run(pg_database):
    from sqlalchemy.engine import make_url

    from tests.conftest import _truncate

    # nothing stored: the run must ask the provider, where the database goes away (a pair
    # stored by an earlier test of the session left nothing to fetch, and nothing was cut)
    _truncate(pg_database)
    url = make_url(pg_database)
    proxy = TcpProxy(url.port or 5432)
    receiver = Receiver()

    def cut_then_fail(request):
        proxy.close()  # the database goes away while the provider is being asked
        return Reply(503, "down")

    with serve(receiver) as hook, serve(cut_then_fail) as coinbase:
        app = app_for(
            url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False),
            alert_webhook_url=hook.url,
            coinbase_base_url=coinbase.url,
            db_connect_timeout=1,
        )
        try:
            with pytest.raises(DatabaseUnavailableError):
                run_ingest(app, IngestRequest(symbols=["BTC-USD"], trigger="timer"))
        finally:
            app.close()
    critical = [b for b in receiver.bodies if b["severity"] == "critical"]
    [body] = critical
    assert (
        body["title"]
        == f"database unreachable: ingestion run {body['run_id']} could not be recorded"
    )
    assert body["run_id"] is not None and body["trigger"] == "timer"
    assert f"127.0.0.1:{proxy.port}" in body["error"]
