"""Cache benchmark: `cache rebuild` of 10,000 pairs on PostgreSQL and Redis next to reading the
same rows alone, `show --json` from a warm cache (counting the connections the database
sees), and the ingest write path with Redis configured next to no cache at all."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np

from tests.benchmarks.common import (
    BenchError,
    Figure,
    Report,
    Server,
    connect,
    log,
    make_partitions,
    median,
    run_cli,
)

PAIRS = 10_000
DAYS = 30
REBUILD_TARGET = 2.0
INGEST_TARGET = 1.05
INGEST_SYMBOLS = 200
INGEST_DAYS = 365
INGEST_ROUNDS = int(os.environ.get("BENCH_CACHE_ROUNDS", "11"))
"""Rounds of the first-ingest lines (no cache, Redis, dead Redis back to back): the ratio is
the median of the rounds' own ratios, so a machine that slows or speeds up between rounds
moves both sides of a ratio alike."""
INCREMENTAL_RUNS = 50
"""Incremental runs a side, one new day each, the sides alternating: more than twice
RECENT_BARS, so that the Redis side's refresher folds every pair's `recent` value into its
`show` value twice, as a timer's runs do every RECENT_BARS days. Single runs' ratios spread
from 0.8 to 1.3 on a shared host, so the median of 26 moved by up to 0.08 between runs of
the bench."""
DAY = 86_400
FIRST_DAY = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp())
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"


def run(server: Server, report: Report) -> None:
    """Both cache scenarios; adds their figures to the report."""
    redis_url = os.environ.get("TEST_REDIS_URL", DEFAULT_REDIS_URL)
    _check_redis(redis_url)
    url = _rebuild(server, report, redis_url)
    _warm_show(url, report, redis_url)
    _ingest(server, report, redis_url)


def _check_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise BenchError(f"Redis at TEST_REDIS_URL unreachable: {exc}") from None
    finally:
        client.close()


def _app(url: str, **settings: Any) -> Any:
    from marketdata.config import load_settings
    from marketdata.context import AppContext

    return AppContext(load_settings({"database_url": url, **settings}, environ={}))


# ------------------------------------------------------------------------------------ rebuild


def _fill(url: str) -> int:
    """PAIRS daily pairs of DAYS candles with their indicators, by one binary COPY."""
    from marketdata.analytics.indicators import compute_indicators
    from marketdata.storage.schema import INDICATOR_COLUMNS

    rng = np.random.default_rng(8)
    now = datetime.now(UTC)
    stamps = [datetime.fromtimestamp(FIRST_DAY + d * DAY, UTC) for d in range(DAYS)]
    columns = ["symbol", "interval", "ts", "open", "high", "low", "close", "volume", "provider"]
    columns += ["ingested_at", *INDICATOR_COLUMNS.values()]
    types = ["varchar", "varchar", "timestamptz", *["float8"] * 5, "varchar", "timestamptz"]
    types += ["float8"] * len(INDICATOR_COLUMNS)
    rows = 0
    make_partitions(url, "1d", stamps[0], stamps[-1])  # COPY goes past the tool's own set-up
    with connect(url) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY candles ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(types)
            for i in range(PAIRS):
                close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.02, DAYS)))
                derived = compute_indicators(close, periods_per_year=365.0).columns()
                indicators = [derived[name].tolist() for name in INDICATOR_COLUMNS]
                symbol = f"C{i:05d}-USD"
                for d in range(DAYS):
                    c = float(close[d])
                    values = [None if np.isnan(v[d]) else v[d] for v in indicators]
                    prices = (c, c * 1.01, c * 0.99, c, 1000.0)
                    copy.write_row((symbol, "1d", stamps[d], *prices, "synthetic", now, *values))
                    rows += 1
        conn.execute("ANALYZE candles")
    return rows


def _read_alone(url: str) -> float:
    """Read every pair's rows with the very queries the rebuild makes, and nothing else."""
    from marketdata.cache.maintenance import REBUILD_CHUNK
    from marketdata.domain import Interval
    from marketdata.storage.candles import read_pairs, stored_pairs
    from marketdata.storage.engine import connect as db_connect

    app = _app(url)
    try:
        with db_connect(app.engine(), app.target) as conn:
            started = time.perf_counter()
            pairs = [(s, Interval.parse(i)) for s, i in stored_pairs(conn)]
            conn.rollback()
            for first in range(0, len(pairs), REBUILD_CHUNK):
                read_pairs(conn, pairs[first : first + REBUILD_CHUNK], with_indicators=True)
                conn.rollback()
            return time.perf_counter() - started
    finally:
        app.close()


