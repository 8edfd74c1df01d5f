"""Database errors are classified by SQLSTATE and SQLite result code, each provoked for real
on PostgreSQL and SQLite (a constructed exception only where provoking it is not cheap)."""

from __future__ import annotations

import sqlite3
import threading
import uuid

import psycopg
import pytest
import sqlalchemy as sa

from marketdata.config import load_settings
from marketdata.errors import (
    DatabaseBusyError,
    DatabaseConfigError,
    DatabaseDataError,
    DatabaseUnavailableError,
    ExitCode,
)
from marketdata.storage.dberrors import FaultKind, classify
from marketdata.storage.engine import connect, create_engine, resolve_target


def engine_for(url: str, **settings):
    loaded = load_settings({"database_url": url, **settings}, environ={}).settings
    target = resolve_target(loaded)
    return create_engine(loaded, target), target


def raw_pg(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True, connect_timeout=3)


def provoke(engine, target, sql, params=None):
    """Run `sql` and return the classification of the error it raises."""
    with pytest.raises(Exception) as caught, engine.connect() as conn:
        conn.execute(sa.text(sql), params or {})
    return classify(caught.value, target)


# ---------------------------------------------------------------------------- PostgreSQL


def test_a_serialization_failure_is_transient_busy(pg_database):
    engine, target = engine_for(pg_database)
    with raw_pg(pg_database) as other:
        other.execute("CREATE TABLE IF NOT EXISTS probe_ser (id int primary key, v int)")
        other.execute("INSERT INTO probe_ser VALUES (1, 0) ON CONFLICT DO NOTHING")
    try:
        with pytest.raises(sa.exc.DBAPIError) as caught, engine.connect() as conn:
            conn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            conn.execute(sa.text("SELECT v FROM probe_ser WHERE id = 1")).scalar()
            with raw_pg(pg_database) as other:
                other.execute("UPDATE probe_ser SET v = v + 1 WHERE id = 1")
            conn.execute(sa.text("UPDATE probe_ser SET v = v + 1 WHERE id = 1"))
        fault = classify(caught.value, target)
        assert (fault.kind, fault.code) == (FaultKind.TRANSIENT, "40001")
        assert isinstance(fault.error, DatabaseBusyError) and not fault.server_gone
        assert fault.error.exit_code == ExitCode.TEMPFAIL
    finally:
        with raw_pg(pg_database) as other:
            other.execute("DROP TABLE probe_ser")
        engine.dispose()


def test_a_deadlock_is_transient_busy(pg_database):
    engine, target = engine_for(pg_database)
    with raw_pg(pg_database) as setup:
        setup.execute("CREATE TABLE IF NOT EXISTS probe_dl (id int primary key)")
        setup.execute("INSERT INTO probe_dl VALUES (1), (2) ON CONFLICT DO NOTHING")
    both_locked = threading.Barrier(2, timeout=10)
    errors: list[BaseException] = []

    def worker(first: int, second: int) -> None:
        try:
            with engine.begin() as conn:
                conn.execute(
                    sa.text("SELECT 1 FROM probe_dl WHERE id = :i FOR UPDATE"), {"i": first}
                )
                both_locked.wait()
                conn.execute(
                    sa.text("SELECT 1 FROM probe_dl WHERE id = :i FOR UPDATE"), {"i": second}
                )
        except sa.exc.DBAPIError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=a) for a in ((1, 2), (2, 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    try:
        assert len(errors) == 1  # PostgreSQL breaks the cycle by failing one of the two
        fault = classify(errors[0], target)
        assert (fault.kind, fault.code) == (FaultKind.TRANSIENT, "40P01")
        assert isinstance(fault.error, DatabaseBusyError)
    finally:
        with raw_pg(pg_database) as other:
            other.execute("DROP TABLE probe_dl")
        engine.dispose()


def test_our_statement_timeout_is_set_from_the_settings_and_transient(pg_database):
    engine, target = engine_for(pg_database, db_statement_timeout=0.05)
    fault = provoke(engine, target, "SELECT pg_sleep(2)")
    engine.dispose()
    assert (fault.kind, fault.code) == (FaultKind.TRANSIENT, "57014")
    assert "statement timeout" in fault.reason


def test_a_statement_cancelled_by_someone_else_is_not_retried(pg_database):
    engine, target = engine_for(pg_database)
    with engine.connect() as conn:
        pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()

        def cancel() -> None:
            with raw_pg(pg_database) as other:
                other.execute("SELECT pg_cancel_backend(%s)", (pid,))

        timer = threading.Timer(0.3, cancel)
        timer.start()
        with pytest.raises(sa.exc.DBAPIError) as caught:
            conn.execute(sa.text("SELECT pg_sleep(5)"))
        timer.join()
    engine.dispose()
    fault = classify(caught.value, target)
    assert (fault.kind, fault.code) == (FaultKind.DATA, "57014")


def test_our_lock_timeout_is_set_from_the_settings_and_transient(pg_database):
    engine, target = engine_for(pg_database, db_lock_timeout=0.1)
    key = int(uuid.uuid4().int % 2**62)
    with raw_pg(pg_database) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (key,))
        fault = provoke(engine, target, "SELECT pg_advisory_lock(:k)", {"k": key})
    engine.dispose()
    assert (fault.kind, fault.code) == (FaultKind.TRANSIENT, "55P03")
    assert isinstance(fault.error, DatabaseBusyError)


def test_idle_in_transaction_timeout_ends_the_session_and_is_transient(pg_database):
    engine, target = engine_for(pg_database, db_idle_in_transaction_timeout=0.2)
    with pytest.raises(sa.exc.DBAPIError) as caught, engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))  # opens a transaction, then sits idle in it
        threading.Event().wait(0.6)
        conn.execute(sa.text("SELECT 1"))
    engine.dispose()
    fault = classify(caught.value, target)
    assert fault.kind is FaultKind.TRANSIENT and fault.server_gone


