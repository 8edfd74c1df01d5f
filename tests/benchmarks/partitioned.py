"""Writes into the partitioned candles table next to the same writes into the unpartitioned
one (schema 0008): the binary COPY of new rows and the overlap merge of a re-ingest."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import TypeVar

from tests.benchmarks.common import (
    BARS,
    MINUTE,
    SYMBOLS,
    Figure,
    Report,
    Server,
    backend_cpu,
    connect,
    log,
    run_cli,
)
from tests.benchmarks.loader import Loader

T = TypeVar("T")
ROUNDS = 3
TARGET = 1.10  # partitioned writes within 10% of the unpartitioned table's
# Whole months, so that the partitioned writes cross a month boundary like real ones.
START = 1_706_400_000  # 2024-01-28T00:00Z: the 10,000 bars run into February (to Feb 3)


def flat_database(server: Server, label: str) -> str:
    """A database whose candles table is the plain one (migrated, then down to 0008)."""
    url = server.create(label)
    run_cli(url, ["db", "downgrade", "0008"])
    return url


def _timed(url: str, work: Callable[[], T]) -> tuple[T, tuple[float, float | None]]:
    """(what `work` returned, (wall seconds, CPU seconds of this process and the database's
    server processes, None if those cannot be seen))."""
    server_before, client_before = backend_cpu(url), time.process_time()
    started = time.perf_counter()
    result = work()
    seconds = time.perf_counter() - started
    client, server_after = time.process_time() - client_before, backend_cpu(url)
    if server_before is None or server_after is None:
        return result, (seconds, None)
    return result, (seconds, client + server_after - server_before)


def _cpu_ratio(
    part: list[tuple[float, float | None]], flat: list[tuple[float, float | None]]
) -> str:
    """', CPU 0.97x' (best of each side's CPU seconds), or '' when they were not seen."""
    part_cpu = [cpu for _, cpu in part if cpu is not None]
    flat_cpu = [cpu for _, cpu in flat if cpu is not None]
    if not part_cpu or not flat_cpu:
        return ""
    return f"; CPU {min(part_cpu) / min(flat_cpu):.3f}x"


def run(server: Server, report: Report) -> None:
    """First write and overlap re-write of 1,000,000 1m candles, both tables, alternating."""
    urls = {"partitioned": server.create("part"), "unpartitioned": flat_database(server, "flat")}
    end = START + BARS * MINUTE
    first: dict[str, list[tuple[float, float | None]]] = {name: [] for name in urls}
    again: dict[str, list[tuple[float, float | None]]] = {name: [] for name in urls}
    rows = 0
    for round_ in range(1, ROUNDS + 1):
        for name, url in urls.items():  # alternate, so drift hits both alike
            log(f"write path into the {name} table, round {round_} ...")
            with connect(url) as conn:
                conn.execute("TRUNCATE candles")
                conn.execute("CHECKPOINT")
            loader = Loader(url, derive=False)
            try:
                with loader.engine.connect():  # its connection is open while CPU is counted
                    pass
                write = partial(loader.load, SYMBOLS, START, end)
                (rows, _), figures = _timed(url, write)
                first[name].append(figures)
                again[name].append(_timed(url, write)[1])  # the same again: all overlap
            finally:
                loader.close()
    for label, times in (("first write", first), ("overlap re-write", again)):
        part, flat = min(times["partitioned"]), min(times["unpartitioned"])
        ratio = part[0] / flat[0]
        cpu = _cpu_ratio(times["partitioned"], times["unpartitioned"])
        report.add(
            Figure(
                f"partitioned {label}",
                part[0],
                rows,
                f"{ratio:.3f} flat{cpu}",
                target=f"<= {TARGET} flat",
                passed=ratio <= TARGET,
            )
        )
        report.add(Figure(f"  unpartitioned {label}", flat[0], rows))
    report.note(
        "partitioned vs flat: the same 1,000,000 1m candles (100 symbols x 10,000 bars from "
        "2024-01-28, across a month boundary) through the write path (pg_copy COPY of new rows; "
        "then the same again, all overlap: the staged merge) into the partitioned table and "
        f"into the unpartitioned one of schema 0008; best of {ROUNDS} alternating rounds, "
        "in-process (no CLI start-up); 'flat' = time over the unpartitioned table's; CPU: "
        "the same ratio of CPU seconds (this process and the server processes of each "
        "database), which other load on the machine disturbs less than wall time"
    )
