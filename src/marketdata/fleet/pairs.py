"""One job of a fleet: a (symbol, interval) of a tick, run through the pipeline's per-pair
step, its outcome in the tick's run, and the run closed by the job that completes it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from loguru import logger

from marketdata.domain import Interval, PairOutcome, epoch_of
from marketdata.errors import MarketdataError, RunInterruptedError

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from marketdata.context import AppContext
    from marketdata.providers.base import ProviderContext
    from marketdata.providers.chain import FallbackChain
    from marketdata.storage.locks import RunLease


class PairJobFailedError(MarketdataError):
    """A pair's job ended failed (the job is retried, then stays failed)."""


@dataclass(frozen=True)
class PairJob:
    """What a job carries: the pair, its tick's run and how the tick asked for it."""

    run_id: int
    symbol: str
    interval: str
    providers: list[str]
    trigger: str
    pairs: int  # how many pairs the tick's run has (it is closed when all have an outcome)
    mode: str = "incremental"
    since: int | None = None
    until: int | None = None
    lookback_days: int | None = None

    @property
    def lock(self) -> str:
        """The job lock and queueing lock: one per pair, across ticks."""
        return pair_lock_name(self.symbol, self.interval)

    def args(self) -> dict[str, Any]:
        """JSON arguments of the procrastinate job."""
        return asdict(self)


def pair_lock_name(symbol: str, interval: str) -> str:
    """The procrastinate lock (and queueing lock) of a pair."""
    return f"marketdata:pair:{symbol}:{interval}"


@dataclass
class _Chain:
    context: ProviderContext
    chain: FallbackChain
    built: float
    users: int = 0
    retired: bool = False


@dataclass
class ProviderChains:
    """Provider chains shared by a worker's jobs, rebuilt every `max_age` seconds so market
    overrides and calendars changed meanwhile are seen (reading them per job would cost a
    read of every market per pair)."""

    app: AppContext
    max_age: float = 60.0
    _chains: dict[tuple[str, ...], _Chain] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def chain(self, names: list[str]) -> Iterator[FallbackChain]:
        """The chain for these providers, held for the duration of one pair."""
        key = tuple(names)
        with self._lock:
            entry = self._chains.get(key)
            if entry is None or time.monotonic() - entry.built > self.max_age:
                if entry is not None:
                    self._retire(entry)
                entry = self._chains[key] = self._build(names)
            entry.users += 1
        try:
            yield entry.chain
        finally:
            with self._lock:
                entry.users -= 1
                if entry.retired and entry.users == 0:
                    entry.context.close()

    def _build(self, names: list[str]) -> _Chain:
        from marketdata.pipeline import _build_chain
        from marketdata.storage.engine import connect
        from marketdata.storage.markets import symbol_overrides, trading_calendars

        with connect(self.app.engine(), self.app.target) as conn:
            overrides, calendars = symbol_overrides(conn), trading_calendars(conn)
        context = self.app.provider_context(overrides, calendars)
        return _Chain(context, _build_chain(names, context), time.monotonic())

    def _retire(self, entry: _Chain) -> None:
        entry.retired = True
        if entry.users == 0:
            entry.context.close()

    def close(self) -> None:
        """Close every chain's HTTP client (at the worker's end)."""
        with self._lock:
            for entry in self._chains.values():
                self._retire(entry)
            self._chains.clear()