def _rebuild_once(url: str, redis_url: str, prefix: str) -> tuple[float, int]:
    from marketdata.cache.maintenance import rebuild

    app = _app(url, redis_url=redis_url, cache_prefix=prefix)
    try:
        app.engine()  # connected and checked before the clock starts, as for the read
        started = time.perf_counter()
        result = rebuild(app)
        seconds = time.perf_counter() - started
        if result.backend != "redis" or result.pairs != PAIRS:
            raise BenchError(f"rebuild went to {result.backend} for {result.pairs} pairs")
        return seconds, result.written
    finally:
        app.close()


def _rebuild(server: Server, report: Report, redis_url: str) -> str:
    url = server.create("cache")
    log(f"cache: {PAIRS:,} daily pairs of {DAYS} candles by COPY ...")
    rows = _fill(url)
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    reads, rebuilds = [], []
    written = 0
    try:
        for round_ in (1, 2, 3):  # alternate, so drift hits both alike
            log(f"cache: read the rows alone, then rebuild into Redis, round {round_} ...")
            reads.append(_read_alone(url))
            seconds, written = _rebuild_once(url, redis_url, prefix)
            rebuilds.append(seconds)
    finally:
        cleaner = _app(url, redis_url=redis_url, cache_prefix=prefix)
        cleaner.cache.delete_pattern("*")
        cleaner.close()
    read, rebuilt = min(reads), min(rebuilds)
    report.add(Figure(f"read {PAIRS:,} pairs' rows (reference)", read, rows, "1 (ref)"))
    ratio = rebuilt / read
    report.add(
        Figure(
            f"cache rebuild, {PAIRS:,} pairs into Redis",
            rebuilt,
            rows,
            f"{ratio:.2f}x the read",
            target=f"<= {REBUILD_TARGET:g}x",
            passed=ratio <= REBUILD_TARGET,
        )
    )
    report.note(
        f"cache rebuild wrote {written:,} keys ({PAIRS:,} pairs x show, recent, latest, roi)."
    )
    return url


# --------------------------------------------------------------------------------- warm show


def _warm_show(url: str, report: Report, redis_url: str) -> None:
    """`show --json` after `cache rebuild`, both through a loopback proxy that counts the
    connections made to PostgreSQL: the answer from the warm cache must make none."""
    from sqlalchemy.engine import make_url

    from tests.fakes.tcpproxy import proxy_to

    env = {"REDIS_URL": redis_url, "CACHE_PREFIX": f"bench:{uuid.uuid4().hex[:8]}:"}
    symbol = "C00042-USD"
    with proxy_to(make_url(url).port or 5432) as proxy:
        through = make_url(url).set(host="127.0.0.1", port=proxy.port)
        proxied = through.render_as_string(hide_password=False)
        try:
            run_cli(proxied, ["cache", "rebuild", "--symbols", symbol], env)
            before = len(proxy.links)
            shown = [run_cli(proxied, ["show", symbol, "--json"], env) for _ in range(3)]
            opened = len(proxy.links) - before
        finally:
            run_cli(proxied, ["cache", "invalidate", "--yes", "*"], env)
    sources = {json.loads(run.stdout)["source"] for run in shown}
    report.add(
        Figure(
            "show --json from a warm cache (process)",
            min(run.seconds for run in shown),
            None,
            f"{opened} database connections",
            target="no connection",
            passed=opened == 0 and sources == {"cache"},
        )
    )


# ------------------------------------------------------------------------------------ ingest


def _ingest_app(url: str, redis_url: str | None, prefix: str) -> Any:
    """The app of one run (a new process's, as a timer starts it): no cache at all as the
    reference, else REDIS_URL's cache."""
    from marketdata.cache.fallback import FallbackCache, NoCache

    settings: dict[str, Any] = {"cache_prefix": prefix, "ingestion_concurrency": 1}
    if redis_url:
        settings["redis_url"] = redis_url
    app = _app(url, **settings)
    if not redis_url:
        app._cache = FallbackCache(None, NoCache, app.redis_outage, app.metrics)
    app.engine()
    return app


def _timed_run(url: str, app: Any, days: tuple[int, int], backend: str | None, *, new: int) -> Run:
    """One ingest of the pairs' days (see ingest_days): its seconds and this process's CPU
    seconds (every thread's: the background refresher's too)."""
    times: list[float] = []
    ingest_days(url, app, days, backend, new=new, around=_timed(times))
    return Run(*times, sum(_refresh_cpu))


