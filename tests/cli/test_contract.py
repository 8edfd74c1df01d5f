"""The output contract (README, "Output"), checked over every command of Typer's tree.

Each command runs piped, piped with --json, and on a pseudo-terminal 60 and 200 columns
wide; a command added to the tree is picked up here by itself (and the test naming the
commands without a case below fails until it has one).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import typer

from marketdata.cli.helptext import EXAMPLES, walk
from marketdata.cli.main import app
from tests.cli.terminal import Run, home_env, run_all


@dataclass(frozen=True)
class Case:
    """Arguments after the command's path, and the exit codes they may end with."""

    args: tuple[str, ...] = ()
    codes: frozenset[int] = field(default_factory=lambda: frozenset({0}))


def case(*args: str, codes: tuple[int, ...] = (0,)) -> Case:
    return Case(args, frozenset(codes))


CASES: dict[str, list[Case]] = {
    "ingest": [
        case("-s", "BTC-USD,SOL-USD", "-p", "synthetic", "-i", "1d,1h"),
        case("-s", "BTC-USD", "-p", "kraken", "-i", "6h", codes=(2,)),  # kraken has no 6h
        case("-s", "BTC-USD", "-p", "kraken", "-i", "6h", "--dry-run", codes=(2,)),
        case("-s", "BTC-USD", "-p", "synthetic", "--since", "2030-01-01", codes=(2,)),
        case("-s", "BTC-USD", "-p", "synthetic", "--until", "2020-01-01", codes=(2,)),
    ],
    "replay": [case("--lookback-days", "3", "-s", "BTC-USD", "-p", "synthetic")],
    "gaps": [case("-s", "BTC-USD"), case("-s", "DOGE-USD", codes=(2,))],
    "rejects list": [case(), case("--since", "7d")],
    "rejects purge": [case("--before", "30d", "--yes"), case("--before", "30d", "--dry-run")],
    "show": [case("BTC-USD", "-n", "5"), case("BTC-XYZ", codes=(2,))],
    "compare": [case("BTC-USD", "ETH-USD", "-w", "10")],
    "verify": [case("-s", "BTC-USD", "-a", "synthetic", "--lookback-days", "5")],
    "metrics": [case()],
    "runs": [case()],
    "status": [case(codes=(0, 1))],
    "analytics rebuild": [case("--dry-run")],
    "markets list": [case()],
    "markets add": [case("DOGE-USD")],
    "markets disable": [case("ETH-USD")],
    "markets enable": [case("ETH-USD")],
    "providers list": [case()],
    "providers check": [case("synthetic")],
    "db upgrade": [case()],
    "db downgrade": [case("0003", "--yes")],
    "db current": [case()],
    "db history": [case()],
    "db check": [case()],
    "config show": [case()],
    "config example": [case()],
    "alert test": [case(codes=(2,))],  # no ALERT_WEBHOOK_URL here: bad configuration
    "alert unit-failed": [case("marketdata-ingest.service", codes=(0, 2))],
    "schedule render": [case()],
    "schedule install": [case("--dry-run")],
    "schedule status": [case(codes=(0, 1, 2))],
    "cache rebuild": [case(), case("--symbols", "BTC-USD", "--dry-run")],
    "rebuild-cache": [case()],
    "cache invalidate": [case("market:BTC-USD:*")],
    "cache stats": [case()],
    "db stats": [case()],
    "db prune": [case("--dry-run"), case("--older-than", "90d", codes=(2,))],
    "db maintain": [case()],
    # the job queue lives in PostgreSQL: on the SQLite file of these cases, one error line
    "worker": [case(codes=(2,))],
    "jobs retry": [case("--all-failed", codes=(2,))],
    "jobs cancel": [case("1", codes=(2,))],
}
# commands run only for their help and a usage error: why
HELP_ONLY = {
    "db shell": "opens an interactive database client",
    "schedule run": "runs in the foreground until stopped",
}
# commands without --json: why
NO_JSON = {
    "worker": "a long-running worker; it logs what it does",
    "db shell": "hands the terminal to the database's own client",
    "config example": "prints an env file, which is its data",
    "schedule run": "a foreground scheduler running other commands",
}
# commands whose tables and JSON name things differently on purpose: why
NAMES_DIFFER = {
    "cache stats": "one record, shown as rows of name and value (its JSON nests the key counts)",
    "metrics": "its JSON keeps the Prometheus metric names; the table sums them up per scope",
}
# what a table cell may never show, nor the help
ELLIPSIS = "…"
PROGRESS_BAR = ("━", "╺", "╸")
TYPE_NAMES = ("<str>", "<int>", "<bool>", "<float>", "<path>", "<file>", "list[", "<text>")
DECIMAL = re.compile(r"-?\d[\d,]*\.\d+")