def run_pair(
    app: AppContext,
    job: PairJob,
    chains: ProviderChains,
    cancel: threading.Event,
    locks: RunLease,
    *,
    final: bool,
    retry: bool = True,
) -> PairOutcome:
    """Run one pair of a tick; raise PairJobFailedError when it failed (procrastinate retries
    it while attempts remain). Only a final outcome counts towards closing the tick's run.
    `retry` is False on a job's first attempt (no earlier outcome of it to clear)."""
    from marketdata.fleet import ticks
    from marketdata.storage.engine import connect

    log = logger.bind(symbol=job.symbol, interval=job.interval, run_id=job.run_id)
    try:
        outcome = _run(app, job, chains, cancel, locks, retry=retry)
    except RunInterruptedError:
        raise  # rolled back: the job is retried, by this worker or another
    except Exception as exc:  # noqa: BLE001 - recorded as the pair's outcome, as in one run
        # anything else ends the pair failed, as in one process; its message is the outcome's
        outcome = PairOutcome(job.symbol, job.interval, "failed", error=_one_line(exc))
        log.error("{} {} failed: {}", job.symbol, job.interval, outcome.error)
    log.info(
        "{} {} {}: {} fetched, {} inserted, {} updated, {} rejected (run {}){}",
        job.symbol,
        job.interval,
        outcome.status,
        outcome.fetched,
        outcome.inserted,
        outcome.updated,
        outcome.rejected,
        job.run_id,
        f" ({outcome.error})" if outcome.error else "",
    )
    # a failure, or the pair's advisory lock held elsewhere (an `ingest` run, or a worker
    # thought dead that is not): retried later while attempts remain
    later = outcome.status in ("failed", "locked") and not final
    closed = None
    if later or outcome.status != "ok":  # ok outcomes were written with the pair's candles
        with connect(app.engine(), app.target) as conn, conn.begin():
            if later:
                # until the retry the pair has no outcome, so the tick stays open
                ticks.forget_outcome(conn, job.run_id, job.symbol, job.interval)
            else:
                ticks.record_if_missing(conn, job.run_id, outcome)
    # counted after the outcome committed: the last job to commit sees them all; most jobs
    # are not the last, and count on the lock session without a transaction of their own
    if not later and locks.run(lambda conn: ticks.recorded(conn, job.run_id)) >= job.pairs:
        with connect(app.engine(), app.target) as conn, conn.begin():
            closed = ticks.close_if_complete(conn, job.run_id, job.pairs, app.clock())
    if closed is not None and closed[1]:  # this job completed the tick: report it once
        from marketdata.observability import reporting

        reporting.report_run(app, closed[0])
    if outcome.status == "failed":
        raise PairJobFailedError(f"{job.symbol} {job.interval}: {outcome.error}")
    if later:
        raise PairJobFailedError(f"{job.symbol} {job.interval} is locked by another process")
    return outcome


def _run(
    app: AppContext,
    job: PairJob,
    chains: ProviderChains,
    cancel: threading.Event,
    locks: RunLease,
    *,
    retry: bool,
) -> PairOutcome:
    # the pipeline's per-pair step, with the window planned now (not when deferred: the
    # stored data may have moved on since)
    from marketdata.fleet import ticks
    from marketdata.pipeline import IngestRequest, Mode, PairPlan, _last_ts, _process_pair, _windows
    from marketdata.storage.engine import connect

    interval = Interval(job.interval)
    request = IngestRequest(
        symbols=[job.symbol],
        intervals=[interval],
        providers=job.providers,
        since=job.since,
        until=job.until,
        mode=Mode(job.mode),
        lookback_days=job.lookback_days,
        trigger=job.trigger,
    )
    lookback = job.lookback_days or app.settings.ingestion_lookback_days
    if retry:
        with connect(app.engine(), app.target) as conn, conn.begin():
            ticks.forget_outcome(conn, job.run_id, job.symbol, job.interval)

    def plan(conn: Connection) -> PairPlan:
        # read before the pair's lock is taken: the write reads the newest candle again
        # under it, so a window that starts too early only re-fetches stored rows
        last = _last_ts(conn, job.symbol, interval)
        now = epoch_of(app.clock())
        windows = _windows(conn, request, job.symbol, interval, last, now, lookback)
        return PairPlan(job.symbol, interval, windows, last)

    pair = locks.run(plan)  # on the worker's lock session: one round trip, no checkout
    if cancel.is_set():
        app.cancel.set()  # the worker was told to roll back: the pair's waits end at once
    with chains.chain(job.providers) as chain:
        return _process_pair(app, chain, job.run_id, pair, None, locks)


def _one_line(exc: Exception) -> str:
    if isinstance(exc, MarketdataError):
        return exc.one_line()
    from marketdata.redact import scrub

    return scrub(f"{type(exc).__name__}: {exc}")