def test_a_terminated_backend_is_transient_and_the_server_gone(pg_database):
    engine, target = engine_for(pg_database)
    with pytest.raises(sa.exc.DBAPIError) as caught, engine.connect() as conn:
        pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        with raw_pg(pg_database) as killer:
            killer.execute("SELECT pg_terminate_backend(%s)", (pid,))
        conn.execute(sa.text("SELECT 1"))
    engine.dispose()
    fault = classify(caught.value, target)
    assert fault.kind is FaultKind.TRANSIENT and fault.server_gone
    assert isinstance(fault.error, DatabaseUnavailableError)
    assert fault.error.exit_code == ExitCode.TEMPFAIL


def test_a_refused_connection_is_transient_and_the_server_gone():
    engine, target = engine_for("postgresql://u@127.0.0.1:1/x")
    with pytest.raises(DatabaseUnavailableError, match=r"127\.0\.0\.1:1") as caught:  # noqa: SIM117
        with connect(engine, target):
            pass
    engine.dispose()
    assert classify(caught.value, target).kind is FaultKind.TRANSIENT


def test_a_missing_database_is_configuration_naming_it_and_how_to_create_it(pg_server_url):
    url = sa.engine.make_url(pg_server_url).set(database="md_missing_db_x")
    engine, target = engine_for(url.render_as_string(hide_password=False))
    with pytest.raises(DatabaseConfigError) as caught, connect(engine, target):
        pass
    engine.dispose()
    line = caught.value.one_line()
    assert caught.value.exit_code == ExitCode.USAGE
    assert 'database "md_missing_db_x" does not exist' in line
    assert "createdb" in line and "md_missing_db_x" in line
    assert "running" not in line


def test_a_missing_role_is_configuration(pg_server_url):
    url = sa.engine.make_url(pg_server_url).set(username="md_no_such_role_x")
    engine, target = engine_for(url.render_as_string(hide_password=False))
    with pytest.raises(DatabaseConfigError, match="md_no_such_role_x") as caught:  # noqa: SIM117
        with connect(engine, target):
            pass
    engine.dispose()
    assert classify(caught.value, target).kind is FaultKind.CONFIGURATION
    assert "DATABASE_URL" in caught.value.one_line()


def test_insufficient_privilege_is_configuration(pg_database):
    role = f"md_noprivs_{uuid.uuid4().hex[:8]}"
    with raw_pg(pg_database) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
    try:
        url = sa.engine.make_url(pg_database).set(username=role, password=None)
        engine, target = engine_for(url.render_as_string(hide_password=False))
        fault = provoke(engine, target, "SELECT count(*) FROM candles")
        engine.dispose()
        assert (fault.kind, fault.code) == (FaultKind.CONFIGURATION, "42501")
        assert fault.error.exit_code == ExitCode.USAGE
    finally:
        with raw_pg(pg_database) as admin:
            admin.execute(f"DROP ROLE {role}")


def test_a_missing_table_on_postgresql_is_configuration_asking_for_an_upgrade(pg_database):
    engine, target = engine_for(pg_database)
    fault = provoke(engine, target, "SELECT * FROM no_such_table_here")
    engine.dispose()
    assert (fault.kind, fault.code) == (FaultKind.CONFIGURATION, "42P01")
    assert "db upgrade" in fault.error.one_line()