def _commands() -> dict[str, object]:
    root = typer.main.get_command(app)
    return {
        " ".join(path): command
        for path, command in walk(root)
        if path and not getattr(command, "commands", None)
    }


COMMANDS = _commands()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, str]:
    """A home with an embedded database holding two markets' daily and hourly candles."""
    # what every command imports, imported once here: each forked run starts with it

    import marketdata.context
    import marketdata.pipeline
    import marketdata.storage.migrate  # noqa: F401

    env = home_env(tmp_path_factory.mktemp("contract"))
    args = ["ingest", "-s", "BTC-USD,ETH-USD", "-p", "synthetic", "-i", "1d,1h"]
    for step in (args, ["markets", "add", "BTC-USD"], ["markets", "add", "ETH-USD"]):
        [done] = run_all([Run(step, env)])
        assert done.code == 0, done
    return env


def _own_copy(world: dict[str, str], tmp_path: Path, name: str) -> dict[str, str]:
    """A copy of the world for one run, so that runs that write do not meet."""
    home = tmp_path / name
    shutil.copytree(Path(world["HOME"]), home)
    return {k: v.replace(world["HOME"], str(home)) for k, v in world.items()}


def test_every_command_has_a_contract_case_and_examples():
    missing = sorted(p for p in COMMANDS if p not in CASES and p not in HELP_ONLY)
    assert not missing, f"add a case to CASES in {__file__} for: {', '.join(missing)}"
    without = sorted(p for p in COMMANDS if p not in EXAMPLES)
    assert not without, f"add examples to cli/helptext.py EXAMPLES for: {', '.join(without)}"
    no_json = sorted(p for p in COMMANDS if p not in NO_JSON and not _has_json(p))
    assert not no_json, f"add --json to: {', '.join(no_json)}"


def _has_json(path: str) -> bool:
    return any("--json" in p.opts for p in COMMANDS[path].params)  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_help_has_examples_and_usage_errors_are_one_line(path, world, tmp_path):
    words = path.split()
    env = _own_copy(world, tmp_path, "home")
    helped, wrong, wrong_json = run_all(
        [
            Run([*words, "-h"], env),
            Run([*words, "--no-such-option"], env),
            Run([*words, "--no-such-option", "--json"], env),
        ]
    )
    assert helped.code == 0, helped
    assert "Examples:" in helped.stdout, helped
    assert not [t for t in TYPE_NAMES if t in helped.stdout], helped
    for run in (wrong, wrong_json):
        assert run.code == 2, run
        assert run.stdout == "", run
        _assert_one_error(run)
    error = json.loads(wrong_json.stderr.strip().splitlines()[-1])
    assert error["exit_code"] == 2 and "--no-such-option" in error["error"]


