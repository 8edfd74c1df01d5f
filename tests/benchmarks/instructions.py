"""What the cache adds to an ingest's own work, counted in instructions: an incremental run
(one new day of every pair) and a first ingest (every pair's year into an empty database, as
a backfill of new pairs is).

`make bench BENCH=cache` times the write path with Redis configured against no cache, but on a
shared host single runs' ratios spread from 0.75 to 1.78, so a few percent are lost in the
noise. This counts instead the instructions the ingest's process executes in the run
(every thread's: the pairs', the background refresher's), under valgrind's callgrind, which
counts the same for the same work whatever else the machine does. It is slow (valgrind
runs Python ~50x slower), so it is a bench of its own: `make bench BENCH=instructions`.

What it does not count: the servers' work (PostgreSQL's is the same on both sides; Redis's is
the cache's: a few commands a group of 50 pairs) and the time threads wait for each other (the
GIL), which the timed bench sees.

The same work's count moves with the process's memory layout: CPython 3.11 finds a type's
attributes through a cache indexed by the names' addresses, so where the imported objects lie
decides how often a lookup walks the classes instead. Under callgrind a process's layout
follows from its inputs, its environment among them, so runs with the same inputs draw the
same layout: the pairs' own work, identical on both sides, counted 2,948M in one environment and
2,982M in another (an unused variable 37 and 1,000 bytes long), which moved the ratio from
1.045x to 1.029x. Each side's runs therefore draw the same several layouts (LAYOUT_VARIABLE,
of another length each run), and the figure is the ratio of the two sides' medians.

A pair's cached `recent` value grows by the run's rows each run, and every RECENT_BARS runs
the run folds it into a new `show` value instead (decoding and encoding that one too): the
counted incremental runs are one in the middle of that cycle and one that folds, in each
layout, and the figure held to the target weighs them as a cycle does (RECENT_BARS - 1
extensions, one fold). The runs between them are plain runs, not counted.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.benchmarks import cache
from tests.benchmarks.common import BenchError, Figure, Report, Server, connect, log, median

RUNS = int(os.environ.get("BENCH_INSTRUCTION_RUNS", "3"))
"""Incremental runs a side of each kind; instruction counts of the same work differ between
layouts by up to 1.7%."""
FIRST_RUNS = int(os.environ.get("BENCH_INSTRUCTION_FIRST_RUNS", "5"))
"""First ingests a side: the cache's own work there is about 3.5% of the run, so the
layouts' draw decides more of its ratio than of the incremental run's (three layouts
counted 1.0518x where five counted 1.0424x, the same code)."""
TARGET = cache.INGEST_TARGET
LAYOUT_VARIABLE = "MARKETDATA_BENCH_LAYOUT"
"""An unused variable of a length that differs between a side's runs: a layout each."""
LAYOUT_STEP = 331
"""Characters LAYOUT_VARIABLE grows by from one run of a side to the next."""
WARM_DAYS = 5
"""Days of the first ingest that warms up a counted one's process: imports and set-up."""
SUMMARY = re.compile(rb"^summary: (\d+)", re.MULTILINE)
_URL, _REDIS_URL = "MARKETDATA_BENCH_URL", "MARKETDATA_BENCH_REDIS_URL"  # to a counted run


