"""An interactive client on the configured database: psql, or sqlite3 for the embedded file.

A password never goes on the client's command line (other users can read it in ps): psql
gets it from a passfile of its own, mode 0600, removed when the shell ends.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from marketdata.config import environment_with
from marketdata.errors import InputError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from marketdata.storage.engine import Target

CLIENTS = {"postgresql": ("psql", "postgresql-client"), "sqlite": ("sqlite3", "sqlite3")}


@dataclass(frozen=True)
class ShellCommand:
    """The client's arguments (no password in them) and the password to hand it aside."""

    argv: list[str]
    password: str | None = field(default=None, repr=False)


def shell_command(target: Target, extra: Sequence[str] = ()) -> ShellCommand:
    """The client command for `target`, with `extra` arguments passed on to it."""
    name, package = CLIENTS[target.dialect]
    binary = shutil.which(name)
    if binary is None:
        raise InputError(f"{name} is not installed", hint=f"install the {package} package")
    url = target.url
    if target.dialect == "sqlite":
        if not url.database or not Path(url.database).is_file():
            raise InputError(
                f"the database file {target.shown} does not exist yet",
                hint="run `marketdata db upgrade` or an ingest first",
            )
        return ShellCommand([binary, url.database, *extra])
    from sqlalchemy.engine import URL

    # built anew: URL.set() keeps a password it is given None for
    bare = URL.create(
        "postgresql",
        username=url.username,
        host=url.host,
        port=url.port,
        database=url.database,
        query=url.query,
    )
    conninfo = bare.render_as_string(hide_password=False)
    return ShellCommand([binary, conninfo, *extra], url.password)


def open_shell(target: Target, extra: Sequence[str] = ()) -> int:
    """Run the client in the foreground and return its exit code. Ctrl-C belongs to the
    client (it cancels a query); SIGTERM is passed on to it."""
    command = shell_command(target, extra)
    with _passfile(command.password) as passfile:
        env = environment_with({"PGPASSFILE": str(passfile)} if passfile else {})
        child = subprocess.Popen(command.argv, env=env)  # noqa: S603 - no shell
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        previous_term = signal.signal(
            signal.SIGTERM, lambda signum, _frame: child.send_signal(signum)
        )
        try:
            return child.wait()
        finally:
            signal.signal(signal.SIGINT, previous_int)
            signal.signal(signal.SIGTERM, previous_term)


@contextmanager
def _passfile(password: str | None) -> Iterator[Path | None]:
    """A libpq password file matching any server, readable by this user only."""
    if password is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="marketdata-") as directory:
        path = Path(directory) / "pgpass"
        escaped = password.replace("\\", "\\\\").replace(":", "\\:")
        path.touch(mode=0o600)
        path.write_text(f"*:*:*:*:{escaped}\n")
        yield path
