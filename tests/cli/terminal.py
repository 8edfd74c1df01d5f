"""Running `marketdata` as a person at a terminal or a script in a pipe would, quickly.

Each run is a forked copy of the test process (the CLI is already imported, so a run costs
milliseconds, not an interpreter start): piped, stdout and stderr go to files; at a
terminal, both go to a real pseudo-terminal of the given size, and what a person would see
at the end is read back through a terminal emulator (pyte). Several runs go at once.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import sys
import tempfile
import termios
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyte

SCREEN_ROWS = 400  # tall enough that nothing scrolls away: the whole output stays on screen


@dataclass
class Run:
    """One command to run: its arguments, environment and where its output goes."""

    args: list[str]
    env: dict[str, str]
    columns: int | None = None  # None: piped; a number: a terminal that wide
    code: int | None = None
    stdout: str = ""
    stderr: str = ""
    screen: list[str] = field(default_factory=list)  # the terminal's final screen, per line
    _pid: int = 0
    _fd: int = -1
    _raw: bytes = b""
    _files: tuple[Path, Path] | None = None

    @property
    def shown(self) -> str:
        """The terminal's final screen as text (trailing blanks dropped)."""
        return "\n".join(self.screen).rstrip()

    def __str__(self) -> str:
        where = "piped" if self.columns is None else f"at {self.columns} columns"
        text = self.shown if self.columns else f"stdout:\n{self.stdout}\nstderr:\n{self.stderr}"
        return f"marketdata {' '.join(self.args)} ({where}) exit {self.code}\n{text}"

    __repr__ = __str__  # what an assertion shows


def home_env(home: Path) -> dict[str, str]:
    """A clean environment whose home, data, cache and state live under `home`."""
    return {
        "HOME": str(home),
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CACHE_HOME": str(home / "cache"),
        "XDG_STATE_HOME": str(home / "state"),
    }


def run_all(runs: list[Run], *, parallel: int = 4, timeout: float = 60) -> list[Run]:
    """Run every `Run`, `parallel` at a time; fills in code, output and screen."""
    pending, active = list(runs), []
    while pending or active:
        while pending and len(active) < parallel:
            run = pending.pop(0)
            _start(run)
            run_deadline = time.monotonic() + timeout
            active.append((run, run_deadline))
        fds = [r._fd for r, _ in active if r._fd >= 0]
        ready = select.select(fds, [], [], 0.05)[0] if fds else time.sleep(0.01) or []
        for run, deadline in list(active):
            if run._fd in ready:
                _read(run)
            if _finished(run):
                active.remove((run, deadline))
            elif time.monotonic() > deadline:
                os.kill(run._pid, signal.SIGKILL)
                os.waitpid(run._pid, 0)
                raise AssertionError(f"timed out after {timeout}s: {run}")
    return runs


def _start(run: Run) -> None:
    env = {k: v for k, v in run.env.items() if k not in ("COLUMNS", "LINES")}
    if run.columns is None:
        handle, out_name = tempfile.mkstemp(prefix="contract-out-")
        os.close(handle)
        handle, err_name = tempfile.mkstemp(prefix="contract-err-")
        os.close(handle)
        run._files = (Path(out_name), Path(err_name))
        pid = os.fork()
        if pid == 0:
            out = os.open(out_name, os.O_WRONLY)
            err = os.open(err_name, os.O_WRONLY)
            null = os.open(os.devnull, os.O_RDONLY)
            _child(run.args, {**env, "TERM": "dumb"}, stdin=null, stdout=out, stderr=err)
        run._pid = pid
        return
    pid, fd = pty.fork()
    if pid == 0:
        size = struct.pack("HHHH", SCREEN_ROWS, run.columns, 0, 0)
        fcntl.ioctl(0, termios.TIOCSWINSZ, size)
        _child(run.args, {**env, "TERM": "xterm-256color"}, stdin=0, stdout=1, stderr=2)
    run._pid, run._fd = pid, fd


def _child(args: list[str], env: dict[str, str], *, stdin: int, stdout: int, stderr: int) -> None:
    """In the forked copy: stdio on the given descriptors, the environment, the command; exit."""
    code = 70
    try:
        os.dup2(stdin, 0)
        os.dup2(stdout, 1)
        os.dup2(stderr, 2)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 - lives as long as the process
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        os.environ.clear()
        os.environ.update(env)
        os.chdir(env.get("HOME", "/"))
        from marketdata.cli import render
        from marketdata.cli.main import run
        from marketdata.cli.state import OPTIONS, GlobalOptions

        for name, value in vars(GlobalOptions()).items():
            setattr(OPTIONS, name, value)
        render.reset()
        render.quiet = False
        run(args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - a child must never return into pytest
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _read(run: Run) -> None:
    try:
        chunk = os.read(run._fd, 65536)
    except OSError:  # EIO: the child closed the terminal
        chunk = b""
    if chunk:
        run._raw += chunk
    else:
        os.close(run._fd)
        run._fd = -1


def _finished(run: Run) -> bool:
    if run._fd >= 0:
        return False
    pid, status = os.waitpid(run._pid, os.WNOHANG)
    if pid == 0:
        return False
    run.code = os.waitstatus_to_exitcode(status)
    if run._files is not None:
        out, err = run._files
        run.stdout, run.stderr = out.read_text(), err.read_text()
        out.unlink()
        err.unlink()
    else:
        screen = pyte.Screen(run.columns or 80, SCREEN_ROWS)
        stream = pyte.ByteStream(screen)
        stream.feed(run._raw)  # the terminal turned each newline into CR LF already
        run.screen = [line.rstrip() for line in screen.display]
    return True
