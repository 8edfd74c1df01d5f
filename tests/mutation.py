"""`make mutation`: mutmut over the data path, then the score and the surviving mutants.

Each mutant runs only the tests that reach the function it changes. PostgreSQL tests need a
database per pytest session and mutmut starts one session per mutant, so the sessions copy a
database migrated once here (`MARKETDATA_TEST_PG_TEMPLATE`), dropped again at the end.
The score counts a mutant as killed when a test failed or timed out under it; every other
mutant that was generated (survived, no test reaching it, suspicious) counts against it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

TARGET = 0.90
# mutmut's record of every test's duration, in the folder its test runs start in
STATS = Path("mutmut-stats.json")


def main(names: list[str]) -> int:
    """Run mutmut (over `names`, mutmut's mutant names or globs, else every mutant)."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    from tests.conftest import DEFAULT_TEST_DATABASE_URL, _migrate

    raw = os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL)
    server = make_url(raw.replace("postgres://", "postgresql://", 1)).set(
        drivername="postgresql+psycopg"
    )
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    template = f"marketdata_mutation_{uuid.uuid4().hex[:10]}"
    folder = Path(tempfile.mkdtemp(prefix="marketdata-mutation-"))
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{template}"'))
    try:
        url = server.set(database=template).render_as_string(hide_password=False)
        _migrate(url.replace("postgresql+psycopg://", "postgresql://", 1))
        sqlite = folder / "template.sqlite3"
        _migrate(f"sqlite:///{sqlite}")
        env = {
            **os.environ,
            "MARKETDATA_TEST_PG_TEMPLATE": template,
            "MARKETDATA_TEST_SQLITE_TEMPLATE": str(sqlite),
            "HYPOTHESIS_PROFILE": "mutation",
        }
        children = os.environ.get("MUTATION_CHILDREN", "2")
        run = subprocess.run(
            [sys.executable, "-m", "mutmut", "run", "--max-children", children, *names],
            env=env,
        )
        if run.returncode not in (0, 1):  # 1: some mutants survived
            return run.returncode
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)'))
        admin.dispose()
        shutil.rmtree(folder, ignore_errors=True)
    return report()


def quickest_first(items: list[Any]) -> None:
    """Under mutmut (tests/conftest.py's collection hook): the quickest tests first.

    A mutant's run stops at its first failing test (`-x`), and mutmut hands over the tests
    that reach the mutated function in no particular order: a killed mutant is found sooner
    when the slow tests come last. Survivors run every test either way.
    """
    if not STATS.exists():  # not under mutmut: the order stays as collected
        return
    durations = json.loads(STATS.read_text())["duration_by_test"]
    items.sort(key=lambda item: durations.get(item.nodeid, 0.0))


def report() -> int:
    """Print the score and the surviving mutants; 1 when the score is below TARGET."""
    subprocess.run([sys.executable, "-m", "mutmut", "export-cicd-stats"], check=True)
    stats = json.loads(Path("mutants/mutmut-cicd-stats.json").read_text())
    killed = stats["killed"] + stats["timeout"]
    viable = stats["total"] - stats["skipped"]
    if killed + stats["survived"] == 0:
        print("mutation score: no mutant was tested (see mutmut's output above)")
        return 1
    score = killed / viable if viable else 0.0
    tested = killed + stats["survived"] + stats["no_tests"] + stats["suspicious"]
    print(
        f"mutation score: {killed} of {viable} viable mutants killed ({score:.1%}); "
        f"survived {stats['survived']}, no test {stats['no_tests']}, "
        f"suspicious {stats['suspicious']}, timeout {stats['timeout']}; "
        f"{viable - tested} not tested yet ({killed / max(tested, 1):.1%} of those tested)"
    )
    print_modules()
    subprocess.run([sys.executable, "-m", "mutmut", "results"])
    return 0 if score >= TARGET else 1


def print_modules() -> None:
    """One line per mutated file: killed (timeouts included) of tested, and what is left."""
    from mutmut.stats import status_by_exit_code

    print("file: killed/tested (score of tested), survived, no test, not tested")
    for meta in sorted(Path("mutants/src").rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"].values()
        counts = Counter(status_by_exit_code[code] for code in codes)
        killed = counts["killed"] + counts["timeout"]
        tested = sum(counts.values()) - counts["not checked"] - counts["skipped"]
        share = f"{killed / tested:.1%}" if tested else "-"
        print(
            f"  {meta.relative_to('mutants/src').with_suffix('')}: {killed}/{tested} ({share}), "
            f"survived {counts['survived']}, no test {counts['no tests']}, "
            f"not tested {counts['not checked']}"
        )


if __name__ == "__main__":
    sys.exit(report() if "--report" in sys.argv else main(sys.argv[1:]))