@pytest.mark.parametrize(
    ("sql", "code"),
    [
        ("INSERT INTO markets (symbol) VALUES (NULL)", "23502"),
        ("SELECT 1 / 0", "22012"),
        ("SELECT 'abc'::int", "22P02"),
    ],
)
def test_integrity_and_data_errors_fail_the_pair_only(pg_database, sql, code):
    engine, target = engine_for(pg_database)
    fault = provoke(engine, target, sql)
    engine.dispose()
    assert (fault.kind, fault.code) == (FaultKind.DATA, code)
    assert isinstance(fault.error, DatabaseDataError)
    assert fault.error.exit_code == ExitCode.FAILURE


def test_a_full_disk_is_data_with_a_hint():
    # a full disk is not cheap to provoke: psycopg's own exception class for 53100
    target = resolve_target(
        load_settings({"database_url": "postgresql://u@db.example:5432/x"}, environ={}).settings
    )
    fault = classify(psycopg.errors.DiskFull("could not extend file"), target)
    assert (fault.kind, fault.code) == (FaultKind.DATA, "53100")
    assert "disk space" in fault.error.one_line()


def test_a_pool_timeout_is_data_not_an_escaping_exception(pg_database):
    loaded = load_settings({"database_url": pg_database}, environ={}).settings
    target = resolve_target(loaded)
    engine = sa.create_engine(target.url, pool_size=1, max_overflow=0, pool_timeout=0.1)
    with engine.connect(), pytest.raises(DatabaseDataError, match="pool") as caught:  # noqa: SIM117
        with connect(engine, target):
            pass
    engine.dispose()
    assert "INGESTION_CONCURRENCY" in caught.value.one_line()


def test_a_raw_driver_error_from_copy_is_classified_too(pg_database):
    engine, target = engine_for(pg_database)
    with (
        pytest.raises(DatabaseDataError, match=r"22P04|malformed|COPY"),
        connect(engine, target) as conn,
    ):
        raw = conn.connection.driver_connection
        with (
            raw.cursor() as cur,
            cur.copy("COPY markets (symbol) FROM STDIN (FORMAT BINARY)") as cp,
        ):
            cp.write(b"not a binary copy stream")
    engine.dispose()


# -------------------------------------------------------------------------------- SQLite


def test_sqlite_busy_past_the_busy_timeout_is_transient(tmp_path):
    path = tmp_path / "busy.sqlite3"
    engine, target = engine_for(f"sqlite:///{path}", db_busy_timeout=0.05)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (x int)"))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        fault = provoke(engine, target, "INSERT INTO t VALUES (1)")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        engine.dispose()
    assert (fault.kind, fault.code) == (FaultKind.TRANSIENT, "SQLITE_BUSY")
    assert isinstance(fault.error, DatabaseBusyError)


def test_sqlite_no_such_table_is_configuration(tmp_path):
    engine, target = engine_for(f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    fault = provoke(engine, target, "SELECT * FROM candles")
    engine.dispose()
    assert fault.kind is FaultKind.CONFIGURATION
    assert "db upgrade" in fault.error.one_line()


def test_sqlite_a_missing_directory_is_configuration_not_unavailable(tmp_path):
    engine, target = engine_for(f"sqlite:///{tmp_path / 'nowhere' / 'x.sqlite3'}")
    with pytest.raises(DatabaseConfigError, match="SQLITE_CANTOPEN") as caught:  # noqa: SIM117
        with connect(engine, target):
            pass
    engine.dispose()
    assert caught.value.exit_code == ExitCode.USAGE
    assert not (tmp_path / "nowhere").exists()


def test_sqlite_a_read_only_database_is_configuration(tmp_path):
    path = tmp_path / "ro.sqlite3"
    sqlite3.connect(path).execute("CREATE TABLE t (x int)").connection.close()
    engine, target = engine_for(f"sqlite:///{path}")
    read_only = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    with pytest.raises(sqlite3.Error) as caught:
        read_only.execute("INSERT INTO t VALUES (1)")
    read_only.close()
    fault = classify(caught.value, target)
    engine.dispose()
    assert (fault.kind, fault.code) == (FaultKind.CONFIGURATION, "SQLITE_READONLY")


def test_sqlite_a_constraint_violation_is_data(tmp_path):
    path = tmp_path / "c.sqlite3"
    engine, target = engine_for(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (x int primary key)"))
    fault = provoke(engine, target, "INSERT INTO t VALUES (1), (1)")
    engine.dispose()
    assert fault.kind is FaultKind.DATA and fault.code.startswith("SQLITE_CONSTRAINT")


def test_the_sqlite_pool_fits_the_configured_concurrency(tmp_path):
    engine, _ = engine_for(f"sqlite:///{tmp_path / 'p.sqlite3'}", ingestion_concurrency=40)
    connections = [engine.connect() for _ in range(42)]  # every worker, the run, a reader
    for conn in connections:
        conn.close()
    engine.dispose()
