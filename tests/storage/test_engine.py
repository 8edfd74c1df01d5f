"""Which database a DATABASE_URL means, and how an unreachable one is reported."""

from __future__ import annotations

import pytest

from marketdata.config import load_settings
from marketdata.errors import ConfigError, DatabaseUnavailableError, ExitCode
from marketdata.storage.engine import connect, create_engine, resolve_target


def target_for(url: str | None):
    return resolve_target(load_settings({"database_url": url}, environ={}).settings)


def test_no_database_url_means_the_embedded_sqlite_file_in_the_data_directory(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    target = target_for(None)
    assert target.embedded and target.dialect == "sqlite"
    assert target.shown == str(tmp_path / "marketdata" / "marketdata.sqlite3")


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+psycopg"])
def test_libpq_style_urls_use_psycopg(scheme):
    target = target_for(f"{scheme}://md:pw@db.example:6543/market")
    assert target.url.drivername == "postgresql+psycopg"
    assert target.host_port == "db.example:6543"
    assert target.shown == f"{scheme}://md:***@db.example:6543/market"


@pytest.mark.parametrize("url", ["not a url", "mysql://x/y", "postgresql://u:pw@h:port/db"])
def test_malformed_or_foreign_urls_are_usage_errors_naming_the_variable(url):
    with pytest.raises(ConfigError, match="DATABASE_URL") as caught:
        target_for(url)
    assert caught.value.exit_code == ExitCode.USAGE
    assert "pw@" not in caught.value.one_line()


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("sqlite://", "names no SQLite file"),
        ("sqlite:///:memory:", "names no SQLite file"),
        ("postgresql://", "names no PostgreSQL host"),
        ("postgresql:///market", "names no PostgreSQL host"),
        ("postgresql://md:pw@db.example:5432", "names no database"),
        ("postgres://md:pw@db.example:5432/", "names no database"),
    ],
)
def test_urls_that_leave_out_the_file_host_or_database_are_usage_errors(url, fragment):
    with pytest.raises(ConfigError, match=fragment) as caught:
        target_for(url)
    assert caught.value.exit_code == ExitCode.USAGE
    assert "pw" not in caught.value.one_line()


def test_a_unix_socket_url_names_its_host_in_the_query():
    target = target_for("postgresql://md@/market?host=/run/postgresql")
    assert target.url.database == "market"


def test_an_unreachable_server_is_temporarily_unavailable_naming_host_and_port():
    settings = load_settings({"database_url": "postgresql://u@127.0.0.1:1/x"}, environ={}).settings
    target = resolve_target(settings)
    engine = create_engine(settings, target)
    with (
        pytest.raises(DatabaseUnavailableError, match=r"127\.0\.0\.1:1") as caught,
        connect(engine, target),
    ):
        pass
    assert caught.value.exit_code == ExitCode.TEMPFAIL
    engine.dispose()


def test_every_postgresql_wait_is_bounded_by_the_settings(pg_database):
    import sqlalchemy as sa

    settings = load_settings(
        {"database_url": pg_database, "db_lock_timeout": 7, "db_keepalives_idle": 45},
        environ={},
    ).settings
    target = resolve_target(settings)
    engine = create_engine(settings, target)
    with connect(engine, target) as conn:
        shown = {
            name: conn.execute(sa.text(f"SHOW {name}")).scalar()
            for name in ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")
        }
        libpq = conn.connection.driver_connection.info.get_parameters()
    engine.dispose()
    assert shown == {
        "statement_timeout": "5min",
        "lock_timeout": "7s",
        "idle_in_transaction_session_timeout": "5min",
    }
    assert libpq["keepalives"] == "1" and libpq["keepalives_idle"] == "45"
    assert libpq["connect_timeout"] == "5"
