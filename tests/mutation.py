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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

TARGET = 0.90
# mutmut's record of every test's duration, in the folder its test runs start in
STATS = Path("mutmut-stats.json")
LEDGER = Path(__file__).with_name("mutation-ledger.json")
"""The results of earlier runs (committed): a run takes hours more than a session has, and
mutmut's own record (mutants/) does not outlive a checkout."""
KEPT = {"killed": "1", "survived": "0", "timeout": "36", "caught by type check": "37"}
"""The results the ledger keeps, by status, as the exit code mutmut reads back. Not kept: no
test reaching a mutant (a test added since may), suspicious, not run."""


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
            # the type check (`typecheck` below) runs this interpreter's mypy
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "MARKETDATA_TEST_PG_TEMPLATE": template,
            "MARKETDATA_TEST_SQLITE_TEMPLATE": str(sqlite),
            "HYPOTHESIS_PROFILE": "mutation",
        }
        children = os.environ.get("MUTATION_CHILDREN", "2")
        print(f"ledger: {seed()} results of earlier runs")
        run = subprocess.run(
            [sys.executable, "-m", "tests.mutation", "--run", "--max-children", children, *names],
            env=env,
        )
        if run.returncode not in (0, 1):  # 1: some mutants survived
            return run.returncode
    finally:
        print(f"ledger: {record()} results kept in {LEDGER.name}")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)'))
        admin.dispose()
        shutil.rmtree(folder, ignore_errors=True)
    return report()


def seed() -> int:
    """Write the ledger's results into mutants/ for the files that have no record there yet;
    the number of results written. mutmut keeps a result while the function it mutated
    hashes the same (it runs every mutant of a changed function again), and runs only the
    mutants without one, unless they are named (`make mutation MUTANTS=...`)."""
    if not LEDGER.exists():
        return 0
    written = 0
    for path, entry in json.loads(LEDGER.read_text()).items():
        meta = Path("mutants") / f"{path}.meta"
        if meta.exists() or not Path(path).exists():  # recorded here, or a file gone since
            continue
        codes = {
            f"{function}__mutmut_{number}": int(code)
            for function, by_code in entry["results"].items()
            for code, numbers in by_code.items()
            for number in numbers
        }
        meta.parent.mkdir(parents=True, exist_ok=True)
        write_meta(meta, codes, entry["hashes"])
        written += len(codes)
    return written


def write_meta(meta: Path, codes: Mapping[str, int | None], hashes: Mapping[str, str]) -> None:
    """A file's record in mutants/ as mutmut writes it: its mutants' exit codes (None: not
    run) and the hash of each function."""
    empty: dict[str, Any] = {}
    meta.write_text(
        json.dumps(
            {
                "exit_code_by_key": codes,
                "hash_by_function_name": hashes,
                "type_check_error_by_key": empty,
                "durations_by_key": empty,
                "estimated_durations_by_key": empty,
            }
        )
    )


def record() -> int:
    """Keep mutmut's results in mutants/ in the ledger (those of KEPT), with the hash of
    every function of their files; the number of results kept. The ledger lists, per file
    and function, the mutants' numbers by exit code.

    A result already in the ledger stays while its function hashes the same, unless this
    run decided that mutant again: mutmut makes its record afresh when its configuration
    changes, so mutants/ may hold only this run's results (the whole ledger was once
    overwritten with the 66 results of one named run that way)."""
    from mutmut.stats import status_by_exit_code

    ledger: dict[str, Any] = json.loads(LEDGER.read_text()) if LEDGER.exists() else {}
    for meta in sorted(Path("mutants/src").rglob("*.py.meta")):
        data = json.loads(meta.read_text())
        hashes: dict[str, str] = data["hash_by_function_name"]
        path = str(meta.relative_to("mutants").with_suffix(""))
        earlier = ledger.get(path, {"hashes": {}, "results": {}})
        codes: dict[str, dict[int, str]] = {}  # function -> mutant number -> kept code
        for function, by_code in earlier["results"].items():
            name = function.rpartition(".")[2]
            if name in hashes and earlier["hashes"].get(name) == hashes[name]:
                for code, numbers in by_code.items():
                    codes.setdefault(function, {}).update(dict.fromkeys(numbers, code))
        for key, exit_code in data["exit_code_by_key"].items():
            kept = KEPT.get(status_by_exit_code[exit_code])
            if kept is not None:
                function, _, number = key.rpartition("__mutmut_")
                codes.setdefault(function, {})[int(number)] = kept
        results: dict[str, dict[str, list[int]]] = {}
        for function, by_number in codes.items():
            for number, code in sorted(by_number.items()):
                results.setdefault(function, {}).setdefault(code, []).append(number)
        ledger[path] = {"hashes": hashes, "results": results}
    if ledger:
        LEDGER.write_text(json.dumps(ledger, indent=1, sort_keys=True) + "\n")
    return sum(
        len(numbers)
        for entry in ledger.values()
        for by_code in entry["results"].values()
        for numbers in by_code.values()
    )


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


def run_mutmut(args: list[str]) -> None:
    """`mutmut run`, less its second unmutated pass when this run has just made its first.

    mutmut records which tests reach which function in a pass over every selected test
    without mutants (it stops when one fails), then runs those tests again, unmutated, to
    check they pass. On the whole scope each pass takes minutes; the second proves nothing
    the first did not when the first covered every test in this same process. After a run
    that only recorded new tests, the second pass is kept.
    """
    import mutmut.__main__ as mutmut_main
    from mutmut.workers.isolation import ForkRunner

    full_pass: list[bool] = []
    record = mutmut_main.run_stats_collection
    clean = ForkRunner.run_clean_tests

    def recorded(runner: Any, tests: Any = None) -> None:
        record(runner, tests)
        full_pass.append(not tests)

    def clean_unless_recorded(runner: Any, tests: Any) -> int:
        return 0 if any(full_pass) else clean(runner, tests)

    mutmut_main.run_stats_collection = recorded
    ForkRunner.run_clean_tests = clean_unless_recorded  # type: ignore[method-assign, assignment]
    _rejected_first(mutmut_main)
    # the tests package is imported afresh from mutants/, where mutmut runs them
    for name in [name for name in sys.modules if name == "tests" or name.startswith("tests.")]:
        del sys.modules[name]
    mutmut_main.cli(["run", *args])


