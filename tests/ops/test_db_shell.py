"""`db shell`: the real psql and sqlite3, the password never on a command line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.cli.helpers import run

PASSWORD = "s3cr:et\\pw"
# psql runs these; `\!` starts a shell whose parent ($PPID) is psql itself
PROBE = r"""\! echo "ARGV=$(tr '\0' ' ' < /proc/$PPID/cmdline)"
\! echo "PASSFILE=$PGPASSFILE"; printf 'PASS=%s\n' "$(cat "$PGPASSFILE")"
\! echo "ENVPW=${PGPASSWORD:-unset}"
SELECT 'connected to ' || current_database();
"""


def test_psql_gets_the_password_from_a_passfile_never_from_its_arguments(env, pg_database):
    assert _which("psql"), "psql is needed (postgresql-client)"
    url = pg_database.replace("postgresql://postgres@", f"postgresql://postgres:{_quoted()}@")
    result = subprocess.run(
        [sys.executable, "-m", "marketdata", "db", "shell", "--", "-X", "-q", "-A", "-t"],
        env={**env, "DATABASE_URL": url},
        input=PROBE,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = dict(re.findall(r"^([A-Z]+)=(.*)$", result.stdout, re.MULTILINE))
    database = pg_database.rsplit("/", 1)[1]
    assert f"connected to {database}" in result.stdout
    assert "psql postgresql://postgres@127.0.0.1:5432/" in out["ARGV"]
    assert "s3cr" not in out["ARGV"]
    assert out["PASS"] == "*:*:*:*:s3cr\\:et\\\\pw"  # libpq's escapes for : and \
    assert out["ENVPW"] == "unset"
    assert not Path(out["PASSFILE"]).exists()  # removed when the shell ended


def test_sqlite3_opens_the_embedded_file_and_a_missing_file_is_a_usage_error(cli, env, tmp_path):
    url = f"sqlite:///{tmp_path / 'md.sqlite3'}"
    missing = cli(["db", "shell"], DATABASE_URL=url)
    assert missing.returncode == 2
    assert "does not exist yet" in missing.stderr
    made = cli(["ingest", "-p", "synthetic", "-s", "BTC-USD", "--lookback-days", "3"])
    assert made.returncode == 0, made.stderr
    query = ["db", "shell", "--", "-batch", "select status from ingestion_runs;"]
    result = run(query, {**env, "DATABASE_URL": url})
    assert (result.returncode, result.stdout.strip()) == (0, "success"), result.stderr


def test_the_clients_exit_code_is_the_commands(env, pg_database):
    result = subprocess.run(
        [sys.executable, "-m", "marketdata", "db", "shell", "--", "-X", "-c", "select nope"],
        env={**env, "DATABASE_URL": pg_database},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert 'column "nope" does not exist' in result.stderr


def _quoted() -> str:
    from urllib.parse import quote

    return quote(PASSWORD, safe="")


def _which(name: str) -> str | None:
    import shutil

    return shutil.which(name)
