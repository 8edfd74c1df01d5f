"""TLS is always verified (a CA bundle may be given, never switched off) and an env file that
holds secrets and that every user can read is warned about."""

from __future__ import annotations

import json
import os

import pytest
import trustme

from marketdata.config import Settings, load_settings
from marketdata.domain import DAY, Interval, Window
from marketdata.errors import ConfigError, ProviderError, ProviderUnavailableError
from marketdata.observability.alerts import Alert, deliver_now
from marketdata.providers.base import ProviderContext
from marketdata.providers.coinbase import CoinbaseProvider
from tests.cli.helpers import run
from tests.fakes.coinbase import FakeCoinbase
from tests.fakes.market import walk
from tests.fakes.server import Reply
from tests.fakes.tls import serve_tls

TODAY = 1_712_707_200


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca, tmp_path):
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def coinbase_tls(ca):
    fake = FakeCoinbase()
    fake.add("BTC-USD", DAY, walk(TODAY - 9 * DAY, DAY, 10))
    with serve_tls(fake, ca) as server:
        yield server


def fetch(settings_factory, server, **overrides):
    settings = settings_factory(coinbase_base_url=server.url, **overrides)
    with ProviderContext(settings) as ctx:
        return CoinbaseProvider(ctx).fetch("BTC-USD", Interval.D1, Window(TODAY - 9 * DAY, TODAY))


def test_a_certificate_from_an_unknown_ca_is_refused_once_with_what_to_do(
    settings_factory, coinbase_tls
):
    with pytest.raises(ProviderError) as raised:
        fetch(settings_factory, coinbase_tls)
    assert not isinstance(raised.value, ProviderUnavailableError)  # not retried: futile
    line = raised.value.one_line()
    assert "presented a certificate that is not trusted" in line
    assert "certificate verify failed" in line or "unable to get local issuer" in line
    assert "HTTP_CA_BUNDLE" in line
    assert coinbase_tls.requests == []  # no request went over the untrusted connection


def test_the_ca_bundle_setting_makes_a_private_ca_trusted(settings_factory, coinbase_tls, ca_file):
    candles = fetch(settings_factory, coinbase_tls, http_ca_bundle=str(ca_file))
    assert len(candles) == 9
    assert len(coinbase_tls.requests) == 1


def test_a_bundle_of_another_ca_does_not_trust_the_server(settings_factory, coinbase_tls, tmp_path):
    other = tmp_path / "other.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    with pytest.raises(ProviderError, match="not trusted"):
        fetch(settings_factory, coinbase_tls, http_ca_bundle=str(other))


def test_a_ca_bundle_that_is_missing_or_not_pem_is_a_configuration_error(
    settings_factory, coinbase_tls, tmp_path
):
    with pytest.raises(ConfigError, match="HTTP_CA_BUNDLE"):
        load_settings({"http_ca_bundle": str(tmp_path / "nope.pem")}, environ={})
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="is not a readable PEM file") as raised:
        fetch(settings_factory, coinbase_tls, http_ca_bundle=str(garbage))
    assert raised.value.exit_code == 2


def test_no_setting_can_turn_certificate_verification_off():
    names = set(Settings.model_fields)
    assert {n for n in names if any(w in n for w in ("verify", "insecure", "ssl", "tls"))} == set()
    assert {n for n in names if "ca_" in n or n.endswith("_ca")} == {"http_ca_bundle"}
    loaded = load_settings(
        {}, environ={"HTTP_VERIFY": "false", "HTTP_INSECURE": "1", "SSL_VERIFY": "0"}
    )
    assert loaded.settings.http_ca_bundle is None


def test_webhook_alerts_verify_tls_too(ca, ca_file):
    received = []

    def hook(request):
        received.append(json.loads(request.body))
        return Reply(204)

    with serve_tls(hook, ca) as server:
        alert = Alert("error", "run 1 failure", "details", 1)
        assert deliver_now(server.url + "/hook", alert) is False
        assert received == []
        assert deliver_now(server.url + "/hook", alert, ca_bundle=ca_file) is True
    assert [a["title"] for a in received] == ["run 1 failure"]


# ------------------------------------------------------------------------ env file permissions


def env_file(tmp_path, text, mode):
    path = tmp_path / "marketdata.env"
    path.write_text(text)
    os.chmod(path, mode)
    return path


@pytest.mark.parametrize(
    "text",
    [
        "COINGECKO_API_KEY=cg-secret-key-123\n",
        "DATABASE_URL=postgresql://md:hunter2pass@db:5432/md\n",
        "ALERT_WEBHOOK_URL=https://hooks.example.com/services/T000/B000/XXXXXXXXXXXX\n",
    ],
    ids=["api key", "password in a URL", "webhook token"],
)
def test_an_env_file_with_a_secret_that_every_user_can_read_is_warned_about(tmp_path, text):
    name = text.split("=")[0]
    path = env_file(tmp_path, "LOG_LEVEL=INFO\n" + text, 0o644)
    [warning] = load_settings(env_file=path, environ={}).warnings
    assert str(path) in warning and name in warning and "chmod o-r" in warning
    assert "LOG_LEVEL" not in warning
    secret = text.split("=", 1)[1].strip()
    assert secret not in warning and "hunter2pass" not in warning


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        ("COINGECKO_API_KEY=cg-secret-key-123\n", 0o600),
        ("COINGECKO_API_KEY=cg-secret-key-123\n", 0o640),
        ("LOG_LEVEL=DEBUG\nDATABASE_URL=postgresql://md@db:5432/md\n", 0o644),
    ],
    ids=["owner only", "owner and group", "no secret"],
)
def test_an_env_file_others_cannot_read_or_without_secrets_is_not_warned_about(
    tmp_path, text, mode
):
    assert load_settings(env_file=env_file(tmp_path, text, mode), environ={}).warnings == ()


def test_a_secret_from_the_environment_does_not_blame_the_env_file(tmp_path):
    path = env_file(tmp_path, "LOG_LEVEL=INFO\n", 0o644)
    loaded = load_settings(env_file=path, environ={"STOOQ_API_KEY": "sk-123456"})
    assert loaded.warnings == ()


def test_the_command_line_prints_the_warning_once_on_stderr(tmp_path):
    path = env_file(tmp_path, "STOOQ_API_KEY=sk-stooq-999\n", 0o604)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    result = run(["--env-file", str(path), "config", "show", "--json"], env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "every user can read it" in line]
    assert len(warnings) == 1 and "STOOQ_API_KEY" in warnings[0]
    assert "sk-stooq-999" not in result.stderr + result.stdout
