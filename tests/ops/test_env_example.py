"""deploy/marketdata.env.example documents every setting with its true default."""

from __future__ import annotations

import re

from marketdata.config import Settings, load_settings
from marketdata.env_example import DESCRIPTIONS, env_example
from tests.cli.helpers import run
from tests.ops.test_units import DEPLOY

ASSIGNMENT = re.compile(r"^#([A-Z0-9_]+)=(.*)$", re.MULTILINE)


def test_every_setting_is_described_and_nothing_else():
    assert sorted(DESCRIPTIONS) == sorted(Settings.model_fields)


def test_the_example_names_every_setting_once_in_the_models_order():
    names = [name for name, _ in ASSIGNMENT.findall(env_example())]
    assert names == [name.upper() for name in Settings.model_fields]


def test_uncommenting_every_default_gives_the_default_settings(tmp_path):
    text = (DEPLOY / "marketdata.env.example").read_text()
    uncommented = ASSIGNMENT.sub(lambda m: f"{m[1]}={m[2]}" if m[2] else m[0], text)
    assert uncommented.count("\nINGESTION_CRON_EXPRESSION=") == 1
    env_file = tmp_path / "marketdata.env"
    env_file.write_text(uncommented)
    loaded = load_settings(env_file=env_file, environ={})
    from_file = {name for name, source in loaded.sources.items() if source.startswith("file")}
    assert len(from_file) >= 20
    assert loaded.settings == load_settings(environ={}).settings


def test_config_example_prints_the_file(env):
    result = run(["config", "example"], env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == env_example()
