"""The systemd units that run the tool unattended, rendered from the cron expression.

Every service shares one sandbox (a network client that writes only its own directories);
`systemd-analyze security --offline=true` rates each at most 2.0 and the tests hold it there.
The timer's OnCalendar=, its randomised delay and accuracy, the retry delay and the start
limit all follow from the schedule, so a one-minute cron is not throttled by a limit sized
for fifteen minutes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from marketdata.config import SYSTEM_ENV_FILE
from marketdata.cron import Cron
from marketdata.errors import InputError

UNIT_DIR = Path("/etc/systemd/system")
INGEST = "marketdata-ingest"
ALERT = "marketdata-alert@"
MAINTENANCE = "marketdata-maintenance"
WORKER = "marketdata-worker"
# node_exporter's textfile collector reads this file (link it into the collector's directory)
METRICS_TEXTFILE = Path("/run/marketdata/marketdata.prom")
MAINTENANCE_CALENDAR = "*-*-* 03:30:00"
# Exit codes a restart cannot mend: 2 bad input or configuration, 3 partial (the failed
# pairs failed after their retries and the next scheduled run tries them again).
NO_RESTART_EXIT_CODES = "2 3"

Lines = Sequence[str | tuple[str, str]]  # a comment line, or (key, value)

# Shared by every service: what a network client that writes only its own directories needs.
SANDBOX: Lines = (
    "# One identity for every unit, created while a unit runs; it owns only the directories",
    "# below, which the tool finds in $STATE_DIRECTORY, $CACHE_DIRECTORY and $LOGS_DIRECTORY.",
    ("DynamicUser", "yes"),
    ("User", "marketdata"),
    ("Group", "marketdata"),
    ("StateDirectory", "marketdata"),
    ("CacheDirectory", "marketdata"),
    ("LogsDirectory", "marketdata"),
    ("StateDirectoryMode", "0700"),
    ("CacheDirectoryMode", "0700"),
    ("LogsDirectoryMode", "0700"),
    "# the metrics textfile in /run/marketdata must be readable by node_exporter",
    ("UMask", "0022"),
    ("NoNewPrivileges", "yes"),
    ("ProtectSystem", "strict"),
    ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"),
    ("PrivateDevices", "yes"),
    ("PrivateUsers", "yes"),
    ("PrivateMounts", "yes"),
    ("PrivateIPC", "yes"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectKernelLogs", "yes"),
    ("ProtectControlGroups", "yes"),
    ("ProtectClock", "yes"),
    ("ProtectHostname", "yes"),
    ("ProtectProc", "invisible"),
    "# PostgreSQL may be reached over a local socket, providers and webhooks over IP",
    ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
    ("RestrictNamespaces", "yes"),
    ("RestrictRealtime", "yes"),
    ("RestrictSUIDSGID", "yes"),
    ("LockPersonality", "yes"),
    "# CI runs the tool under the same restriction (prctl PR_SET_MDWE)",
    ("MemoryDenyWriteExecute", "yes"),
    ("RemoveIPC", "yes"),
    ("KeyringMode", "private"),
    ("DevicePolicy", "closed"),
    ("SystemCallArchitectures", "native"),
    ("SystemCallFilter", "@system-service"),
    ("SystemCallFilter", "~@privileged @resources"),
    ("SystemCallErrorNumber", "EPERM"),
    ("CapabilityBoundingSet", ""),
    ("AmbientCapabilities", ""),
    "# a polite batch job",
    ("Nice", "10"),
    ("IOSchedulingClass", "best-effort"),
    ("IOSchedulingPriority", "7"),
    ("MemoryMax", "1G"),
    ("TasksMax", "256"),  # INGESTION_CONCURRENCY may be 64 threads
)


@dataclass(frozen=True)
class Timing:
    """How a schedule turns into timer and restart settings (seconds)."""

    on_calendar: tuple[str, ...]
    shortest_gap: int  # between two consecutive runs
    randomized_delay: int
    accuracy: int
    restart_delay: int
    start_limit_burst: int  # starts per hour: the scheduled ones and three retries

    @classmethod
    def of(cls, cron: Cron) -> Timing:
        """The timing of a cron schedule, from the shortest gap between two of its runs."""
        gap = cron.shortest_gap()
        return cls(
            on_calendar=tuple(cron.on_calendar()),
            shortest_gap=gap,
            # spread hosts and groups over a tenth of the gap, at most 5 minutes
            randomized_delay=_clamp(gap // 10, 1, 300),
            accuracy=_clamp(gap // 100, 1, 60),
            # a retry comes well before the next scheduled run
            restart_delay=_clamp(gap // 5, 5, 120),
            start_limit_burst=math.ceil(3600 / gap) + 3,
        )


@dataclass(frozen=True)
class UnitSet:
    """The unit files (and drop-ins) to install, by their path relative to the unit dir."""

    files: Mapping[str, str]

    def write(self, directory: Path) -> list[Path]:
        """Write every file below `directory` (drop-in folders included); returns the paths."""
        written = []
        for name, text in self.files.items():
            path = directory / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            written.append(path)
        return written

    @property
    def timers(self) -> list[str]:
        """The timer units among the files."""
        return [name for name in self.files if name.endswith(".timer")]


def check_instance(name: str) -> None:
    """InputError unless `name` can be a unit instance and an env file name (a-z, 0-9, _ -)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", name):
        raise InputError(
            f"--instance {name!r} is not a group name",
            hint="use letters, digits, '_' and '-' (it names /etc/marketdata/NAME.env)",
        )


