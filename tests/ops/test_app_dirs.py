"""Under systemd the tool keeps its files in the directories the unit gave it."""

from __future__ import annotations

from pathlib import Path

from marketdata.config import app_dir, load_settings
from tests.cli.helpers import run


def test_systemd_directories_win_over_the_users_directories(tmp_path):
    environ = {
        "STATE_DIRECTORY": str(tmp_path / "state"),
        "CACHE_DIRECTORY": f"{tmp_path / 'cache'}:{tmp_path / 'other'}",
        "LOGS_DIRECTORY": str(tmp_path / "logs"),
    }
    assert app_dir("state", environ) == tmp_path / "state"
    assert app_dir("cache", environ) == tmp_path / "cache"  # the first of several
    assert app_dir("logs", environ) == tmp_path / "logs"


def test_without_systemd_the_users_directories_are_used(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xstate"))
    assert app_dir("state", {}) == tmp_path / "data" / "marketdata"
    assert app_dir("cache", {}) == tmp_path / "cache" / "marketdata"
    assert app_dir("logs", {}) == tmp_path / "xstate" / "marketdata" / "log"
    assert app_dir("state", {"STATE_DIRECTORY": ""}) == tmp_path / "data" / "marketdata"


def test_log_file_defaults_into_logs_directory_and_an_explicit_one_wins(tmp_path):
    loaded = load_settings(environ={"LOGS_DIRECTORY": str(tmp_path)})
    assert loaded.settings.log_file == tmp_path / "marketdata.log"
    assert loaded.sources["log_file"] == "default (systemd)"
    assert load_settings(environ={}).settings.log_file is None
    mine = tmp_path / "mine.log"
    given = load_settings(environ={"LOGS_DIRECTORY": str(tmp_path), "LOG_FILE": str(mine)})
    assert (given.settings.log_file, given.sources["log_file"]) == (mine, "env")


def test_the_embedded_database_is_created_in_state_directory(tmp_path, env):
    state = tmp_path / "var-lib-marketdata"
    state.mkdir()
    env = {**env, "STATE_DIRECTORY": str(state)}
    result = run(
        ["ingest", "--provider", "synthetic", "--symbols", "BTC-USD", "--interval", "1d"], env
    )
    assert result.returncode == 0, result.stderr
    assert (state / "marketdata.sqlite3").is_file()
    assert not Path(env["XDG_DATA_HOME"]).exists()
