"""`schedule render|install|status` as an operator runs them."""

from __future__ import annotations

import json

import pytest

from marketdata.config import app_dir
from tests.cli.helpers import one_error_line, run
from tests.fakes.systemctl import FakeSystemctl
from tests.ops.test_units import MARKETDATA

NOT_BOOTED = "System has not been booted with systemd as init system (PID 1).\n"


@pytest.fixture
def systemctl(tmp_path, monkeypatch) -> FakeSystemctl:
    fake = FakeSystemctl(tmp_path / "bin")
    monkeypatch.setenv("PATH", fake.env({"PATH": str(tmp_path / "empty")})["PATH"])
    return fake


def test_render_writes_units_whose_timer_follows_the_cron_setting(cli, tmp_path):
    out = tmp_path / "out"
    result = cli(["schedule", "render", "-o", str(out)], INGESTION_CRON_EXPRESSION="30 2 * * 1-5")
    assert result.returncode == 0, result.stderr
    timer = (out / "marketdata-ingest.timer").read_text()
    assert "OnCalendar=Mon..Fri *-*-* 02:30:00\n" in timer
    assert (out / "marketdata.env.example").is_file()
    service = (out / "marketdata-ingest.service").read_text()
    assert f"ExecStart={MARKETDATA} ingest --trigger timer" in service


def test_render_refuses_a_bad_cron_in_one_line_naming_the_field(env, tmp_path):
    result = run(["schedule", "render", "--cron", "*/15 * * 13 *", "-o", str(tmp_path / "o")], env)
    assert result.returncode == 2
    line = one_error_line(result)
    assert line == (
        'marketdata: error: --cron "*/15 * * 13 *": the month field "13" is out of range: '
        "13 is not in 1-12"
    )
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("cron", "field"),
    [("@reboot", "@reboot is not a calendar time"), ("0 0 30 2 *", "never fire")],
)
def test_render_refuses_a_cron_systemd_cannot_express(cron, field, cli):
    result = cli(["schedule", "render", "--cron", cron])
    assert result.returncode == 2
    assert field in result.stderr and result.stdout == ""


def test_a_bad_cron_setting_is_named_as_the_setting(cli):
    result = cli(["schedule", "render"], INGESTION_CRON_EXPRESSION="*/15 * * *")
    assert result.returncode == 2
    assert 'INGESTION_CRON_EXPRESSION "*/15 * * *" has 4 fields' in result.stderr


def test_install_dry_run_prints_each_action_and_changes_nothing(cli, tmp_path, systemctl):
    units = tmp_path / "units"
    args = ["schedule", "install", "--dry-run", "--unit-dir", str(units)]
    result = cli([*args, "--instance", "equities"])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"write {units}/marketdata-ingest.service" in lines
    assert f"write {units}/marketdata-ingest@equities.timer.d/schedule.conf" in lines
    assert lines[-2:] == [
        "run systemctl daemon-reload",
        "run systemctl enable --now marketdata-ingest@equities.timer marketdata-maintenance.timer",
    ]
    assert not units.exists()
    assert systemctl.calls() == []


def test_install_writes_the_units_reloads_and_enables_then_keeps_identical_files(
    cli, tmp_path, systemctl
):
    units = tmp_path / "units"
    args = ["schedule", "install", "--unit-dir", str(units), "--json"]
    first = cli(args)
    assert first.returncode == 0, first.stderr
    assert (units / "marketdata-ingest.timer").is_file()
    assert systemctl.calls() == [
        ["daemon-reload"],
        ["enable", "--now", "marketdata-ingest.timer", "marketdata-maintenance.timer"],
    ]
    again = cli(args)
    kinds = {a["action"] for a in json.loads(again.stdout)["actions"] if a["action"] != "run"}
    assert kinds == {"unchanged"}


def test_install_refuses_an_executable_the_sandbox_hides_and_a_failing_systemctl(
    cli, tmp_path, systemctl
):
    home = ["--exec", "/home/me/venv/bin/marketdata"]
    hidden = cli(["schedule", "install", "--dry-run", *home])
    assert hidden.returncode == 2
    assert "under /home, which the units' sandbox hides" in hidden.stderr
    review = cli(["schedule", "render", *home])
    assert (
        review.returncode == 0 and "warning: /home/me/venv/bin/marketdata is under" in review.stderr
    )
    systemctl.refuse(NOT_BOOTED)
    refused = cli(["schedule", "install", "--unit-dir", str(tmp_path / "u")])
    assert refused.returncode == 1
    assert (
        "systemctl daemon-reload failed (exit 1)\nhint: System has not been booted"
        in refused.stderr
    )


def _one_run(cli) -> None:
    result = cli(["ingest", "-p", "synthetic", "-s", "BTC-USD", "--lookback-days", "3"])
    assert result.returncode == 0, result.stderr


def test_status_shows_the_timers_beside_the_runs_in_the_database(cli, systemctl):
    _one_run(cli)
    systemctl.unit(
        "marketdata-ingest.timer",
        LoadState="loaded",
        ActiveState="active",
        UnitFileState="enabled",
        LastTriggerUSec="@1704067200",
        NextElapseUSecRealtime="@1704068100",
        Unit="marketdata-ingest.service",
    )
    systemctl.unit("marketdata-ingest.service", Result="exit-code", ExecMainStatus="3")
    result = cli(["schedule", "status", "--json"])
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    ingest, maintenance = status["systemd"]["timers"]
    assert ingest["last_run"] == "2024-01-01T00:00:00Z"
    assert ingest["next_run"] == "2024-01-01T00:15:00Z"
    assert (ingest["last_result"], ingest["last_exit_status"]) == ("exit-code", 3)
    assert maintenance["state"] == "not installed"
    [stored] = status["runs"]
    assert (stored["status"], stored["trigger"]) == ("success", "manual")
    table = cli(["schedule", "status"], COLUMNS="200")
    assert "2024-01-01T00:15:00Z" in table.stdout and "exit-code (exit 3)" in table.stdout


def test_status_without_systemd_still_shows_the_runs(cli, tmp_path, systemctl, monkeypatch):
    _one_run(cli)
    systemctl.refuse(NOT_BOOTED)
    result = cli(["schedule", "status"], COLUMNS="200")
    assert result.returncode == 0, result.stderr
    assert "systemd: systemctl cannot answer: System has not been booted" in result.stderr
    assert "success" in result.stdout
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    bare = cli(["schedule", "status", "--json"])
    assert json.loads(bare.stdout)["systemd"]["reason"] == "systemctl is not installed"
    assert len(json.loads(bare.stdout)["runs"]) == 1
    assert (app_dir("state") / "marketdata.sqlite3").is_file()
