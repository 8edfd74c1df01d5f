"""Under systemd the tool keeps its files in the directories the unit gave it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from marketdata.config import app_dir, load_settings


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


def test_the_embedded_database_is_created_in_state_directory(cli, tmp_path, monkeypatch):
    state = tmp_path / "var-lib-marketdata"
    state.mkdir()
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    result = cli(
        ["ingest", "-p", "synthetic", "-s", "BTC-USD", "--lookback-days", "3"],
        STATE_DIRECTORY=str(state),
    )
    assert result.returncode == 0, result.stderr
    assert (state / "marketdata.sqlite3").is_file()
    assert not (tmp_path / "data").exists()


_LOAD = """
import pathlib, sys
import marketdata.config as config
config.SYSTEM_ENV_FILE = pathlib.Path(sys.argv[1])
environ = {"INGESTION_SYMBOLS": "AAPL", **({"INVOCATION_ID": "1"} if sys.argv[2] == "1" else {})}
try:
    loaded = config.load_settings(environ=environ)
except config.ConfigError as exc:
    sys.exit(exc.one_line())
print(loaded.settings.ingestion_symbols, [str(p) for p in loaded.env_files])
"""


def _load_without_capabilities(env_file: Path, under_systemd: bool, cwd: Path):
    """Load settings in a child that is root without capabilities, so a mode-0000 file is as
    unreadable to it as a root-only env file is to the units' dynamic user."""
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed"
    return subprocess.run(
        [
            *(setpriv, "--bounding-set=-all", "--inh-caps=-all", sys.executable, "-c", _LOAD),
            *(str(env_file), "1" if under_systemd else "0"),
        ],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
    )


def test_a_service_skips_the_system_env_file_it_cannot_read_as_systemd_read_it(tmp_path):
    env_file = tmp_path / "marketdata.env"
    env_file.write_text("INGESTION_SYMBOLS=BTC-USD\n")
    env_file.chmod(0)
    result = _load_without_capabilities(env_file, under_systemd=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['AAPL'] []"


def test_an_unreadable_env_file_outside_systemd_is_a_usage_error(tmp_path):
    env_file = tmp_path / "marketdata.env"
    env_file.write_text("INGESTION_SYMBOLS=BTC-USD\n")
    env_file.chmod(0)
    result = _load_without_capabilities(env_file, under_systemd=False, cwd=tmp_path)
    assert result.returncode == 1
    assert f"cannot read env file {env_file}: Permission denied" in result.stderr
