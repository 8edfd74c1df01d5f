"""Settings precedence, validation errors and secret masking."""

from __future__ import annotations

import pytest

from marketdata.config import load_settings
from marketdata.errors import ConfigError, ExitCode
from marketdata.redact import mask_url, scrub


def test_flags_beat_environment_beat_env_file_beat_defaults(tmp_path):
    env_file = tmp_path / "marketdata.env"
    env_file.write_text("INGESTION_CONCURRENCY=3\nINGESTION_BATCH_SIZE=7\nSTATSD_PREFIX=fromfile\n")
    loaded = load_settings(
        {"ingestion_concurrency": 9},
        env_file=env_file,
        environ={"INGESTION_CONCURRENCY": "5", "INGESTION_BATCH_SIZE": "6"},
    )
    s, src = loaded.settings, loaded.sources
    assert (s.ingestion_concurrency, src["ingestion_concurrency"]) == (9, "flag")
    assert (s.ingestion_batch_size, src["ingestion_batch_size"]) == (6, "env")
    assert (s.statsd_prefix, src["statsd_prefix"]) == ("fromfile", f"file {env_file}")
    assert (s.ingestion_lookback_days, src["ingestion_lookback_days"]) == (90, "default")


def test_local_dotenv_is_read_from_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("INGESTION_SYMBOLS=BTC-USD, ETH-USD\n")
    loaded = load_settings(environ={})
    assert loaded.settings.ingestion_symbols == ["BTC-USD", "ETH-USD"]
    assert loaded.sources["ingestion_symbols"] == "file .env"


def test_a_missing_explicit_env_file_is_a_usage_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist") as caught:
        load_settings(env_file=tmp_path / "nope.env", environ={})
    assert caught.value.exit_code == ExitCode.USAGE


def test_a_bad_value_names_the_variable():
    with pytest.raises(ConfigError, match="INGESTION_CONCURRENCY=abc is invalid"):
        load_settings(environ={"INGESTION_CONCURRENCY": "abc"})


def test_a_bad_secret_value_is_shown_masked():
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"COINBASE_BASE_URL": "https://u:hunter22@x", "STATSD_PORT": "0"})
    assert "hunter22" not in caught.value.one_line()


def test_passwords_tokens_and_keys_are_masked_everywhere():
    loaded = load_settings(
        environ={
            "DATABASE_URL": "postgresql://md:s3cretpw@db.example:5432/md",
            "REDIS_URL": "redis://:r3dispass@cache:6379/0",
            "ALERT_WEBHOOK_URL": "https://hooks.slack.com/services/T000/B000/XXXXtokenXXXX",
            "STOOQ_API_KEY": "stooqkey123",
        }
    )
    s = loaded.settings
    assert s.masked("database_url") == "postgresql://md:***@db.example:5432/md"
    assert s.masked("redis_url") == "redis://:***@cache:6379/0"
    assert s.masked("alert_webhook_url") == "https://hooks.slack.com/***"
    assert s.masked("stooq_api_key") == "***"
    text = "failed at postgresql://md:s3cretpw@db token XXXXtokenXXXX key stooqkey123 r3dispass"
    cleaned = scrub(text)
    for secret in ("s3cretpw", "XXXXtokenXXXX", "stooqkey123", "r3dispass"):
        assert secret not in cleaned


def test_mask_url_hides_secret_query_values_only():
    assert mask_url("https://x/api?apikey=abc&s=aapl.us") == "https://x/api?apikey=***&s=aapl.us"


def test_urls_without_secrets_are_shown_exactly_as_written():
    assert (
        mask_url("sqlite:////var/lib/marketdata/x.sqlite3")
        == "sqlite:////var/lib/marketdata/x.sqlite3"
    )
    assert mask_url("https://api.kraken.com") == "https://api.kraken.com"


def test_alert_stale_after_is_a_duration_and_a_bad_one_names_the_variable():
    assert (
        load_settings({"alert_stale_after": "90m"}, environ={}).settings.stale_after_seconds == 5400
    )
    with pytest.raises(ConfigError, match=r"ALERT_STALE_AFTER=2 hours is invalid: .*90s, 15m"):
        load_settings({"alert_stale_after": "2 hours"}, environ={})


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("45s", 45), ("15m", 900), ("2h", 7200), ("90d", 7_776_000), (" 2W ", 1_209_600)],
)
def test_durations_are_a_whole_number_and_a_unit(raw, seconds):
    from marketdata.domain import parse_duration

    assert parse_duration(raw) == seconds


@pytest.mark.parametrize("raw", ["", "2", "h", "0h", "-1d", "1.5h", "2 hours", "1y"])
def test_a_malformed_duration_is_bad_input_naming_the_option(raw):
    from marketdata.domain import parse_duration
    from marketdata.errors import InputError

    with pytest.raises(InputError, match="--older-than") as caught:
        parse_duration(raw, name="--older-than")
    assert caught.value.exit_code == ExitCode.USAGE