def _rejected_first(mutmut_main: Any) -> None:
    """Order the mutants that mypy rejected before every other.

    mutmut runs mypy once over every mutant, but writes a rejection down only when its loop
    reaches that mutant, in the order of the tests' recorded time; a run stopped early (every
    whole-scope run so far) lost the rejections of the mutants it had not reached, though
    mypy had decided them. Ordered first, they are all recorded within seconds of the loop's
    start, whatever the tests then take.
    """
    find_rejected = mutmut_main.filter_mutants_with_type_checker
    cost = mutmut_main.estimated_worst_case_time
    rejected: set[str] = set()

    def rejected_by_mypy() -> Any:
        found = find_rejected()
        rejected.update(found)
        return found

    def cost_or_first(mutant_name: str) -> float:
        # the run's loop looks a name up without "__init__." (as here)
        return -1.0 if mutant_name.replace("__init__.", "") in rejected else cost(mutant_name)

    mutmut_main.filter_mutants_with_type_checker = rejected_by_mypy
    mutmut_main.estimated_worst_case_time = cost_or_first


def typecheck() -> int:
    """mutmut's type-check step (`type_check_command`): mypy's errors that a mutation made.

    `make typecheck` (mypy strict, in CI) rejects a mutant that does not type-check, so such a
    mutant could never land; mutmut marks it "caught by type check" instead of running tests.
    mypy also reports errors that mutmut's rewriting makes whatever the mutant (attributes set
    in an `__init__` that became a module-level copy, a trampoline returning Any): an error in
    a function's unmutated copy marks every mutant of that function as not caught, and errors
    outside the copies are dropped. Prints mypy's JSON lines for the errors that remain.
    """
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "-O", "json", "--no-warn-unused-ignores"],
        capture_output=True,
        text=True,
    )
    by_file: dict[str, list[dict[str, Any]]] = {}
    for line in run.stdout.splitlines():
        error = json.loads(line) if line.strip() else {}
        if error.get("severity") == "error":
            by_file.setdefault(error["file"], []).append(error)
    kept = [error for file, found in by_file.items() for error in _made_by_mutants(file, found)]
    print("\n".join(json.dumps(error) for error in kept))
    return 0


def _made_by_mutants(file: str, errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Those of `file`'s mypy errors that lie in a mutant of a function whose unmutated
    copy (`..._mutmut_orig`) has none."""
    import libcst as cst
    from mutmut.mutation.file_mutation import MutatedMethodsCollector

    visitor = MutatedMethodsCollector(Path(file).absolute())
    cst.MetadataWrapper(cst.parse_module(Path(file).read_text())).visit(visitor)
    spans = [
        (m.line_number_start, m.line_number_end, m.function_name) for m in visitor.found_mutants
    ]
    owned = [
        (error, name)
        for error in errors
        for start, end, name in spans
        if start <= error["line"] <= end
    ]
    unsound = {name.rpartition("__mutmut_")[0] for _, name in owned if name.endswith("_orig")}
    return [error for error, name in owned if name.rpartition("__mutmut_")[0] not in unsound]


def report() -> int:
    """Print the score, per file, and the surviving mutants; 1 when below TARGET.

    Killed: a test failed or timed out, or mypy strict rejected the mutant (CI would).
    Every other generated mutant (survived, no test reaching it, suspicious, not run yet)
    counts against the score.
    """
    from mutmut.stats import status_by_exit_code

    total: Counter[str] = Counter()
    print("file: killed by tests / run by tests, by mypy, survived, no test, not run yet")
    for meta in sorted(Path("mutants/src").rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"].values()
        counts = Counter(status_by_exit_code[code] for code in codes)
        total += counts
        print(f"  {meta.relative_to('mutants/src').with_suffix('')}: {_line(counts)}")
    print(f"  all: {_line(total)}")
    viable = sum(total.values()) - total["skipped"]
    killed = total["killed"] + total["timeout"] + total["caught by type check"]
    score = killed / viable if viable else 0.0
    print(
        f"mutation score: {killed} of {viable} viable mutants killed ({score:.1%}); "
        f"timeouts {total['timeout']}, suspicious {total['suspicious']}"
    )
    subprocess.run([sys.executable, "-m", "mutmut", "results"])
    return 0 if score >= TARGET else 1


def _line(counts: Counter[str]) -> str:
    """A file's figures: killed of run by tests (share), mypy, survived, no test, not run."""
    killed = counts["killed"] + counts["timeout"]
    run = killed + counts["survived"] + counts["suspicious"]
    share = f"{killed / run:.1%}" if run else "-"
    return (
        f"{killed}/{run} ({share}), mypy {counts['caught by type check']}, "
        f"survived {counts['survived']}, no test {counts['no tests']}, "
        f"not run {counts['not checked']}"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--run"]:
        run_mutmut(sys.argv[2:])
    if "--typecheck" in sys.argv:
        sys.exit(typecheck())
    try:
        sys.exit(report() if "--report" in sys.argv else main(sys.argv[1:]))
    except KeyboardInterrupt:  # stopped by hand: the ledger kept what was run (see main)
        sys.exit(130)