def render_units(
    cron: Cron, executable: Path, *, instance: str | None = None, env_file: Path = SYSTEM_ENV_FILE
) -> UnitSet:
    """Every unit for this executable and schedule; with `instance`, the drop-ins that give
    `marketdata-ingest@INSTANCE` its own schedule.

    Args:
        cron: the ingestion schedule.
        executable: the absolute path of the `marketdata` command the units run.
        instance: a group of markets with its own env file (/etc/marketdata/INSTANCE.env).
        env_file: the env file every unit reads.
    """
    timing = Timing.of(cron)
    exe = str(executable)
    files = {
        f"{INGEST}.service": _ingest_service(exe, timing, env_file, instance=False),
        f"{INGEST}.timer": _ingest_timer(timing, cron, instance=False),
        f"{INGEST}@.service": _ingest_service(exe, timing, env_file, instance=True),
        f"{INGEST}@.timer": _ingest_timer(timing, cron, instance=True),
        f"{ALERT}.service": _alert_service(exe, env_file),
        "marketdata-replay@.service": _replay_service(exe, env_file),
        f"{MAINTENANCE}.service": _maintenance_service(exe, env_file),
        f"{MAINTENANCE}.timer": _maintenance_timer(),
        f"{WORKER}.service": _worker_service(exe, env_file),
    }
    if instance is not None:
        files[f"{INGEST}@{instance}.timer.d/schedule.conf"] = _unit_file(
            [f"# {instance}: cron {cron.text}"],
            [("Timer", [("OnCalendar", ""), *_calendar_lines(timing)])],
        )
        files[f"{INGEST}@{instance}.service.d/schedule.conf"] = _unit_file(
            [f"# {instance}: restarts sized for cron {cron.text}"],
            [
                ("Unit", _start_limit(timing)),
                ("Service", [("RestartSec", f"{timing.restart_delay}s")]),
            ],
        )
    return UnitSet(files)