def bench_symbols() -> list[str]:
    """The symbols of the ingest figures' pairs."""
    return [f"I{i:03d}-USD" for i in range(INGEST_SYMBOLS)]


def ingest_days(
    url: str,
    app: Any,
    days: tuple[int, int],
    backend: str | None,
    *,
    new: int,
    around: contextlib.AbstractContextManager[object] | None = None,
) -> None:
    """One ingest of the pairs' days [first, last), `new` of them not stored yet, after a
    checkpoint (so that the one the previous run's writes call for does not land in this
    one), `around` (a measurement) entered for the ingest alone; checks what it wrote and
    that its cache was `backend` (when set)."""
    from marketdata.domain import Interval
    from marketdata.pipeline import IngestRequest, run_ingest

    request = IngestRequest(
        symbols=bench_symbols(),
        intervals=[Interval.D1],
        providers=["synthetic"],
        since=FIRST_DAY + days[0] * DAY,
        until=FIRST_DAY + days[1] * DAY,
    )
    with connect(url) as conn:
        conn.execute("CHECKPOINT")
    with around or contextlib.nullcontext():
        result = run_ingest(app, request)
    if result.rows_inserted != INGEST_SYMBOLS * new:
        raise BenchError(f"ingest inserted {result.rows_inserted} rows")
    if backend is not None and app.cache.name != backend:
        raise BenchError(f"the ingest's cache was {app.cache.name}, not {backend}")


@contextlib.contextmanager
def _timed(times: list[float]) -> Iterator[None]:
    """Append the seconds and the process's CPU seconds of the block to `times`."""
    _refresh_cpu.clear()
    started, used = time.perf_counter(), time.process_time()
    yield
    times += [time.perf_counter() - started, time.process_time() - used]


@dataclasses.dataclass(frozen=True)
class Run:
    seconds: float
    cpu: float
    refresh_cpu: float = 0.0  # the cache refresh thread's share of `cpu`


_refresh_cpu: list[float] = []


@contextlib.contextmanager
def _refresh_cpu_measured() -> Iterator[None]:
    """Count the CPU seconds of the cache's refresh thread (its `_work`) in _refresh_cpu: the
    one part of a run that a cache adds to the pipeline's threads, so a figure with far less
    noise than the difference of two runs on a shared host."""
    from marketdata.cache.refresher import Refresher

    work = Refresher._work

    def measured(self: Refresher) -> None:
        started = time.thread_time()
        try:
            work(self)
        finally:
            _refresh_cpu.append(time.thread_time() - started)

    Refresher._work = measured  # type: ignore[method-assign]
    try:
        yield
    finally:
        Refresher._work = work  # type: ignore[method-assign]


def _first_ingest(url: str, redis_url: str | None, prefix: str, backend: str = "redis") -> Run:
    """A first ingest of every pair's year into an emptied database."""
    with connect(url) as conn:
        conn.execute("TRUNCATE candles, ingestion_runs CASCADE")
    app = _ingest_app(url, redis_url, prefix)
    try:
        return _timed_run(
            url, app, (0, INGEST_DAYS), backend if redis_url else None, new=INGEST_DAYS
        )
    finally:
        app.close()


