"""Operations tests: systemd's own tools, and the installed command run like the CLI tests."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

import pytest

from tests.cli.conftest import env
from tests.conftest import service_missing

__all__ = ["cli", "env", "systemd_analyze"]


@pytest.fixture(scope="session")
def systemd_analyze() -> str:
    """The systemd-analyze binary (.ci/run installs it; a laptop without it skips)."""
    path = shutil.which("systemd-analyze")
    if path is None:
        service_missing("systemd-analyze", "not installed: apt-get install systemd")
    assert path is not None
    return path


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """Run `marketdata ARGS` in this process (start-up costs a second in a subprocess), with
    environment variables set for the rest of the test; the exit code, stdout and stderr a
    subprocess would give."""
    from marketdata.cli.main import run

    def invoke(args: list[str], **environ: str) -> Result:
        for name, value in environ.items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        try:
            run(args)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return invoke
