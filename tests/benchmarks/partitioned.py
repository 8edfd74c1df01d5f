"""Writes into the partitioned candles table next to the same writes into the unpartitioned
one (schema 0008): the binary COPY of new rows and the overlap merge of a re-ingest."""

from __future__ import annotations

import time

from tests.benchmarks.common import (
    BARS,
    MINUTE,
    SYMBOLS,
    Figure,
    Report,
    Server,
    connect,
    log,
    run_cli,
)
from tests.benchmarks.loader import Loader

ROUNDS = 2
TARGET = 1.10  # partitioned writes within 10% of the unpartitioned table's
# Whole months, so that the partitioned writes cross a month boundary like real ones.
START = 1_706_140_800  # 2024-01-25T00:00Z: the 10,000 bars run into February


def flat_database(server: Server, label: str) -> str:
    """A database whose candles table is the plain one (migrated, then down to 0008)."""
    url = server.create(label)
    run_cli(url, ["db", "downgrade", "0008"])
    return url


def run(server: Server, report: Report) -> None:
    """First write and overlap re-write of 1,000,000 1m candles, both tables, alternating."""
    urls = {"partitioned": server.create("part"), "unpartitioned": flat_database(server, "flat")}
    end = START + BARS * MINUTE
    first: dict[str, list[float]] = {name: [] for name in urls}
    again: dict[str, list[float]] = {name: [] for name in urls}
    for round_ in range(1, ROUNDS + 1):
        for name, url in urls.items():  # alternate, so drift hits both alike
            log(f"write path into the {name} table, round {round_} ...")
            with connect(url) as conn:
                conn.execute("TRUNCATE candles")
                conn.execute("CHECKPOINT")
            loader = Loader(url, derive=False)
            try:
                rows, seconds = loader.load(SYMBOLS, START, end)
                first[name].append(seconds)
                started = time.perf_counter()
                loader.load(SYMBOLS, START, end)  # the same again: all overlap, unchanged
                again[name].append(time.perf_counter() - started)
            finally:
                loader.close()
    for label, times in (("first write", first), ("overlap re-write", again)):
        part, flat = min(times["partitioned"]), min(times["unpartitioned"])
        ratio = part / flat
        report.add(
            Figure(
                f"partitioned {label}",
                part,
                rows,
                f"{ratio:.3f} flat",
                target=f"<= {TARGET} flat",
                passed=ratio <= TARGET,
            )
        )
        report.add(Figure(f"  unpartitioned {label}", flat, rows))
    report.note(
        "partitioned vs flat: the same 1,000,000 1m candles (100 symbols x 10,000 bars from "
        "2024-01-25, across a month boundary) through the write path (pg_copy COPY of new rows; "
        "then the same again, all overlap: the staged merge) into the partitioned table and "
        f"into the unpartitioned one of schema 0008; best of {ROUNDS} alternating rounds, "
        "in-process (no CLI start-up); 'flat' = time over the unpartitioned table's"
    )