def _ingest(server: Server, report: Report, redis_url: str) -> None:
    url = server.create("cache_ingest")
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    runs: dict[str | None, list[Run]] = {None: [], redis_url: []}
    dead: list[Run] = []
    dead_url = f"redis://127.0.0.1:{_closed_port()}/0"
    try:
        with _refresh_cpu_measured():
            for round_ in range(1, INGEST_ROUNDS + 1):
                log(f"cache: first ingest without a cache, with Redis, a dead Redis, {round_} ...")
                # which side goes first alternates: the server's work after a run's writes
                # (autovacuum, say) then burdens each side alike
                for side in (None, redis_url) if round_ % 2 else (redis_url, None):
                    runs[side].append(_first_ingest(url, side, prefix))
                dead.append(_first_ingest(url, dead_url, prefix, backend="disk"))
            later = _incremental(server, redis_url, f"{prefix}later:")
    finally:
        cleaner = _app(url, redis_url=redis_url, cache_prefix=prefix)
        cleaner.cache.delete_pattern("*")
        cleaner.close()
    rows = INGEST_SYMBOLS * INGEST_DAYS
    without, with_redis = runs[None], runs[redis_url]
    base = median([r.seconds for r in without])
    report.add(Figure(f"ingest {INGEST_SYMBOLS} daily pairs, no cache", base, rows, "1 (ref)"))
    ratio = _paired(with_redis, without)
    report.add(
        Figure(
            f"ingest {INGEST_SYMBOLS} daily pairs, Redis cache",
            median([r.seconds for r in with_redis]),
            rows,
            f"{ratio:.3f}x no cache",
            target=f"<= {INGEST_TARGET:g}x",
            passed=ratio <= INGEST_TARGET,
        )
    )
    # the incremental runs: every pair's keys written by the background refresher (the
    # write path too: the same target)
    name = f"incremental run, {INGEST_SYMBOLS} daily pairs (1 new candle each)"
    report.add(
        Figure(
            f"{name}, no cache", median([r.seconds for r in later[None]]), INGEST_SYMBOLS, "1 (ref)"
        )
    )
    later_ratio = _paired(later[redis_url], later[None])
    report.add(
        Figure(
            f"{name}, Redis cache",
            median([r.seconds for r in later[redis_url]]),
            INGEST_SYMBOLS,
            f"{later_ratio:.3f}x no cache",
            target=f"<= {INGEST_TARGET:g}x",
            passed=later_ratio <= INGEST_TARGET,
        )
    )
    report.note(
        f"first ingest: the median of {INGEST_ROUNDS} rounds' own ratios (BENCH_CACHE_ROUNDS), "
        f"{_listed(with_redis, without)}; incremental run: of {INCREMENTAL_RUNS} consecutive "
        f"runs' (a timer's day after day, the cache folding its `recent` values twice), "
        f"{_listed(later[redis_url], later[None])}."
    )
    report.note(
        "ingest's own CPU (this process, every thread; median of the paired ratios) with "
        f"Redis vs no cache: first ingest {_paired(with_redis, without, cpu=True):.3f}x, "
        f"incremental run {_paired(later[redis_url], later[None], cpu=True):.3f}x. "
        "The cache's refresh thread's own CPU (median) is "
        f"{_refresh_share(with_redis):.1%} of a first ingest's CPU and "
        f"{_refresh_share(later[redis_url]):.1%} of an incremental run's."
    )
    # a dead Redis falls back to the disk cache: its cost is the disk cache's plus the
    # failure itself, which the target bounds (seconds, not a ratio: it is a fixed cost)
    dead_seconds = median([r.seconds for r in dead])
    report.add(
        Figure(
            f"ingest {INGEST_SYMBOLS} daily pairs, REDIS_URL dead (disk cache)",
            dead_seconds,
            rows,
            f"{dead_seconds - base:+.2f} s vs no cache",
            target="informational",
        )
    )


def _incremental(server: Server, redis_url: str, prefix: str) -> dict[str | None, list[Run]]:
    """INCREMENTAL_RUNS runs on each side, one day more each, alternating: a database of its
    own per side (each first filled with the pairs' year), a new app per run."""
    urls = {None: server.create("cache_later"), redis_url: server.create("cache_later_redis")}
    runs: dict[str | None, list[Run]] = {None: [], redis_url: []}
    for side, url in urls.items():
        _first_ingest(url, side, prefix)
    log(f"cache: {INCREMENTAL_RUNS} incremental runs without a cache and with Redis ...")
    for day in range(INGEST_DAYS, INGEST_DAYS + INCREMENTAL_RUNS):
        for side in (None, redis_url) if day % 2 else (redis_url, None):
            app = _ingest_app(urls[side], side, prefix)
            try:  # the day before too: a timer's run fetches its last stored candle again
                runs[side].append(_timed_run(urls[side], app, (day - 1, day + 1), None, new=1))
            finally:
                app.close()
    return runs


def _paired(measured: list[Run], reference: list[Run], *, cpu: bool = False) -> float:
    """The median of each pair's ratio of `measured` to `reference` (seconds, or CPU)."""
    if cpu:
        return median([m.cpu / r.cpu for m, r in zip(measured, reference, strict=True)])
    return median([m.seconds / r.seconds for m, r in zip(measured, reference, strict=True)])


def _refresh_share(runs: list[Run]) -> float:
    """The median share of the refresh thread in the runs' CPU."""
    return median([r.refresh_cpu / r.cpu for r in runs])


def _listed(measured: list[Run], reference: list[Run]) -> str:
    pairs = zip(measured, reference, strict=True)
    return ", ".join(f"{m.seconds / r.seconds:.2f}" for m, r in pairs)


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
