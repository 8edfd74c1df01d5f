"""Models and migrations agree, and the migrations run both ways, on both dialects."""

from __future__ import annotations

import itertools

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