def _ingest_service(exe: str, timing: Timing, env_file: Path, *, instance: bool) -> str:
    what = "markets of group %i" if instance else "markets"
    env_files: list[str | tuple[str, str]] = [("EnvironmentFile", f"-{env_file}")]
    if instance:
        env_files += [
            "# the group's own settings (symbols, provider, schedule) override the common ones",
            ("EnvironmentFile", f"{env_file.parent}/%i.env"),
        ]
    header = (
        [
            "# Ingest new candles of one group of markets, whose settings are in",
            f"# {env_file.parent}/GROUP.env; started by {INGEST}@GROUP.timer.",
        ]
        if instance
        else [f"# Ingest new candles; started by {INGEST}.timer."]
    )
    return _unit_file(
        header,
        [
            (
                "Unit",
                [
                    ("Description", f"marketdata: ingest new candles of the {what}"),
                    ("Wants", "network-online.target"),
                    ("After", "network-online.target postgresql.service redis-server.service"),
                    "# failures the program could not report itself (killed, out of memory)",
                    ("OnFailure", f"{ALERT}%n.service"),
                    *_start_limit(timing),
                ],
            ),
            (
                "Service",
                [
                    ("Type", "oneshot"),
                    *env_files,
                    ("ExecStart", f"{exe} ingest --trigger timer"),
                    "# refresh the metrics textfile after every run, whatever its outcome",
                    ("ExecStopPost", f"-{exe} metrics --textfile {METRICS_TEXTFILE}"),
                    ("RuntimeDirectory", METRICS_TEXTFILE.parent.name),
                    ("RuntimeDirectoryMode", "0755"),
                    ("RuntimeDirectoryPreserve", "yes"),
                    "# a run that fails outright is retried after a pause; bad input (2) and a",
                    "# partial run (3) are not: the next scheduled run tries those pairs again",
                    ("Restart", "on-failure"),
                    ("RestartSec", f"{timing.restart_delay}s"),
                    ("RestartPreventExitStatus", NO_RESTART_EXIT_CODES),
                    "# oneshot services have no start timeout unless given one",
                    ("TimeoutStartSec", "40min"),
                    "# SIGTERM: the pair in flight is rolled back and the run recorded",
                    ("TimeoutStopSec", "90s"),
                    *SANDBOX,
                ],
            ),
        ],
    )


def _start_limit(timing: Timing) -> list[str | tuple[str, str]]:
    return [
        "# [Unit] is where systemd reads the start limit: scheduled starts plus three retries",
        "# an hour; past it the unit fails (and alerts) instead of restarting in a storm",
        ("StartLimitIntervalSec", "1h"),
        ("StartLimitBurst", str(timing.start_limit_burst)),
    ]


def _calendar_lines(timing: Timing) -> list[str | tuple[str, str]]:
    return [
        *(("OnCalendar", value) for value in timing.on_calendar),
        ("RandomizedDelaySec", f"{timing.randomized_delay}s"),
        ("FixedRandomDelay", "yes"),
        ("AccuracySec", f"{timing.accuracy}s"),
    ]


def _ingest_timer(timing: Timing, cron: Cron, *, instance: bool) -> str:
    what = " of group %i" if instance else ""
    return _unit_file(
        [
            f"# cron {cron.text}; a run missed while the machine was off starts once at boot.",
            *(
                ["# A group's own schedule is a drop-in: `marketdata schedule render --instance`."]
                if instance
                else []
            ),
        ],
        [
            ("Unit", [("Description", f"marketdata: ingestion schedule{what}")]),
            ("Timer", [*_calendar_lines(timing), ("Persistent", "yes")]),
            ("Install", [("WantedBy", "timers.target")]),
        ],
    )


def _alert_service(exe: str, env_file: Path) -> str:
    return _unit_file(
        [
            "# Started by OnFailure= of the other units with the failed unit as instance:",
            "# a critical alert for failures the program could not report itself.",
        ],
        [
            ("Unit", [("Description", "marketdata: alert that %i failed")]),
            (
                "Service",
                [
                    ("Type", "oneshot"),
                    ("EnvironmentFile", f"-{env_file}"),
                    ("ExecStart", f"{exe} alert unit-failed %i"),
                    ("TimeoutStartSec", "2min"),
                    *SANDBOX,
                ],
            ),
        ],
    )


