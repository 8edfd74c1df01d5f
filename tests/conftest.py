"""Shared fixtures: a clean environment, temporary directories, settings, real services."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import stamina

from marketdata.config import Settings, load_settings
from marketdata.context import AppContext
from marketdata.providers.base import ProviderContext

# Variables the tool reads; none of the developer's own values may leak into a test.
_OWN_VARIABLES = [name.upper() for name in Settings.model_fields]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under `make mutation`, the quickest tests run first (tests/mutation.py says why)."""
    from tests.mutation import quickest_first

    quickest_first(items)


@pytest.fixture(autouse=True)
def clean_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    for name in _OWN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / "state"))
    for name in ("INVOCATION_ID", "STATE_DIRECTORY", "CACHE_DIRECTORY", "LOGS_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.chdir(home)


@pytest.fixture(autouse=True)
def fast_retries() -> Iterator[None]:
    """stamina's testing mode: no sleeping between attempts, three attempts at most."""
    stamina.set_testing(True, attempts=3)
    yield
    stamina.set_testing(False)


@pytest.fixture
def settings_factory() -> Callable[..., Settings]:
    """Build Settings from keyword overrides, on top of an empty environment."""

    def build(**overrides: Any) -> Settings:
        values = {"http_retry_attempts": 2, "http_timeout": 5.0, **overrides}
        return load_settings(values, environ={}).settings

    return build


@pytest.fixture
def provider_context(
    settings_factory: Callable[..., Settings],
) -> Iterator[Callable[..., ProviderContext]]:
    """Build ProviderContexts from settings overrides; their HTTP clients are closed after."""
    built: list[ProviderContext] = []

    def build(**overrides: Any) -> ProviderContext:
        # waits return at once, as stamina's testing mode (tests that assert on waits set
        # their own recording `sleep`)
        ctx = ProviderContext(settings_factory(**overrides), sleep=_no_wait)
        built.append(ctx)
        return ctx

    yield build
    for ctx in built:
        ctx.close()


def _no_wait(_seconds: float) -> None:
    """A ProviderContext sleeper that does not sleep."""


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


# ------------------------------------------------------------------------------ real services

DEFAULT_TEST_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_TEST_REDIS_URL = "redis://127.0.0.1:6379/15"


def service_missing(what: str, reason: str) -> None:
    """Skip with a visible reason on a laptop; fail under CI, where a green run means it ran."""
    message = f"{what} unreachable ({reason})"
    if in_ci():
        pytest.fail(f"{message}: CI must run these tests", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """TEST_DATABASE_URL in SQLAlchemy form (the server the session database is made on)."""
    raw = os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL)
    return raw.replace("postgres://", "postgresql://", 1)


@pytest.fixture(scope="session")
def pg_database(pg_server_url: str) -> Iterator[str]:
    """A database of its own for this test session, migrated to head, dropped at the end."""
    # `make mutation` starts thousands of short sessions: each copies a database it migrated
    # once instead of migrating its own
    template = os.environ.get("MARKETDATA_TEST_PG_TEMPLATE", "")
    with own_database(pg_server_url, "marketdata_test", template=template) as url:
        yield url


@contextmanager
def own_database(server_url: str, prefix: str, *, template: str = "") -> Iterator[str]:
    """A new database on the test server (migrated to head unless copied from `template`),
    dropped on exit; a missing server skips (fails under CI)."""
    import uuid

    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    server = make_url(server_url).set(drivername="postgresql+psycopg")
    admin = sa.create_engine(
        server, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            clause = f' TEMPLATE "{template}"' if template else ""
            conn.execute(sa.text(f'CREATE DATABASE "{name}"{clause}'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        service_missing("PostgreSQL (TEST_DATABASE_URL)", str(exc.orig).splitlines()[0])
    url = server.set(database=name).render_as_string(hide_password=False)
    url = url.replace("postgresql+psycopg://", "postgresql://", 1)
    if not template:
        _migrate(url)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _migrate(url: str) -> None:
    from marketdata.storage import migrate
    from marketdata.storage.engine import create_engine, resolve_target

    settings = load_settings({"database_url": url}, environ={}).settings
    target = resolve_target(settings)
    engine = create_engine(settings, target)
    migrate.upgrade(engine, target)
    engine.dispose()


def _truncate(url: str) -> None:
    import sqlalchemy as sa

    from marketdata.storage.schema import metadata

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        names = ", ".join(t.name for t in metadata.sorted_tables)
        conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """An SQLite file migrated to head once per session; tests get a copy (a second each
    saved against migrating every test's own file)."""
    given = os.environ.get("MARKETDATA_TEST_SQLITE_TEMPLATE")  # `make mutation` makes one
    if given:
        return given
    path = tmp_path_factory.mktemp("template") / "template.sqlite3"
    _migrate(f"sqlite:///{path}")
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """Each test runs once on a fresh SQLite file and once on the session's PostgreSQL
    database (emptied first)."""
    if request.param == "sqlite":
        import shutil

        path = tmp_path / "test.sqlite3"
        template = request.getfixturevalue("sqlite_template")
        shutil.copyfile(template, path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("pg_database")
    _truncate(url)
    return url


@pytest.fixture
def app_factory(database_url: str) -> Iterator[Callable[..., AppContext]]:
    """Build AppContexts on the test database with setting overrides; closed afterwards."""
    from marketdata.observability.alerts import RecordingAlerts
    from marketdata.observability.metrics import RecordingMetrics

    built: list[AppContext] = []

    def build(**overrides: Any) -> AppContext:
        values = {"database_url": database_url, "http_retry_attempts": 2, **overrides}
        app = AppContext(
            load_settings(values, environ={}), metrics=RecordingMetrics(), alerts=RecordingAlerts()
        )
        built.append(app)
        return app

    yield build
    for app in built:
        app.close()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """TEST_REDIS_URL, checked reachable (skip on a laptop, fail under CI)."""
    import redis

    url = os.environ.get("TEST_REDIS_URL", DEFAULT_TEST_REDIS_URL)
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        service_missing("Redis (TEST_REDIS_URL)", str(exc))
    finally:
        client.close()
    return url


@contextmanager
def deadlocks(engine: Any, table: str, times: int) -> Iterator[Callable[[], int]]:
    """PostgreSQL: the first `times` INSERT statements into `table` fail as a deadlock would
    (a transient fault the write path retries). Yields how many inserts were tried so far."""
    import sqlalchemy as sa

    with engine.begin() as conn:
        conn.execute(sa.text("CREATE SEQUENCE md_faults"))
        conn.execute(
            sa.text(
                "CREATE FUNCTION md_deadlock() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF nextval('md_faults') <= {int(times)} THEN RAISE EXCEPTION "
                "'deadlock detected' USING ERRCODE = 'deadlock_detected'; END IF; "
                "RETURN NULL; END $$"
            )
        )
        conn.execute(
            sa.text(
                f"CREATE TRIGGER md_deadlock BEFORE INSERT ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION md_deadlock()"
            )
        )

    def tried() -> int:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT last_value FROM md_faults")).scalar_one())

    try:
        yield tried
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TRIGGER md_deadlock ON {table}"))
            conn.execute(sa.text("DROP FUNCTION md_deadlock"))
            conn.execute(sa.text("DROP SEQUENCE md_faults"))
