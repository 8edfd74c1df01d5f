"""The database from the command line: malformed URLs, `db check` creating nothing, missing
databases, the embedded file's own upgrades, and processes racing to set a new file up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from marketdata.storage.migrate import SCHEMA_HEAD
from tests.cli.helpers import one_error_line, run


def embedded_file(env) -> Path:
    return Path(env["XDG_DATA_HOME"]) / "marketdata" / "marketdata.sqlite3"


@pytest.mark.parametrize(
    ("url", "fragment", "args"),
    [
        ("sqlite://", "names no SQLite file", ["markets", "list"]),
        ("postgresql://md:pw@", "names no PostgreSQL host", ["db", "check"]),
    ],
)
def test_an_incomplete_database_url_is_one_line_and_exit_2(env, tmp_path, url, fragment, args):
    env["DATABASE_URL"] = url
    result = run(args, env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    line = one_error_line(result)
    assert fragment in line and "DATABASE_URL" in line
    assert "pw" not in line
    assert list(tmp_path.iterdir()) == []


def test_a_sqlite_path_in_a_missing_directory_creates_nothing(env, tmp_path):
    env["DATABASE_URL"] = "sqlite:///nonexistent/dir/x.db"
    for args in (["markets", "list"], ["db", "check"]):
        result = run(args, env, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        assert "nonexistent/dir/x.db" in one_error_line(result)
    assert not (tmp_path / "nonexistent").exists()


def test_db_check_on_a_missing_file_says_so_and_creates_nothing(env, tmp_path):
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'typo.sqlite3'}"
    result = run(["db", "check"], env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "does not exist" in one_error_line(result)
    assert list(tmp_path.iterdir()) == []

    del env["DATABASE_URL"]  # the embedded default: not made by a check either
    result = run(["db", "check"], env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "created by the first" in one_error_line(result)
    assert not embedded_file(env).parent.exists()


def test_a_missing_postgresql_database_is_exit_2_naming_it_and_how_to_create_it(env, pg_server_url):
    url = sa.engine.make_url(pg_server_url).set(database="md_never_created")
    env["DATABASE_URL"] = url.render_as_string(hide_password=False)
    for args in (["db", "check"], ["markets", "list"]):
        result = run(args, env)
        assert result.returncode == 2, result.stderr
        line = one_error_line(result)
        assert 'database "md_never_created" does not exist' in line
        assert "createdb" in line and "is PostgreSQL running" not in line


def test_four_processes_on_a_new_embedded_file_set_it_up_once_without_racing(env):
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "marketdata", "markets", "list", "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [(p.wait(timeout=120), *p.communicate()) for p in processes]
    assert [code for code, _, _ in results] == [0, 0, 0, 0], [err for _, _, err in results]
    created = [err for _, _, err in results if "created the database" in err]
    assert len(created) == 1
    with sa.create_engine(f"sqlite:///{embedded_file(env)}").connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).all() == [
            (SCHEMA_HEAD,)
        ]


def test_the_embedded_file_upgrades_itself_when_behind_and_says_so_once(env):
    assert run(["db", "upgrade", "0003"], env).returncode == 0
    first = run(["markets", "list", "--json"], env)
    assert first.returncode == 0, first.stderr
    upgraded = [line for line in first.stderr.splitlines() if "upgraded the database" in line]
    assert len(upgraded) == 1 and f"from schema 0003 to {SCHEMA_HEAD}" in upgraded[0]
    second = run(["markets", "list", "--json"], env)
    assert second.returncode == 0 and "upgraded" not in second.stderr


def test_an_explicit_downgrade_is_kept_and_the_upgrade_asks_for_an_analytics_rebuild(env):
    ingest = ["ingest", "-p", "synthetic", "-s", "BTC-USD", "-i", "1d", "--since", "2024-01-01"]
    assert run([*ingest, "--until", "2024-03-01"], env).returncode == 0
    unconfirmed = run(["db", "downgrade", "0002"], env)  # not a terminal: --yes is needed
    assert unconfirmed.returncode == 2 and "--yes" in one_error_line(unconfirmed)
    assert run(["db", "current"], env).stdout.strip() == SCHEMA_HEAD
    down = run(["db", "downgrade", "0002", "--yes"], env)  # drops the indicator columns
    assert down.returncode == 0, down.stderr
    assert "db upgrade" in down.stderr

    kept = run(["markets", "list", "--json"], env)
    assert kept.returncode == 1
    line = one_error_line(kept)
    assert "downgraded to 0002" in line and "marketdata db upgrade" in line
    assert run(["db", "current"], env).stdout.strip() == "0002"

    up = run(["db", "upgrade", "--json"], env)
    assert up.returncode == 0, up.stderr
    assert "marketdata analytics rebuild" in up.stderr
    assert json.loads(up.stdout) == {
        "database": str(embedded_file(env)),
        "previous": "0002",
        "current": SCHEMA_HEAD,
        "analytics_rebuild_needed": True,
    }
    after = run(["markets", "list", "--json"], env)
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout) is not None and "upgraded" not in after.stderr


def test_read_commands_check_the_schema_without_importing_alembic(env):
    ingest = ["ingest", "-p", "synthetic", "-s", "BTC-USD", "-i", "1d", "--since", "2024-01-01"]
    assert run([*ingest, "--until", "2024-02-01"], env).returncode == 0
    code = (
        "import sys\n"
        "from typer.main import get_command\n"
        "from marketdata.cli.main import app\n"
        "try:\n"
        "    get_command(app).main(sys.argv[1:], standalone_mode=False)\n"
        "finally:\n"
        "    print('ALEMBIC:', 'alembic' in sys.modules, file=sys.stderr)\n"
    )
    for args in (["show", "BTC-USD", "--json"], ["status"], ["runs"], ["db", "current"]):
        result = subprocess.run(
            [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True
        )
        assert "ALEMBIC: False" in result.stderr, (args, result.stderr)
