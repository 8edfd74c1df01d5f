"""Models and migrations agree, and the migrations run both ways, on both dialects."""

from __future__ import annotations

import itertools

import pytest

from marketdata.storage import migrate
from marketdata.storage.engine import connect


def test_models_and_migrations_agree_after_upgrade(app_factory):
    app = app_factory()
    with connect(app.engine(migrate=False), app.target) as conn:
        assert migrate.current_revision(conn) == migrate.head_revision()
        assert migrate.drift(conn) == []


def test_upgrade_downgrade_base_upgrade_round_trip(app_factory):
    app = app_factory()
    engine, target = app.engine(migrate=False), app.target
    migrate.downgrade(engine, target, "base")
    with connect(engine, target) as conn:
        assert migrate.current_revision(conn) is None
        assert "candles" not in conn.dialect.get_table_names(conn)
    migrate.upgrade(engine, target)
    with connect(engine, target) as conn:
        assert migrate.current_revision(conn) == migrate.head_revision()
        assert migrate.drift(conn) == []


def test_every_revision_is_in_one_linear_history():
    revisions = migrate.history()
    assert revisions[0].is_head and revisions[-1].down_revision is None
    for newer, older in itertools.pairwise(revisions):
        assert newer.down_revision == older.revision


def test_the_schema_head_constant_is_the_newest_migration():
    assert migrate.head_revision() == migrate.SCHEMA_HEAD


def test_the_quick_revision_read_agrees_with_alembic(app_factory):
    app = app_factory()
    with connect(app.engine(migrate=False), app.target) as conn:
        assert migrate.stored_revision(conn) == migrate.current_revision(conn)
    migrate.downgrade(app.engine(migrate=False), app.target, "base")
    try:
        with connect(app.engine(migrate=False), app.target) as conn:
            assert migrate.stored_revision(conn) is None
    finally:  # the PostgreSQL database is the session's: leave it at head
        migrate.upgrade(app.engine(migrate=False), app.target)


def test_a_database_from_a_newer_version_is_refused_not_migrated(tmp_path):
    import sqlalchemy as sa

    from marketdata.config import load_settings
    from marketdata.errors import SchemaError
    from marketdata.storage.engine import create_engine, resolve_target

    url = f"sqlite:///{tmp_path / 'newer.sqlite3'}"
    settings = load_settings({"database_url": url}, environ={}).settings
    target = resolve_target(settings)
    engine = create_engine(settings, target)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32))"))
        conn.execute(sa.text("INSERT INTO alembic_version VALUES ('9999')"))
    try:
        with pytest.raises(SchemaError, match="newer version"):
            migrate.ensure_schema(engine, target)
    finally:
        engine.dispose()


def test_two_upgrades_of_a_new_postgresql_database_at_once_both_succeed(pg_server_url):
    import threading
    import uuid

    import sqlalchemy as sa

    from marketdata.config import load_settings
    from marketdata.storage.engine import create_engine, resolve_target

    server = sa.engine.make_url(pg_server_url).set(drivername="postgresql+psycopg")
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    name = f"marketdata_race_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    settings = load_settings({"database_url": url}, environ={}).settings
    target = resolve_target(settings)
    engines = [create_engine(settings, target) for _ in range(2)]
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def upgrade(engine):
        start.wait()
        try:
            migrate.upgrade(engine, target)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=upgrade, args=(e,)) for e in engines]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert errors == []
        with connect(engines[0], target) as conn:
            assert migrate.stored_revision(conn) == migrate.SCHEMA_HEAD
    finally:
        for engine in engines:
            engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_the_embedded_file_downgraded_to_base_is_not_set_up_again_behind_the_users_back():
    from marketdata.config import load_settings
    from marketdata.errors import SchemaError
    from marketdata.storage.engine import create_engine, resolve_target

    settings = load_settings({}, environ={}).settings
    target = resolve_target(settings)
    assert target.embedded
    engine = create_engine(settings, target)
    try:
        migrate.ensure_schema(engine, target)  # new: created
        migrate.downgrade(engine, target, "base")
        with pytest.raises(SchemaError, match="downgraded to base") as caught:
            migrate.ensure_schema(engine, target)
        assert "marketdata db upgrade" in caught.value.one_line()
        migrate.upgrade(engine, target)
        migrate.ensure_schema(engine, target)
        with connect(engine, target) as conn:
            assert migrate.stored_revision(conn) == migrate.SCHEMA_HEAD
    finally:
        engine.dispose()


def test_a_migration_held_up_by_another_process_too_long_is_busy(tmp_path, monkeypatch):
    from filelock import FileLock

    from marketdata.config import load_settings
    from marketdata.errors import DatabaseBusyError, ExitCode
    from marketdata.storage.engine import create_engine, resolve_target

    path = tmp_path / "held.sqlite3"
    settings = load_settings({"database_url": f"sqlite:///{path}"}, environ={}).settings
    target = resolve_target(settings)
    engine = create_engine(settings, target)
    monkeypatch.setattr(migrate, "MIGRATION_LOCK_TIMEOUT", 0.2)
    held = FileLock(f"{path}.migrate.lock", thread_local=False)
    with held, pytest.raises(DatabaseBusyError, match="another process") as caught:
        migrate.upgrade(engine, target)
    engine.dispose()
    assert caught.value.exit_code == ExitCode.TEMPFAIL
    assert not path.exists()
