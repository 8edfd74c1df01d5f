"""Running the installed command as a user would, for the CLI tests."""

from __future__ import annotations

import subprocess
import sys


def run(args, env, *, cwd=None, timeout=60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "marketdata", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_error_line(result) -> str:
    """The error line, with its hint (the line after it, if any) joined as `: hint`."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [i for i, line in enumerate(lines) if line.startswith("marketdata: error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    hints = [line for line in lines if line.startswith("hint: ")]
    assert len(hints) <= 1, result.stderr
    if hints:
        assert lines[errors[0] + 1] == hints[0], result.stderr
        return f"{lines[errors[0]]}: {hints[0].removeprefix('hint: ')}"
    return lines[errors[0]]