def run(server: Server, report: Report) -> None:
    """Instructions of incremental runs and of first ingests with Redis vs no cache; adds
    the figures."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise BenchError("valgrind (callgrind) is not installed: the instruction bench needs it")
    redis_url = os.environ.get("TEST_REDIS_URL", cache.DEFAULT_REDIS_URL)
    cache._check_redis(redis_url)
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    urls = {None: server.create("cg_later"), redis_url: server.create("cg_later_redis")}
    try:
        _incremental(urls, redis_url, prefix, report)
        _first(urls, redis_url, prefix, report)
    finally:
        cleaner = cache._app(urls[redis_url], redis_url=redis_url, cache_prefix=prefix)
        cleaner.cache.delete_pattern("*")
        cleaner.close()


def _incremental(urls: dict[str | None, str], redis_url: str, prefix: str, report: Report) -> None:
    """Incremental runs of one new day each after a first ingest, the sides alternating: in
    each layout one in the middle of the Redis side's `recent` cycle (an extension) and one
    at its end (a fold), the runs between them not counted. A cycle of RECENT_BARS runs
    holds one fold and extensions for the rest: the figure weighs them so."""
    from marketdata.cache.market import RECENT_BARS

    sides = (None, redis_url)
    kinds = ("extension", "fold")
    counts = {kind: {side: [] for side in sides} for kind in kinds}
    for side, url in urls.items():
        cache._first_ingest(url, side, prefix)
    held = _held_rows(redis_url, prefix)
    day = cache.INGEST_DAYS
    for layout in range(RUNS):
        for kind, before in zip(kinds, (RECENT_BARS // 2, RECENT_BARS), strict=True):
            # the counted run follows a warm-up run in its process: it starts `before` - 1
            # runs into its cycle (the fold: the run that would pass RECENT_BARS rows)
            while held() < before - 1:
                for side, url in urls.items():
                    _incremental_run(url, side or "", prefix, day, counted=False)
                day += 1
            for side in sides if (layout + kinds.index(kind)) % 2 else sides[::-1]:
                shown = "Redis" if side else "no cache"
                log(f"instructions: incremental run ({kind}) of day {day + 2}, {shown} ...")
                count = _counted_run(urls[side], side, prefix, "incremental", day, layout)
                counts[kind][side].append(count)
            day += 2
            if (held() == 0) != (kind == "fold"):
                raise BenchError(f"the counted run was not a {kind} of `recent` values")
    name = f"incremental run, {cache.INGEST_SYMBOLS} daily pairs (1 new candle each)"
    for kind in kinds:
        _figures(report, f"{name}, {kind}", counts[kind][None], counts[kind][redis_url], kind)
    cycle = {
        side: (RECENT_BARS - 1) * median(counts["extension"][side]) + median(counts["fold"][side])
        for side in sides
    }
    ratio = cycle[redis_url] / cycle[None]
    report.add(
        Figure(
            f"{name}, over a cycle of {RECENT_BARS} runs: instructions",
            rows=cache.INGEST_SYMBOLS,
            ratio=f"{ratio:.4f}x no cache",
            target=f"<= {TARGET:g}x",
            passed=ratio <= TARGET,
        )
    )
    report.note(
        f"a cycle of {RECENT_BARS} incremental runs: {RECENT_BARS - 1} extensions and a fold "
        "of the `recent` values, each side's medians weighed so: no cache "
        f"{cycle[None] / RECENT_BARS:,.0f}, Redis {cycle[redis_url] / RECENT_BARS:,.0f} "
        "instructions a run on average."
    )


def _held_rows(redis_url: str, prefix: str) -> Callable[[], int]:
    """How many rows the first pair's `recent` value holds (0 when it has none), read as a
    reader would read it."""
    import json

    import redis

    from marketdata.cache.keys import recent_key

    client = redis.Redis.from_url(redis_url)
    key = prefix + recent_key(cache.bench_symbols()[0], "1d")

    def rows() -> int:
        raw = client.get(key)
        if raw is None:
            raise BenchError(f"no {key} after a run with Redis")
        return len(json.loads(raw)["rows"])

    return rows


def _first(urls: dict[str | None, str], redis_url: str, prefix: str, report: Report) -> None:
    """First ingests of every pair's year into an emptied database, the sides alternating;
    each Redis run under a prefix of its own, so that no key of an earlier run is there."""
    counts: dict[str | None, list[int]] = {None: [], redis_url: []}
    for round_ in range(FIRST_RUNS):
        for side in (None, redis_url) if round_ % 2 else (redis_url, None):
            shown = "Redis" if side else "no cache"
            log(f"instructions: first ingest {round_ + 1} of {FIRST_RUNS}, {shown} ...")
            own = f"{prefix}first{round_}:"
            counts[side].append(_counted_run(urls[side], side, own, "first", 0, round_))
    name = f"first ingest, {cache.INGEST_SYMBOLS} daily pairs x {cache.INGEST_DAYS} days"
    _figures(
        report,
        name,
        counts[None],
        counts[redis_url],
        "a first ingest",
        target=True,
        knob="BENCH_INSTRUCTION_FIRST_RUNS",
    )


def _figures(
    report: Report,
    name: str,
    without: list[int],
    with_redis: list[int],
    what: str,
    *,
    target: bool = False,
    knob: str = "BENCH_INSTRUCTION_RUNS",
) -> None:
    """The two sides' figures and the counts behind them; the Redis side's against TARGET
    when `target` (else it is a part of a figure that is)."""
    ratio = median(with_redis) / median(without)
    report.add(
        Figure(f"{name}, no cache: instructions", rows=cache.INGEST_SYMBOLS, ratio="1 (ref)")
    )
    report.add(
        Figure(
            f"{name}, Redis cache: instructions",
            rows=cache.INGEST_SYMBOLS,
            ratio=f"{ratio:.4f}x no cache",
            target=f"<= {TARGET:g}x" if target else "",
            passed=ratio <= TARGET if target else None,
        )
    )
    report.note(
        f"instructions of the ingest's process in {what} (callgrind, every thread; the "
        f"median of {len(without)} runs a side, {knob}, each in a memory layout of "
        f"its own, the same {len(without)} on both sides), no cache: "
        f"{', '.join(f'{c:,}' for c in without)}; Redis cache: "
        f"{', '.join(f'{c:,}' for c in with_redis)}; layout by layout "
        f"{', '.join(f'{r / w:.4f}x' for w, r in zip(without, with_redis, strict=True))}."
    )


def _counted_run(
    url: str, redis_url: str | None, prefix: str, kind: str, day: int, layout: int
) -> int:
    """The instructions of one run of `kind` (incremental or first; a new process under
    callgrind), in the memory layout numbered `layout` (see the module's docstring)."""
    folder = Path(tempfile.mkdtemp(prefix="marketdata-callgrind-"))
    out = folder / "callgrind.out"
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        "-m",
        "tests.benchmarks.instructions",
        "--child",
        kind,
        prefix,
        str(day),
    ]
    # the same hash seed on both sides: set and dict layouts, and so the work, stay the same;
    # the URLs by the environment, not in a command line any process list shows
    env = {**os.environ, "PYTHONHASHSEED": "0", _URL: url, _REDIS_URL: redis_url or ""}
    env[LAYOUT_VARIABLE] = "x" * (layout * LAYOUT_STEP)
    try:
        done = subprocess.run(command, env=env, capture_output=True)
        if done.returncode != 0:
            # valgrind's own lines start with ==PID==: the child's error is the last other line
            lines = done.stderr.decode(errors="replace").splitlines()
            ours = [line for line in lines if line.strip() and not line.startswith("==")]
            raise BenchError(f"a counted run failed: {ours[-1] if ours else done.returncode}")
        dumped = out.with_name(f"{out.name}.1")  # the dump at the run's end (see _child)
        found = SUMMARY.search(dumped.read_bytes())
        if found is None:
            raise BenchError(f"no instruction count in {dumped.name}")
        return int(found.group(1))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _child(kind: str, url: str, redis_url: str, prefix: str, day: int) -> None:
    """Under callgrind: a run to warm this process up, then the run of `kind` counted
    (counters zeroed before it, dumped after): a new app each, as the timed bench runs them,
    so neither side counts the imports and one-off set-up of a first run in a process (most
    of what a cold run adds is imports: the cache's, redis-py).

    An incremental run of `day` warms up the count of that of the day after; a first ingest
    of a few days (into an emptied database, then emptied again) warms up the count of a
    first ingest of the whole year."""
    from marketdata.cache import refresher

    # valgrind slows the run ~50x: the refresher's 2 s window would cut a real run's groups of
    # 50 pairs (committed in ~0.6 s) into groups of a few, each with its own statements
    refresher.GATHER_SECONDS = 3600.0
    refresher.DRAIN_SECONDS = 3600.0
    if kind == "first":
        _first_run(url, redis_url, f"{prefix}warm:", WARM_DAYS, counted=False)
        _first_run(url, redis_url, prefix, cache.INGEST_DAYS, counted=True)
    else:
        _incremental_run(url, redis_url, prefix, day, counted=False)
        _incremental_run(url, redis_url, prefix, day + 1, counted=True)