def _replay_service(exe: str, env_file: Path) -> str:
    return _unit_file(
        [
            "# A one-off replay in the same sandbox; the instance is the lookback in days:",
            "#   systemctl start marketdata-replay@30.service",
        ],
        [
            (
                "Unit",
                [
                    ("Description", "marketdata: replay the last %i days"),
                    ("Wants", "network-online.target"),
                    ("After", "network-online.target postgresql.service"),
                    ("OnFailure", f"{ALERT}%n.service"),
                ],
            ),
            (
                "Service",
                [
                    ("Type", "oneshot"),
                    ("EnvironmentFile", f"-{env_file}"),
                    ("ExecStart", f"{exe} replay --lookback-days %i"),
                    ("TimeoutStartSec", "6h"),
                    ("TimeoutStopSec", "90s"),
                    *SANDBOX,
                ],
            ),
        ],
    )


def _worker_service(exe: str, env_file: Path) -> str:
    return _unit_file(
        [
            "# One per host of a worker fleet (PostgreSQL): runs ingestion jobs from the queue and",
            "# defers each tick on INGESTION_CRON_EXPRESSION once for the whole fleet, so the",
            f"# hosts need no {INGEST}.timer (disable it where this runs).",
        ],
        [
            (
                "Unit",
                [
                    ("Description", "marketdata: ingestion worker of a fleet"),
                    ("Wants", "network-online.target"),
                    ("After", "network-online.target postgresql.service redis-server.service"),
                    ("OnFailure", f"{ALERT}%n.service"),
                    "# a restart storm (a bad setting) stops after ten in ten minutes, and alerts",
                    ("StartLimitIntervalSec", "10min"),
                    ("StartLimitBurst", "10"),
                ],
            ),
            (
                "Service",
                [
                    ("Type", "exec"),
                    ("EnvironmentFile", f"-{env_file}"),
                    ("ExecStart", f"{exe} worker"),
                    ("Restart", "always"),
                    ("RestartSec", "5s"),
                    "# SIGTERM: no new jobs, the pairs in flight finish; past the timeout systemd",
                    "# kills it and another worker takes those jobs after WORKER_STALL_SECONDS",
                    ("TimeoutStopSec", "90s"),
                    *SANDBOX,
                ],
            ),
        ],
    )


def _maintenance_service(exe: str, env_file: Path) -> str:
    return _unit_file(
        ["# Retention and upkeep of the database; started by marketdata-maintenance.timer."],
        [
            (
                "Unit",
                [
                    ("Description", "marketdata: database maintenance"),
                    ("After", "network-online.target postgresql.service"),
                    ("OnFailure", f"{ALERT}%n.service"),
                ],
            ),
            (
                "Service",
                [
                    ("Type", "oneshot"),
                    ("EnvironmentFile", f"-{env_file}"),
                    "# drop what RETENTION_* no longer keeps, then vacuum/analyze what changed",
                    ("ExecStart", f"{exe} db prune"),
                    ("ExecStart", f"{exe} db maintain"),
                    ("TimeoutStartSec", "2h"),
                    ("TimeoutStopSec", "90s"),
                    *SANDBOX,
                ],
            ),
        ],
    )


def _maintenance_timer() -> str:
    return _unit_file(
        ["# Daily, away from the ingestion runs' busiest minutes."],
        [
            ("Unit", [("Description", "marketdata: daily database maintenance")]),
            (
                "Timer",
                [
                    ("OnCalendar", MAINTENANCE_CALENDAR),
                    ("RandomizedDelaySec", "30min"),
                    ("AccuracySec", "1min"),
                    ("Persistent", "yes"),
                ],
            ),
            ("Install", [("WantedBy", "timers.target")]),
        ],
    )


def _unit_file(header: Iterable[str], sections: Iterable[tuple[str, Lines]]) -> str:
    out = [
        *header,
        "# Rendered by `marketdata schedule render`: change it with a drop-in (systemctl edit).",
    ]
    for name, lines in sections:
        out += ["", f"[{name}]"]
        for line in lines:
            out.append(line if isinstance(line, str) else f"{line[0]}={line[1]}")
    return "\n".join(out).lstrip("\n") + "\n"


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))
