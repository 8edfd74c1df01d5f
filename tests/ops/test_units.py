"""The units in deploy/: rendered from the code, hardened, and clean for systemd's checks."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from marketdata.config import Settings
from marketdata.cron import parse
from marketdata.env_example import env_example
from marketdata.systemd.units import SANDBOX, Timing, render_units

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DEPLOYED_EXECUTABLE = Path("/opt/marketdata/bin/marketdata")
DEFAULT_CRON = Settings.model_fields["ingestion_cron_expression"].default
MARKETDATA = Path(sys.executable).with_name("marketdata")  # exists: verify checks ExecStart
WORST_EXPOSURE = 2.0


def exposure(systemd_analyze: str, unit: Path) -> float:
    result = subprocess.run(
        [systemd_analyze, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert found, result.stdout + result.stderr
    return float(found.group(1))


def verify(systemd_analyze: str, unit_dir: Path, units: list[str]) -> subprocess.CompletedProcess:
    """`systemd-analyze verify`, with the directory first on the unit path (drop-ins too)."""
    return subprocess.run(
        [systemd_analyze, "verify", *units],
        capture_output=True,
        text=True,
        check=False,
        cwd=unit_dir,
        env={**os.environ, "SYSTEMD_UNIT_PATH": f"{unit_dir}:"},
    )


def instances(names) -> list[str]:
    """Unit names to verify: each file, and an instance of each template."""
    out = []
    for name in names:
        if "/" in name:
            continue
        out.append(f"./{name}")
        if name == "marketdata-alert@.service":
            out.append("marketdata-alert@marketdata-ingest@equities.service.service")
        elif name.endswith(("@.service", "@.timer")):
            stem, kind = name.split("@.")
            out.append(f"{stem}@{'30' if 'replay' in stem else 'equities'}.{kind}")
    return out


def test_deploy_holds_exactly_what_schedule_render_writes():
    units = render_units(parse(DEFAULT_CRON), DEPLOYED_EXECUTABLE)
    expected = {**units.files, "marketdata.env.example": env_example()}
    present = {p.name: p.read_text() for p in DEPLOY.iterdir()}
    assert sorted(present) == sorted(expected), "run `make deploy-files`"
    for name, text in expected.items():
        assert present[name] == text, f"deploy/{name} is stale: run `make deploy-files`"


@pytest.mark.parametrize("unit", sorted(p.name for p in DEPLOY.glob("*.service")))
def test_every_service_in_deploy_is_exposed_at_most_2(unit, systemd_analyze):
    assert exposure(systemd_analyze, DEPLOY / unit) <= WORST_EXPOSURE


def test_the_exposure_gate_catches_a_unit_without_its_sandbox(systemd_analyze, tmp_path):
    text = (DEPLOY / "marketdata-ingest.service").read_text()
    sandbox = {f"{line[0]}={line[1]}" for line in SANDBOX if isinstance(line, tuple)}
    weak = "\n".join(line for line in text.splitlines() if line not in sandbox)
    (tmp_path / "weak.service").write_text(weak + "\n")
    assert exposure(systemd_analyze, tmp_path / "weak.service") > WORST_EXPOSURE


@pytest.mark.parametrize("cron", [DEFAULT_CRON, "15 14 1 * 1", "*/10 * * * * *", "@daily"])
def test_systemd_verify_prints_nothing_for_every_unit_and_instance(cron, systemd_analyze, tmp_path):
    units = render_units(parse(cron), MARKETDATA, instance="equities")
    units.write(tmp_path)
    result = verify(systemd_analyze, tmp_path, instances(units.files))
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "")


def test_the_verify_gate_catches_a_misspelt_key_and_a_misplaced_start_limit(
    systemd_analyze, tmp_path
):
    units = render_units(parse(DEFAULT_CRON), MARKETDATA)
    units.write(tmp_path)
    service = tmp_path / "marketdata-ingest.service"
    text = service.read_text().replace("ProtectSystem=", "ProtectSytem=")
    service.write_text(text + "StartLimitIntervalSec=10min\n")  # ends up in [Service]
    result = verify(systemd_analyze, tmp_path, ["./marketdata-ingest.service"])
    assert result.returncode == 0  # why the gate is on stderr, not on the exit code
    assert "Unknown key 'ProtectSytem'" in result.stderr
    assert "Unknown key 'StartLimitIntervalSec' in section [Service]" in result.stderr


def test_a_group_gets_its_own_schedule_and_restart_limits_through_drop_ins(tmp_path):
    units = render_units(parse("30 21 * * 1-5"), MARKETDATA, instance="equities")
    timer = units.files["marketdata-ingest@equities.timer.d/schedule.conf"]
    assert "OnCalendar=\nOnCalendar=Mon..Fri *-*-* 21:30:00\n" in timer
    service = units.files["marketdata-ingest@equities.service.d/schedule.conf"]
    assert "StartLimitBurst=4" in service
    template = units.files["marketdata-ingest@.service"]
    assert "EnvironmentFile=/etc/marketdata/%i.env" in template


def test_restart_delay_and_start_limit_follow_the_schedule():
    every_minute = Timing.of(parse("* * * * *"))
    assert (every_minute.restart_delay, every_minute.start_limit_burst) == (12, 63)
    assert every_minute.randomized_delay == 6
    quarter = Timing.of(parse(DEFAULT_CRON))
    assert (quarter.restart_delay, quarter.start_limit_burst, quarter.randomized_delay) == (
        120,
        7,
        90,
    )
    weekdays = Timing.of(parse("30 2 * * 1-5"))
    assert (weekdays.shortest_gap, weekdays.start_limit_burst) == (86400, 4)


def test_services_run_the_given_executable_and_never_restart_on_bad_input_or_partial_runs():
    units = render_units(parse(DEFAULT_CRON), DEPLOYED_EXECUTABLE)
    ingest = units.files["marketdata-ingest.service"]
    assert "ExecStart=/opt/marketdata/bin/marketdata ingest --trigger timer" in ingest
    assert "RestartPreventExitStatus=2 3" in ingest
    assert "OnFailure=marketdata-alert@%n.service" in ingest
    assert "\nOnFailure=" not in units.files["marketdata-alert@.service"]  # no alert loops
    unit_section = ingest.split("[Service]")[0]
    assert "StartLimitIntervalSec=1h" in unit_section
    assert "StartLimitBurst=7" in unit_section
