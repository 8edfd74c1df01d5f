"""Installing the units: write them to the unit directory, reload systemd, enable the timers.

Each step is an Action first, so `--dry-run` prints exactly what a real install does.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from marketdata.errors import InputError, MarketdataError
from marketdata.systemd.units import INGEST, MAINTENANCE, UnitSet

# The units' sandbox hides these (ProtectHome=, PrivateTmp=): an executable there cannot run.
HIDDEN_PREFIXES = tuple(
    Path(p)
    for p in ("/home", "/root", "/run/user", "/tmp", "/var/tmp")  # noqa: S108 - not written to
)


@dataclass(frozen=True)
class Action:
    """One step of an install: write a file (or leave an identical one), or run a command."""

    kind: str  # "write", "unchanged" or "run"
    target: str  # a path, or a command line

    def describe(self) -> str:
        """The step as a line for people."""
        return f"{self.kind} {self.target}"


def installed_executable() -> Path:
    """The `marketdata` command of this installation, as the units must call it."""
    beside = Path(sys.executable).with_name("marketdata")
    if beside.is_file():
        return beside.absolute()
    found = shutil.which("marketdata")
    if found is None:
        raise InputError(
            "cannot find the marketdata command of this installation",
            hint="give its absolute path with --exec",
        )
    return Path(found).absolute()


def check_executable(executable: Path) -> None:
    """InputError when the units could not run `executable` (relative, or hidden by the
    sandbox), so an install never enables timers that fail on their first run."""
    if not executable.is_absolute():
        raise InputError(f"--exec {executable} is not an absolute path")
    for prefix in HIDDEN_PREFIXES:
        if executable.is_relative_to(prefix):
            raise InputError(
                f"{executable} is under {prefix}, which the units' sandbox hides",
                hint="install marketdata outside home and temporary directories, e.g. in a "
                "virtualenv in /opt/marketdata, and give that path with --exec",
            )


def timers_to_enable(instance: str | None) -> list[str]:
    """The ingestion timer (one group's instance, or the plain one) and maintenance's."""
    ingest = f"{INGEST}@{instance}.timer" if instance else f"{INGEST}.timer"
    return [ingest, f"{MAINTENANCE}.timer"]


def plan_install(units: UnitSet, unit_dir: Path, enable: Sequence[str]) -> list[Action]:
    """Every step of installing `units` into `unit_dir` and enabling the `enable` timers."""
    actions = []
    for name, text in units.files.items():
        path = unit_dir / name
        same = path.is_file() and path.read_text() == text
        actions.append(Action("unchanged" if same else "write", str(path)))
    actions.append(Action("run", "systemctl daemon-reload"))
    actions.append(Action("run", " ".join(["systemctl", "enable", "--now", *enable])))
    return actions


def install(units: UnitSet, unit_dir: Path, actions: Sequence[Action]) -> None:
    """Carry out a plan from plan_install (files first, then systemctl)."""
    for action in actions:
        if action.kind == "write":
            path = Path(action.target)
            name = str(path.relative_to(unit_dir))
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(units.files[name])
            except PermissionError:
                raise InputError(
                    f"cannot write {path}: permission denied", hint="run the install as root"
                ) from None
        elif action.kind == "run":
            _systemctl(action.target.split()[1:])


def _systemctl(args: Sequence[str]) -> None:
    binary = shutil.which("systemctl")
    if binary is None:
        raise MarketdataError(
            "systemctl is not installed on this host",
            hint="without systemd, run the schedule in the foreground: marketdata schedule run",
        )
    # our own fixed arguments, no shell
    result = subprocess.run([binary, *args], capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise MarketdataError(
            f"systemctl {' '.join(args)} failed (exit {result.returncode})", hint=reason
        )
