"""House rules that a test can hold: a thin CLI, a core that never imports it, a light start."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "marketdata"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def core_files() -> list[Path]:
    # __main__.py is the `python -m marketdata` entry point: it exists to start the CLI
    return [
        p
        for p in SRC.rglob("*.py")
        if "cli" not in p.relative_to(SRC).parts and p.name != "__main__.py"
    ]


def test_nothing_outside_the_cli_imports_typer_rich_or_the_cli():
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            m
            for m in imported_modules(path)
            if m.split(".")[0] in ("typer", "rich", "click") or m.startswith("marketdata.cli")
        )
        for path in core_files()
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys\n"
        "from marketdata.cli.main import app\n"
        "import typer\n"
        "try:\n"
        "    typer.main.get_command(app).main(['--help'], standalone_mode=False)\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ['sqlalchemy', 'httpx', 'loguru', 'numpy', 'alembic', 'psycopg',"
        " 'pydantic', 'redis', 'pandas', 'exchange_calendars', 'hypothesis', 'procrastinate']\n"
        "print('HEAVY:' + ','.join(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "Usage" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "HEAVY:"


def test_only_the_fleets_queue_worker_and_enqueue_modules_import_procrastinate():
    allowed = {"fleet/queue.py", "fleet/worker.py", "fleet/enqueue.py"}
    importers = {
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if any(m.split(".")[0] == "procrastinate" for m in imported_modules(path))
    }
    assert importers == allowed


def test_every_package_is_listed_for_the_wheel():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {
        "marketdata" + "".join(f".{part}" for part in p.parent.relative_to(SRC).parts)
        for p in SRC.rglob("__init__.py")
    } | {"marketdata.migrations", "marketdata.migrations.versions"}
    assert listed == found
