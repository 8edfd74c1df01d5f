"""Start-up benchmark: read commands on a small SQLite database against a bare Typer app with
as many commands answering --help (the floor any Typer CLI pays), measured in the same run.

Target: each read command within 2.5x the bare app's --help. `python -m tests.benchmarks.startup`
runs it alone (no PostgreSQL needed); `make bench` runs it first.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import typer

from tests.benchmarks.common import BenchError, Figure, Report, log, median, render

ROUNDS = 7
TARGET = 2.5
READS = (
    ("show BTC-USD --json", ["show", "BTC-USD", "--json"]),
    ("compare BTC-USD ETH-USD --json", ["compare", "BTC-USD", "ETH-USD", "--json"]),
    ("status --json", ["status", "--json"]),
    ("runs --json", ["runs", "--json"]),
    ("db current", ["db", "current"]),
)


def command_count() -> int:
    """How many commands our tree has (groups' subcommands counted one by one)."""
    from marketdata.cli.helptext import walk
    from marketdata.cli.main import app

    root = typer.main.get_command(app)
    return sum(1 for path, c in walk(root) if path and not getattr(c, "commands", None))


def bare_app(commands: int) -> str:
    """A Typer app with `commands` commands of one option each, doing nothing."""
    lines = ["import typer", "app = typer.Typer()"]
    for i in range(commands):
        lines += [
            f"@app.command('command-{i}')",
            f"def command_{i}(value: int = typer.Option(1, help='A value.')) -> None:",
            f"    '''Command {i}.'''",
        ]
    return "\n".join([*lines, "app()", ""])


def timed(command: list[str], env: dict[str, str]) -> float:
    """The median wall time of `command`, from spawn to exit; BenchError when it fails."""
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise BenchError(f"{' '.join(command[2:])} exited {done.returncode}: {done.stderr}")
    return median(times)


def run(report: Report) -> None:
    """Measure the bare app and every read command; add one figure each."""
    import os

    with tempfile.TemporaryDirectory(prefix="marketdata-startup-") as scratch:
        home = Path(scratch)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": scratch,
            "XDG_DATA_HOME": str(home / "data"),
            "XDG_CACHE_HOME": str(home / "cache"),
            "XDG_STATE_HOME": str(home / "state"),
        }
        cli = [sys.executable, "-m", "marketdata"]
        log("start-up: a small database (two markets, 90 daily candles each)")
        ingest = [*cli, "ingest", "-s", "BTC-USD,ETH-USD", "-p", "synthetic", "-i", "1d"]
        subprocess.run(ingest, env=env, capture_output=True, check=True)
        commands = command_count()
        script = home / "bare.py"
        script.write_text(bare_app(commands))
        baseline = timed([sys.executable, str(script), "--help"], env)
        report.add(
            Figure(f"bare Typer app, {commands} commands: --help", baseline, target="baseline")
        )
        for name, args in READS:
            log(f"start-up: {name}")
            seconds = timed([*cli, *args], env)
            ratio = seconds / baseline
            report.add(
                Figure(
                    name,
                    seconds,
                    ratio=f"{ratio:.2f}x bare --help",
                    target=f"<= {TARGET}x",
                    passed=ratio <= TARGET,
                )
            )


def main() -> int:
    """Run this benchmark alone and print its table."""
    report = Report()
    try:
        run(report)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    print(render(report, f"marketdata start-up, median of {ROUNDS} runs each"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
