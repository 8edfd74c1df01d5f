"""`python -m tests.drills [WORD ...]` (what `make drills` runs): fault drills against real
services. With words, only the drills whose key holds one of them run (`provider`, `sigkill`,
`timeout`...; `--list` prints the keys).

Each drill runs `marketdata ingest` as a real process against a fresh database (PostgreSQL at
TEST_DATABASE_URL, or an SQLite file) and fake providers on loopback, injects one fault
(signals, a PostgreSQL session killed around a commit, a frozen or busy database, a held lock,
a provider misbehaving, an unwritable cache directory, ...), then, where the fault cost data,
runs the same command once more, as the next timer would, and compares what is stored with
what the provider has, candle for candle. It prints one table row per drill; the exit status
is 1 when any drill did not see what it expected.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.drills import busy, providers, runs
from tests.drills.common import Row, World, log
from tests.fakes.coinbase import FakeCoinbase
from tests.fakes.kraken import FakeKraken
from tests.fakes.server import serve

Drill = Callable[[World], Row]


def every_drill() -> list[tuple[str, Drill]]:
    """All the drills, keyed, in table order."""
    return [
        ("clean-sqlite", lambda w: runs.clean(w, "sqlite")),
        ("clean-postgresql", lambda w: runs.clean(w, "postgresql")),
        ("killed-after-commit", lambda w: runs.killed_session(w, after_commit=True)),
        ("killed-before-commit", lambda w: runs.killed_session(w, after_commit=False)),
        ("sigterm-sqlite", lambda w: runs.signalled(w, "sqlite", signal.SIGTERM)),
        ("sigterm-postgresql", lambda w: runs.signalled(w, "postgresql", signal.SIGTERM)),
        ("sigint-sqlite", lambda w: runs.signalled(w, "sqlite", signal.SIGINT)),
        ("sigkill-sqlite", lambda w: runs.sigkill(w, "sqlite")),
        ("sigkill-postgresql", lambda w: runs.sigkill(w, "postgresql")),
        ("frozen-postgresql", runs.frozen_database),
        ("unreachable-postgresql", runs.unreachable),
        ("locked-pair", runs.locked_pair),
        ("concurrent-2-postgresql", lambda w: runs.concurrent(w, "postgresql", 2)),
        ("concurrent-4-postgresql", lambda w: runs.concurrent(w, "postgresql", 4)),
        ("concurrent-2-sqlite", lambda w: runs.concurrent(w, "sqlite", 2)),
        ("concurrent-4-sqlite", lambda w: runs.concurrent(w, "sqlite", 4)),
        *busy.drills(),
        *providers.drills(),
    ]


def render(rows: list[Row]) -> str:
    """The markdown table README quotes."""
    head = ["scenario", "expected", "observed", "exit code", "rows lost", "rows duplicated"]
    head.append("verdict")
    body = [
        [
            r.scenario,
            r.expected,
            r.observed.replace("|", "/"),
            r.exit_code,
            "-" if r.lost is None else str(r.lost),
            "-" if r.duplicated is None else str(r.duplicated),
            "ok" if r.ok else "UNEXPECTED",
        ]
        for r in rows
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def run_one(world: World, drill: Drill) -> Row:
    """One drill on a fresh market; a drill that broke is a row too."""
    world.market()
    started = time.monotonic()
    try:
        row = drill(world)
    except Exception as exc:  # noqa: BLE001 - reported in the table, the others still run
        row = Row(getattr(drill, "__name__", "drill"), "", f"broke: {exc!r}")
    log(f"{row.scenario}: {'ok' if row.ok else 'UNEXPECTED'} ({time.monotonic() - started:.1f} s)")
    return row


def main(words: list[str]) -> int:
    """Run the drills (those whose key holds one of `words`, if any); print the table; 1 when
    a drill saw something unexpected."""
    chosen = [drill for key, drill in every_drill() if not words or any(w in key for w in words)]
    if words == ["--list"]:
        print("\n".join(key for key, _ in every_drill()))
        return 0
    server_url = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    fake, kraken = FakeCoinbase(), FakeKraken(now=int(time.time()))
    with (
        tempfile.TemporaryDirectory(prefix="marketdata-drills-") as scratch,
        serve(fake) as http,
        serve(kraken) as kraken_http,
    ):
        world = World(server_url, Path(scratch), fake, http, kraken, kraken_http)
        try:
            rows = [run_one(world, drill) for drill in chosen]
        finally:
            world.drop_all()
    print(render(rows))
    return 0 if rows and all(r.ok for r in rows) else 1


if __name__ == "__main__":
    threading.excepthook = lambda args: None  # the proxy's pipes end noisily on purpose
    sys.exit(main(sys.argv[1:]))
