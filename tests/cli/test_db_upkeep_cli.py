"""`marketdata db prune|stats|maintain` as a user runs them: JSON out, one error line."""

from __future__ import annotations

import json

from tests.cli.helpers import one_error_line, run
from tests.storage.test_retention import app  # noqa: F401 - the stored candles, as a fixture


def test_db_prune_and_stats_commands_report_in_json(app, env, database_url):  # noqa: F811
    env = {**env, "DATABASE_URL": database_url, "RETENTION_1M": "45d"}
    shown = run(["db", "stats", "--json"], env)
    assert shown.returncode == 0, shown.stderr
    before = json.loads(shown.stdout)["total"]["rows"]

    dry = run(["db", "prune", "--dry-run", "--json"], env)
    real = run(["db", "prune", "--json"], env)

    assert dry.returncode == real.returncode == 0, dry.stderr + real.stderr
    planned, done = json.loads(dry.stdout), json.loads(real.stdout)
    assert planned["dry_run"] and not done["dry_run"]
    assert planned["intervals"][0]["rows"] == done["intervals"][0]["rows"] > 0
    after = json.loads(run(["db", "stats", "--json"], env).stdout)["total"]["rows"]
    assert after == before - done["intervals"][0]["rows"]
    bad = run(["db", "prune", "--interval", "1m", "--older-than", "soon"], env)
    assert bad.returncode == 2
    assert "--older-than 'soon' is not a duration" in one_error_line(bad)


def test_db_maintain_on_sqlite_says_there_is_nothing_to_do(env, tmp_path):
    env = {**env, "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}"}
    done = run(["db", "maintain", "--json"], env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "backend": "sqlite",
        "partitioned": False,
        "created": [],
        "vacuumed": [],
    }