@pytest.mark.parametrize("path", sorted(p for p in COMMANDS if p in CASES))
def test_every_command_keeps_the_output_contract(path, world, tmp_path):
    words = path.split()
    has_json = _has_json(path)
    runs: list[tuple[Case, Run]] = []
    for number, this in enumerate(CASES[path]):
        args = [*words, *this.args]
        variants = [(args, None), *([([*args, "--json"], None)] if has_json else [])]
        variants += [(args, 60), (args, 200)]
        for index, (argv, columns) in enumerate(variants):
            env = _own_copy(world, tmp_path, f"home-{number}-{index}")
            runs.append((this, Run(argv, env, columns)))
    run_all([run for _, run in runs])
    _assert_same_names(runs)
    for this, run in runs:
        assert run.code in this.codes, run
        if run.columns is None:
            _assert_piped(run, json_output="--json" in run.args)
        else:
            _assert_screen(run, piped=_piped_twin(runs, run))


def _assert_same_names(runs: list[tuple[Case, Run]]) -> None:
    """A piped table's headers are the JSON field names, with spaces for underscores."""
    for _, run in runs:
        if (
            run.args[0] in NAMES_DIFFER
            or " ".join(run.args[:2]) in NAMES_DIFFER
            or run.columns is not None
            or "--json" in run.args
            or run.code != 0
        ):
            continue
        twin = next((r for _, r in runs if r.args == [*run.args, "--json"]), None)
        header = run.stdout.split("\n", 1)[0]
        if twin is None or twin.code != 0 or "\t" not in header:
            continue
        keys = _record_keys(json.loads(twin.stdout))
        names = [h.replace(" ", "_") for h in header.split("\t")]
        # a duration shown for people carries its unit in JSON (age -> age_seconds); the
        # first column is the row's key, which JSON may hold as a list (symbol -> symbols)
        aliases = {n: {n, f"{n}_seconds", f"{n}_ms"} for n in names}
        aliases[names[0]].add(f"{names[0]}s")
        assert not [n for n in names if not aliases[n] & keys], f"{names} vs {sorted(keys)}\n{run}"


def _record_keys(data: object) -> set[str]:
    """Every key of every object in the document."""
    if isinstance(data, dict):
        return set(data) | {k for v in data.values() for k in _record_keys(v)}
    if isinstance(data, list):
        return {k for v in data for k in _record_keys(v)}
    return set()


def _piped_twin(runs: list[tuple[Case, Run]], run: Run) -> Run:
    return next(r for _, r in runs if r.columns is None and r.args == run.args)


def _assert_piped(run: Run, *, json_output: bool) -> None:
    assert "Traceback" not in run.stderr, run
    assert ELLIPSIS not in run.stdout, run
    if run.code != 0:
        _assert_one_error(run)
    if json_output:
        if run.code == 0 or run.stdout.strip():
            json.loads(run.stdout)  # the whole of stdout is one JSON document
        if run.code != 0:
            error = json.loads(run.stderr.strip().splitlines()[-1])
            assert error["exit_code"] == run.code, run


def _assert_screen(run: Run, *, piped: Run) -> None:
    shown = run.shown
    assert "Traceback" not in shown, run
    assert ELLIPSIS not in shown, run
    assert not [c for c in PROGRESS_BAR if c in shown], run  # the bar was cleared
    errors = [line for line in run.screen if line.startswith("marketdata: error:")]
    assert len(errors) == (1 if run.code != 0 else 0), run
    # a number on the screen is a whole number of the data: wrapped or left out, never cut
    whole = set(DECIMAL.findall(piped.stdout)) | set(DECIMAL.findall(piped.stderr))
    cut = [
        n for n in DECIMAL.findall(shown) if n not in whole and any(w.startswith(n) for w in whole)
    ]
    assert not cut, f"numbers cut: {cut}\n{run}"


def _assert_one_error(run: Run) -> None:
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    errors = [i for i, line in enumerate(lines) if line.startswith("marketdata: error:")]
    assert len(errors) == 1, run
    hints = [line for line in lines if line.startswith("hint: ")]
    assert len(hints) <= 1, run
    if hints:
        assert lines[errors[0] + 1] == hints[0], run