def _first_run(url: str, redis_url: str, prefix: str, days: int, *, counted: bool) -> None:
    """One first ingest by a new app of every pair's first `days` days, into an emptied
    database."""
    with connect(url) as conn:
        conn.execute("TRUNCATE candles, ingestion_runs CASCADE")
    app = cache._ingest_app(url, redis_url or None, prefix)
    try:
        backend = "redis" if redis_url else None
        around = _counted() if counted else None
        cache.ingest_days(url, app, (0, days), backend, new=days, around=around)
    finally:
        app.close()


def _incremental_run(url: str, redis_url: str, prefix: str, day: int, *, counted: bool) -> None:
    """One run of a new app over `day` and the day before (stored), `day` new (not counted:
    a plain run, as a timer's, when not `counted` and not under callgrind)."""
    app = cache._ingest_app(url, redis_url or None, prefix)
    try:
        backend = "redis" if redis_url else None
        around = _counted() if counted else None
        cache.ingest_days(url, app, (day - 1, day + 1), backend, new=1, around=around)
    finally:
        app.close()


@contextlib.contextmanager
def _counted() -> Iterator[None]:
    """The block's instructions alone: this process's callgrind counters zeroed before it
    and dumped after it (to the file _counted_run reads)."""
    _callgrind("-z")
    yield
    _callgrind("-d")


def _callgrind(flag: str) -> None:
    """Zero (-z) or dump (-d) this process's callgrind counters."""
    subprocess.run(["callgrind_control", flag, str(os.getpid())], check=True, capture_output=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        kind, prefix, day = sys.argv[2:5]
        _child(kind, os.environ[_URL], os.environ[_REDIS_URL], prefix, int(day))
