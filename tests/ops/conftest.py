"""Operations tests: systemd's own tools, and the installed command run like the CLI tests."""

from __future__ import annotations

import shutil

import pytest

from tests.cli.conftest import env
from tests.conftest import service_missing

__all__ = ["env", "systemd_analyze"]


@pytest.fixture(scope="session")
def systemd_analyze() -> str:
    """The systemd-analyze binary (.ci/run installs it; a laptop without it skips)."""
    path = shutil.which("systemd-analyze")
    if path is None:
        service_missing("systemd-analyze", "not installed: apt-get install systemd")
    assert path is not None
    return path
