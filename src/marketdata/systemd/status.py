"""What systemd knows of the timers: active or not, last and next run (via systemctl)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

# systemctl show's properties for a timer, and for the service it starts
_TIMER = (
    "LoadState",
    "ActiveState",
    "UnitFileState",
    "LastTriggerUSec",
    "NextElapseUSecRealtime",
    "Unit",
)
_SERVICE = ("Result", "ExecMainStatus")


@dataclass(frozen=True)
class TimerStatus:
    """One timer as systemctl reports it."""

    timer: str
    state: str  # active, inactive, ... or "not installed"
    enabled: str
    last_run: datetime | None
    next_run: datetime | None
    service: str
    last_result: str  # the service's Result= (success, exit-code, oom-kill, ...)
    last_exit_status: int | None


@dataclass(frozen=True)
class SystemdStatus:
    """The timers, or why systemd could not be asked."""

    timers: list[TimerStatus]
    unavailable: str | None = None


def timer_status(timers: Sequence[str]) -> SystemdStatus:
    """Ask systemctl about each timer; `unavailable` says why when it cannot answer (not
    installed, or the host does not run systemd)."""
    binary = shutil.which("systemctl")
    if binary is None:
        return SystemdStatus([], "systemctl is not installed")
    found = []
    for timer in timers:
        props = _show(binary, timer, _TIMER)
        if isinstance(props, str):
            return SystemdStatus([], props)
        service = props.get("Unit") or timer.removesuffix(".timer") + ".service"
        served = _show(binary, service, _SERVICE)
        served = {} if isinstance(served, str) else served
        status = served.get("ExecMainStatus", "")
        found.append(
            TimerStatus(
                timer=timer,
                state="not installed"
                if props.get("LoadState") == "not-found"
                else props.get("ActiveState") or "unknown",
                enabled=props.get("UnitFileState", ""),
                last_run=_timestamp(props.get("LastTriggerUSec", "")),
                next_run=_timestamp(props.get("NextElapseUSecRealtime", "")),
                service=service,
                last_result=served.get("Result", ""),
                last_exit_status=int(status) if status.isdigit() else None,
            )
        )
    return SystemdStatus(found)


def _show(binary: str, unit: str, properties: Sequence[str]) -> dict[str, str] | str:
    """The unit's properties, or the reason systemctl gave for not answering."""
    result = subprocess.run(  # noqa: S603 - fixed arguments, no shell
        [binary, "show", unit, "--timestamp=unix", *(f"--property={p}" for p in properties)],
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
    )
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        return f"systemctl cannot answer: {lines[0] if lines else f'exit {result.returncode}'}"
    pairs = (line.partition("=") for line in result.stdout.splitlines())
    return {key: value for key, _, value in pairs}


def _timestamp(value: str) -> datetime | None:
    """`@1704067200` (with --timestamp=unix); empty, `n/a` and `0` mean never."""
    if value.startswith("@") and value[1:].isdigit() and int(value[1:]) > 0:
        return datetime.fromtimestamp(int(value[1:]), UTC)
    return None
