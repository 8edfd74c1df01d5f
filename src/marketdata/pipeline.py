"""One ingestion run: plan -> lock -> fetch -> validate -> store -> record -> report."""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np
from loguru import logger

from marketdata.domain import (
    DAY,
    Candles,
    Interval,
    PairOutcome,
    RunResult,
    RunStatus,
    Window,
    epoch_of,
    utc_from_epoch,
)
from marketdata.errors import (
    DatabaseBusyError,
    DatabaseUnavailableError,
    InputError,
    MarketdataError,
    NoDataError,
    ProviderError,
    RunInterruptedError,
)
from marketdata.gc_frozen import frozen
from marketdata.observability import reporting
from marketdata.observability.logging import RunLogContext, bind_pair, with_log_context

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy import Connection

    from marketdata.context import AppContext
    from marketdata.providers.base import ProviderContext
    from marketdata.providers.chain import FallbackChain
    from marketdata.storage.locks import RunLease
    from marketdata.storage.markets import Market

MAX_LOOKBACK_DAYS = 36_500
T = TypeVar("T")


# A pair's write that meets a transient database fault (a deadlock, a lock or statement
# timeout, SQLite busy, a dropped connection) is tried again in a new transaction, with
# backoff 0.2, 0.4, 0.8, 1.6 s; then the error stands: exit 75 when the server is gone, the
# pair failed when it stays busy.
STORE_ATTEMPTS = 5
STORE_BACKOFF_SECONDS = 0.2


class Mode(Enum):
    """How each pair's window is chosen."""

    INCREMENTAL = "incremental"  # from the last stored candle (or the lookback) to now
    REPLAY = "replay"  # the whole lookback window again; corrections overwrite
    BACKFILL = "backfill"  # incremental, plus every gap in stored history


@dataclass(frozen=True)
class IngestRequest:
    """What the user asked for; empty symbols mean INGESTION_SYMBOLS, else enabled markets."""

    symbols: Sequence[str] = ()
    intervals: Sequence[Interval] = (Interval.D1,)
    providers: Sequence[str] = ()
    since: int | None = None
    until: int | None = None
    mode: Mode = Mode.INCREMENTAL
    lookback_days: int | None = None
    trigger: str = "manual"

    def __post_init__(self) -> None:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise InputError(
                f"--since ({utc_from_epoch(self.since).isoformat()}) is not before "
                f"--until ({utc_from_epoch(self.until).isoformat()})"
            )
        if self.lookback_days is not None and not 0 < self.lookback_days <= MAX_LOOKBACK_DAYS:
            raise InputError(
                f"--lookback-days must be between 1 and {MAX_LOOKBACK_DAYS}, "
                f"not {self.lookback_days}"
            )


@dataclass(frozen=True)
class PairPlan:
    """The windows one (symbol, interval) needs, and what fetching them costs."""

    symbol: str
    interval: Interval
    windows: list[Window]
    stored_last: int | None
    requests: int = 0
    seconds: float = 0.0
    skip: str | None = None  # 'disabled' with the reason, for pairs not fetched


@dataclass
class Plan:
    """Every pair of a run, in order."""

    pairs: list[PairPlan]
    providers: list[str]
    mode: Mode


class Progress(Protocol):
    """Told how many pairs a run has, then of each pair as it finishes (in any order)."""

    def started(self, pairs: int) -> None:
        """The run begins with this many pairs."""

    def pair_done(self, outcome: PairOutcome) -> None:
        """One pair finished (written, skipped or failed)."""


# ---------------------------------------------------------------------------------- planning


def resolve_symbols(app: AppContext, request: IngestRequest) -> tuple[list[str], set[str]]:
    """The symbols of the run and the ones disabled (markets table or setting)."""
    from marketdata.domain import parse_symbols

    disabled = set(parse_symbols(app.settings.ingestion_disabled_symbols))
    markets = _markets(app)
    disabled |= {m.symbol for m in markets if not m.enabled}
    symbols = list(request.symbols) or parse_symbols(app.settings.ingestion_symbols)
    if not symbols:
        symbols = [m.symbol for m in markets if m.enabled]
    if not symbols:
        raise NoDataError(
            "no symbols to ingest",
            hint="pass --symbols, set INGESTION_SYMBOLS or add markets (`marketdata markets add`)",
        )
    return symbols, disabled


def _markets(app: AppContext) -> list[Market]:
    if not app.database_exists():
        return []
    from marketdata.storage.engine import connect
    from marketdata.storage.markets import list_markets

    with connect(app.engine(), app.target) as conn:
        return list_markets(conn)


def build_plan(app: AppContext, request: IngestRequest, *, with_costs: bool = False) -> Plan:
    """Windows per pair from what is stored; with costs, the requests and time they take."""
    from marketdata.plan_checks import check_intervals, check_window
    from marketdata.providers.registry import parse_chain

    chain = parse_chain(request.providers or app.settings.ingestion_provider)
    check_intervals(chain, request.intervals)
    symbols, disabled = resolve_symbols(app, request)
    now = epoch_of(app.clock())
    lookback = request.lookback_days or app.settings.ingestion_lookback_days
    pairs: list[PairPlan] = []
    with _maybe_connection(app) as conn:
        # the last stored candle of every pair, one query per interval (not one per pair)
        lasts = {iv: _last_ts_many(conn, symbols, iv) for iv in request.intervals}
        for symbol in symbols:
            for interval in request.intervals:
                if symbol in disabled:
                    pairs.append(PairPlan(symbol, interval, [], None, skip="disabled"))
                    continue
                last = lasts[interval].get(symbol)
                windows = _windows(conn, request, symbol, interval, last, now, lookback)
                pairs.append(PairPlan(symbol, interval, windows, last))
    check_window(
        request.since,
        request.until,
        now,
        [(p.symbol, p.interval, p.windows, p.skip) for p in pairs],
    )
    plan = Plan(pairs, chain, request.mode)
    if with_costs:
        plan.pairs = [_with_costs(app, chain[0], p) for p in plan.pairs]
    return plan


@contextmanager
def _maybe_connection(app: AppContext) -> Iterator[Connection | None]:
    if not app.database_exists():
        yield None
        return
    from marketdata.storage.engine import connect

    with connect(app.engine(), app.target) as conn:
        yield conn


def _last_ts(conn: Connection | None, symbol: str, interval: Interval) -> int | None:
    if conn is None:
        return None
    from marketdata.storage.candles import last_ts

    return last_ts(conn, symbol, interval)


def _last_ts_many(
    conn: Connection | None, symbols: list[str], interval: Interval
) -> dict[str, int | None]:
    if conn is None:
        return {}
    from marketdata.storage.candles import last_ts_many

    return last_ts_many(conn, symbols, interval)


def _windows(
    conn: Connection | None,
    request: IngestRequest,
    symbol: str,
    interval: Interval,
    last: int | None,
    now: int,
    lookback_days: int,
) -> list[Window]:
    # up to the end of the bar that is open now, so the still-forming candle is refreshed
    end = interval.floor(now) + interval.seconds
    if request.until is not None:
        end = min(end, request.until)
    lookback_start = interval.floor(now - lookback_days * DAY)
    if request.since is not None:
        start = request.since
    elif request.mode is Mode.REPLAY or last is None:
        start = lookback_start
    else:
        start = last  # the last stored candle again: it may have been still open
    windows = [Window(min(start, end), end)]
    if request.mode is Mode.BACKFILL and conn is not None:
        from marketdata.gaps import find_gaps

        windows = [*find_gaps(conn, symbol, interval), *windows]
    return windows


def _with_costs(app: AppContext, provider_name: str, pair: PairPlan) -> PairPlan:
    from marketdata.providers.registry import provider_class

    if pair.skip:
        return pair
    cls = provider_class(provider_name)
    with app.provider_context({}) as ctx:
        provider = cls(ctx)
        requests = sum(provider.requests_needed(pair.interval, w) for w in pair.windows)
    limit = cls.rate_limit
    seconds = max(0.0, (requests - limit.burst) / limit.per_second)
    return PairPlan(pair.symbol, pair.interval, pair.windows, pair.stored_last, requests, seconds)


# --------------------------------------------------------------------------------- running


# After a stop signal, how long the run waits for pairs already committing (their commit
# is counted; a pair not yet committing rolls back), so that it answers within a second.
STOP_GRACE_SECONDS = 0.5
# How long recording the run's end may take: a database that stopped answering must not keep
# a stopped process alive (the next run then closes the row as abandoned).
RECORD_DEADLINE_SECONDS = 5.0


def run_ingest(
    app: AppContext, request: IngestRequest, progress: Progress | None = None
) -> RunResult:
    """Run the request: every pair in its own transaction; a failing pair spoils no other.

    From its start to its recorded end the run watches `app.cancel`: a stop signal only sets
    it, every wait returns early, and the run is recorded once, as interrupted. Garbage
    collections during the run skip the objects alive at its start (see `gc_frozen`).
    """
    with app.cancel.watching(), frozen():
        return _run_watched(app, request, progress)


def _run_watched(app: AppContext, request: IngestRequest, progress: Progress | None) -> RunResult:
    try:
        plan = build_plan(app, request)
        started = app.clock()
        result = RunResult(None, request.trigger, plan.providers, started)
        run_id, lease, overrides, calendars = _start(app, request, plan, result)
    except DatabaseUnavailableError as exc:
        providers, symbols = _asked(app, request)
        reporting.database_unreachable(
            app, exc, trigger=request.trigger, providers=providers, symbols=symbols
        )
        raise
    log_context = RunLogContext(result.run_id, request.trigger)
    log = logger.bind(run_id=result.run_id)
    log.info(
        "run {} started: {} pairs via {}", result.run_id, len(plan.pairs), ",".join(plan.providers)
    )
    if progress is not None:
        progress.started(len(plan.pairs))
    stopped: BaseException | None = None  # an interrupt, or an error that ended the run
    provider_ctx = app.provider_context(overrides, calendars)
    try:
        app.cancel.check()
        chain = _build_chain(plan.providers, provider_ctx)
        _run_pairs(app, plan, chain, run_id, lease, progress, result.outcomes)
    except KeyboardInterrupt:
        stopped = RunInterruptedError(signal.SIGINT)
    except Exception as exc:  # noqa: BLE001 - recorded in the ledger, then raised again below
        stopped = exc
    finally:
        provider_ctx.close()
        # the pairs' cache keys are written before the run ends (dropped if it was stopped)
        from marketdata.cache.market import drain_refreshes

        drain_refreshes(app, abandon=app.cancel.is_set())
        result.finished_at = app.clock()
        result.status = _status(result, stopped)
        result.error = _run_error(result, stopped)
        recorded = _finish_within_deadline(app, result)
        if recorded:
            lease.release()
        else:  # a later run finds the lease free and closes the row as abandoned
            lease.drop()
        reporting.report_run(app, result, database_reachable=recorded)
        log_context.close()
    if stopped is not None:
        raise stopped
    return result


def _start(
    app: AppContext, request: IngestRequest, plan: Plan, result: RunResult
) -> tuple[int, RunLease, dict[str, dict[str, str]], dict[str, str]]:
    """Insert the run row under its lease, close runs whose process died, and read what the
    providers need from the markets table."""
    from marketdata.storage.engine import connect
    from marketdata.storage.locks import RunLease
    from marketdata.storage.markets import symbol_overrides, trading_calendars
    from marketdata.storage.runs import close_abandoned, start_run

    engine = app.engine()
    with connect(engine, app.target) as conn:
        run_id = start_run(
            conn,
            trigger=request.trigger,
            providers=plan.providers,
            symbols=sorted({p.symbol for p in plan.pairs}),
            intervals=sorted({p.interval.value for p in plan.pairs}),
            started_at=result.started_at,
        )
        # the lease is taken before the row is committed: no run ever sees this row running
        # without it
        lease = RunLease(engine, run_id, app.lock_dir())
        conn.commit()
        result.run_id = run_id
        for run in close_abandoned(conn, now=app.clock(), lock_dir=app.lock_dir(), own=run_id):
            logger.warning(
                "run {} (started {} on {}) was left running by a process that died; "
                "closed as abandoned",
                run.id,
                run.started_at.isoformat(),
                run.host or "an unknown host",
            )
        overrides = symbol_overrides(conn)
        calendars = trading_calendars(conn)
        _prepare_partitions(conn, plan, epoch_of(result.started_at))
        conn.commit()
    return run_id, lease, overrides, calendars


def _finish_within_deadline(app: AppContext, result: RunResult) -> bool:
    """Record the run's end, waiting at most RECORD_DEADLINE_SECONDS for the database."""
    outcome: list[bool] = []

    def record() -> None:
        outcome.append(_finish(app, result))

    recorder = threading.Thread(
        target=with_log_context(record),
        name="record-run",
        daemon=True,  # a database that never answers must not keep the process alive
    )
    recorder.start()
    recorder.join(RECORD_DEADLINE_SECONDS)
    if outcome:
        return outcome[0]
    logger.error(
        "run {} could not be recorded as {}: the database did not answer within {:g}s; "
        "the next run closes it as abandoned",
        result.run_id,
        result.status.value,
        RECORD_DEADLINE_SECONDS,
    )
    return False


def _prepare_partitions(conn: Connection, plan: Plan, now: int) -> None:
    """Create the candle partitions the run's windows need before any pair writes (PostgreSQL;
    a short transaction of its own, not inside a pair's: see storage/partitions.py)."""
    from marketdata.storage.partitions import prepare_windows

    spans = [(p.interval, w.start, w.end) for p in plan.pairs for w in p.windows]
    prepare_windows(conn, spans, now)


def _finish(app: AppContext, result: RunResult) -> bool:
    """Close the run's ledger row; if the database is gone too, say so and carry on.
    False when the row could not be written."""
    from marketdata.storage.engine import connect
    from marketdata.storage.runs import finish_run

    try:
        with connect(app.engine(), app.target) as conn:
            finish_run(conn, result)
            conn.commit()
        return True
    except MarketdataError as exc:
        logger.error(
            "run {} could not be recorded as {}: {}",
            result.run_id,
            result.status.value,
            exc.one_line(),
        )
        if isinstance(exc, DatabaseUnavailableError):
            reporting.database_unreachable(
                app,
                exc,
                trigger=result.trigger,
                providers=result.providers,
                symbols=sorted({o.symbol for o in result.outcomes}),
                run_id=result.run_id,
            )
        return False


def _asked(app: AppContext, request: IngestRequest) -> tuple[list[str], list[str]]:
    """The providers and symbols a request names (without the database: it may be down)."""
    from marketdata.domain import parse_symbols

    chain = request.providers or app.settings.ingestion_provider
    return (
        [p.strip() for item in chain for p in item.split(",") if p.strip()],
        list(request.symbols) or parse_symbols(app.settings.ingestion_symbols),
    )


def _build_chain(names: Sequence[str], ctx: ProviderContext) -> FallbackChain:
    from marketdata.providers.chain import FallbackChain
    from marketdata.providers.registry import build_provider

    return FallbackChain([build_provider(name, ctx) for name in names])


def _run_pairs(
    app: AppContext,
    plan: Plan,
    chain: FallbackChain,
    run_id: int,
    lease: RunLease,
    progress: Progress | None,
    outcomes: list[PairOutcome],
) -> None:
    """Process every pair, appending each outcome as it finishes (kept if the run stops).

    Worker threads take the pairs in groups (see `_group_size`): a group's locks are taken
    and released in one statement each, and the pairs it finds unchanged are recorded
    together, so that a tick with nothing new costs a few round trips per group, not a
    dozen per pair. Workers are daemon threads: when the run stops, the main thread waits
    STOP_GRACE_SECONDS for pairs already committing and then records the run, even if a
    worker is blocked on a database or provider that stopped answering (the process may
    then exit past it).
    """
    cancel = app.cancel
    halt = threading.Event()  # no more pairs: the run stops (a signal or an error)
    write_lock = threading.Lock() if app.target.dialect == "sqlite" else None
    concurrency = min(app.settings.ingestion_concurrency, len(plan.pairs))
    size = _group_size(len(plan.pairs), concurrency, app.settings.ingestion_batch_size)
    todo = iter([plan.pairs[i : i + size] for i in range(0, len(plan.pairs), size)])
    take = threading.Lock()
    # ("pair", outcome): one pair finished; ("group", pairs, error): a group's thread is done
    finished: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
    started = 0

    def stopping() -> bool:
        return halt.is_set() or cancel.is_set()

    def work() -> None:
        nonlocal started
        while not stopping():
            with take:
                group = next(todo, None)
                if group is None:
                    return
                started += len(group)
            try:
                _process_group(
                    app,
                    _Group(chain, run_id, group, write_lock, lease, stopping),
                    lambda outcome: finished.put(("pair", outcome)),
                )
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                finished.put(("group", len(group), exc))
                return
            finished.put(("group", len(group), None))

    workers = [
        threading.Thread(target=with_log_context(work), name=f"pair-{n}", daemon=True)
        for n in range(concurrency)
    ]
    for worker in workers:
        worker.start()
    received = 0  # pairs of the groups whose thread is done with them
    failure: BaseException | None = None

    def take_one(timeout: float) -> bool:
        nonlocal received, failure
        try:
            message = finished.get(timeout=timeout)
        except queue.Empty:
            return False
        if message[0] == "pair":
            outcomes.append(message[1])
            if progress is not None:
                progress.pair_done(message[1])
            return True
        _, pairs, error = message
        received += pairs
        if error is not None and not isinstance(error, RunInterruptedError) and failure is None:
            failure = error
            halt.set()
        return True

    while received < len(plan.pairs) and failure is None and not cancel.is_set():
        if not take_one(0.1) and not any(w.is_alive() for w in workers):
            break  # every worker ended (halted): nothing more will come
    halt.set()
    # pairs in flight: after an error they finish; after a stop signal (even one that comes
    # now) those already committing get STOP_GRACE_SECONDS and are counted, the rest roll back
    grace_ends: float | None = None
    while received < started:
        if grace_ends is None and cancel.is_set():
            grace_ends = time.monotonic() + STOP_GRACE_SECONDS
        if grace_ends is not None and time.monotonic() >= grace_ends:
            break
        take_one(0.05)
    while take_one(0):  # outcomes reported before their group's end
        pass
    if failure is not None:
        raise failure
    cancel.check()


# Pairs a worker thread takes at once: few enough that every thread gets several groups
# (the last group of a fill is not one thread's long tail), at most INGESTION_BATCH_SIZE.
GROUPS_PER_THREAD = 4


def _group_size(pairs: int, concurrency: int, batch_size: int) -> int:
    return max(1, min(batch_size, pairs // (max(concurrency, 1) * GROUPS_PER_THREAD)))


# a pair, its outcome so far and the one batch it fetched
_Fetched = tuple[PairPlan, PairOutcome, Candles]


@dataclass(frozen=True)
class _Group:
    """What a worker thread needs to run a group of pairs."""

    chain: FallbackChain
    run_id: int
    pairs: list[PairPlan]
    write_lock: threading.Lock | None
    lease: RunLease
    stopping: Callable[[], bool]


def _process_group(app: AppContext, group: _Group, report: Callable[[PairOutcome], None]) -> None:
    """Run a group's pairs under locks taken together: each pair is fetched; one whose
    candles are all stored already, unchanged, waits to be recorded with the others of the
    group (one transaction, no write); every other pair is written in its own transaction.
    A stop ends the group after the pair in flight; unchanged pairs not yet recorded then
    count as rolled back."""
    live = [(p.symbol, p.interval.value) for p in group.pairs if not p.skip]
    unchanged: list[_Fetched] = []
    with group.lease.pairs(live) as held:
        for pair in group.pairs:
            if group.stopping():
                return
            outcome = PairOutcome(pair.symbol, pair.interval.value, "ok")
            bind_pair(pair.symbol, pair.interval.value)
            log = logger.bind(symbol=pair.symbol, interval=pair.interval.value, run_id=group.run_id)
            if pair.skip:
                outcome.status = pair.skip
            elif (pair.symbol, pair.interval.value) not in held:
                outcome.status, outcome.error = "skipped", "held by another worker"
                log.info("{} {} is held by another worker; skipped", pair.symbol, pair.interval)
                _record_skip(app, group.run_id, outcome, log)
            else:
                batches = _fetch_or_fail(app, group.chain, group.run_id, pair, outcome, log)
                if batches is not None and _maybe_unchanged(pair, batches, app.clock()):
                    unchanged.append((pair, outcome, batches[0]))
                    continue
                if batches is not None:
                    _write_pair(app, group.run_id, pair, batches, outcome, group.write_lock, log)
            report(outcome)
        if unchanged and not group.stopping():
            left = {
                id(outcome) for _, outcome, _ in _record_unchanged(app, group.run_id, unchanged)
            }
            for pair, outcome, batch in unchanged:
                if id(outcome) in left:  # it differs from what is stored after all
                    log = logger.bind(
                        symbol=pair.symbol, interval=pair.interval.value, run_id=group.run_id
                    )
                    _write_pair(app, group.run_id, pair, [batch], outcome, group.write_lock, log)
                report(outcome)


def _process_pair(
    app: AppContext,
    chain: FallbackChain,
    run_id: int,
    pair: PairPlan,
    write_lock: threading.Lock | None,
    lease: RunLease,
) -> PairOutcome:
    """One pair under its own lock: fetch, then write in its own transaction."""
    outcome = PairOutcome(pair.symbol, pair.interval.value, "ok")
    bind_pair(pair.symbol, pair.interval.value)
    log = logger.bind(symbol=pair.symbol, interval=pair.interval.value, run_id=run_id)
    if pair.skip:
        outcome.status = pair.skip
        return outcome
    with lease.pair(pair.symbol, pair.interval.value) as taken:
        if not taken:
            outcome.status, outcome.error = "skipped", "held by another worker"
            log.info("{} {} is held by another worker; skipped", pair.symbol, pair.interval)
            _record_skip(app, run_id, outcome, log)
            return outcome
        batches = _fetch_or_fail(app, chain, run_id, pair, outcome, log)
        if batches is None:
            return outcome
        if _recorded_unchanged(app, run_id, pair, outcome, batches, lease):
            return outcome  # two statements on the lock session, no write
        _write_pair(app, run_id, pair, batches, outcome, write_lock, log)
    return outcome


def _fetch_or_fail(
    app: AppContext,
    chain: FallbackChain,
    run_id: int,
    pair: PairPlan,
    outcome: PairOutcome,
    log: Any,
) -> list[Candles] | None:
    """The pair's candles; None when fetching failed (the pair is then recorded failed).
    No database connection is held while the provider is asked."""
    try:
        return _fetch(app, chain, pair, outcome)
    except ProviderError as exc:
        _fail(app, run_id, outcome, exc, log.bind(provider=exc.provider).warning)
    except MarketdataError as exc:
        if isinstance(exc, RunInterruptedError):
            raise
        _fail(app, run_id, outcome, exc, log.error)
    return None


def _write_pair(
    app: AppContext,
    run_id: int,
    pair: PairPlan,
    batches: list[Candles],
    outcome: PairOutcome,
    write_lock: threading.Lock | None,
    log: Any,
) -> None:
    """Write the pair's candles with its outcome in one transaction, again in a new one after
    a transient database fault (STORE_ATTEMPTS); a pair that cannot be written is failed."""
    from marketdata.storage.engine import connect

    committed = False  # once true, the pair's candles and its ok outcome are stored

    def attempt() -> None:
        nonlocal committed
        with connect(app.engine(), app.target) as conn:
            _store(app, run_id, pair, batches, conn, outcome, write_lock)
            committed = True

    def again() -> bool:
        if committed:
            return False
        _forget_counts(outcome)  # the attempt rolled back: nothing of it counts
        return True

    try:
        _retrying(app, attempt, f"{pair.symbol} {pair.interval}", log, again=again)
    except MarketdataError as exc:
        if isinstance(exc, RunInterruptedError):
            raise
        if committed:  # the connection broke after the commit: the pair is stored
            log.warning(
                "{} {} was stored; closing its connection failed after: {}",
                pair.symbol,
                pair.interval,
                exc.one_line(),
            )
            return
        _fail(app, run_id, outcome, exc, log.error)


def _wait_to_retry(
    app: AppContext, exc: MarketdataError, attempt: int, what: str, log: Any
) -> None:
    """Back off before writing again after a transient fault (a stop ends the wait)."""
    wait = STORE_BACKOFF_SECONDS * 2 ** (attempt - 1)
    log.warning(
        "{}: {}; writing again in {:.1f}s (attempt {} of {})",
        what,
        exc.one_line(),
        wait,
        attempt + 1,
        STORE_ATTEMPTS,
    )
    app.cancel.sleep(wait)  # a stop request ends the wait at once


# An incremental tick fetches the last stored candle again and whatever is new: when that is
# a few rows at most, they are first compared with what is stored (see _record_unchanged).
UNCHANGED_MAX_ROWS = 16


def _maybe_unchanged(pair: PairPlan, batches: list[Candles], now: datetime) -> bool:
    """Whether the pair may have fetched nothing new: a few rows in strictly ascending time,
    all at or before its last stored candle, all valid. The comparison with the stored rows
    decides. The rows are validated again even when equal to stored ones: a stored row may
    predate a check (or have been stored by hand), and the write path would reject it."""
    from marketdata.validation import all_valid

    if pair.stored_last is None or len(batches) != 1:
        return False
    ts = batches[0].ts
    if not 0 < len(ts) <= UNCHANGED_MAX_ROWS or int(ts[-1]) > pair.stored_last:
        return False
    return bool(np.all(ts[1:] > ts[:-1])) and all_valid(batches[0], epoch_of(now))


def _recorded_unchanged(
    app: AppContext,
    run_id: int,
    pair: PairPlan,
    outcome: PairOutcome,
    batches: list[Candles],
    lease: RunLease,
) -> bool:
    """One pair's `_record_unchanged`: True when it was recorded so (nothing to write)."""
    if not _maybe_unchanged(pair, batches, app.clock()):
        return False
    return not _record_unchanged(app, run_id, [(pair, outcome, batches[0])], lease)


def _record_unchanged(
    app: AppContext, run_id: int, pairs: list[_Fetched], session: RunLease | None = None
) -> list[_Fetched]:
    """Record as ok and unchanged, in one transaction, the pairs whose fetched candles are all
    stored with the same values (writing them would change nothing: the write compares the
    same values, and derived data follows from stored closes that did not change). The
    pairs' locks are held, so no other writer of ours changes them meanwhile. Returns the
    pairs not recorded (they differ, or the database failed): each is left for its own write.
    A row stored without the indicators ANALYTICS_INTERVALS now asks for differs: its write
    gives the pair's history its indicators (derive.PairWriter).
    With `session` (PostgreSQL), the read and the insert run on that lock session in
    autocommit, without a pooled connection: the locks make them as good as one transaction.
    """
    from marketdata.derive import analytics_intervals
    from marketdata.storage.candles import stored_values
    from marketdata.storage.engine import connect, translate_errors
    from marketdata.storage.runs import record_outcomes

    def record(conn: Connection) -> list[_Fetched]:
        stored = stored_values(
            conn, [batch for _, _, batch in pairs], analytics_intervals(app.settings)
        )
        same = [f for f in pairs if _all_stored(f[2], stored)]
        for _, outcome, batch in same:  # the provider is the one that served it (_fetch)
            outcome.fetched = outcome.unchanged = len(batch)
        record_outcomes(conn, run_id, [outcome for _, outcome, _ in same])
        return same

    def attempt() -> list[_Fetched]:
        if session is not None and app.target.dialect == "postgresql":
            with translate_errors(app.target):
                return session.run(record)
        with connect(app.engine(), app.target) as conn, conn.begin():
            return record(conn)

    try:
        same = _retrying(app, attempt, f"{len(pairs)} unchanged pairs", logger)
    except MarketdataError as exc:
        if isinstance(exc, RunInterruptedError):
            raise
        logger.warning(
            "{} unchanged pairs could not be recorded together ({}); each is written alone",
            len(pairs),
            exc.one_line(),
        )
        same = []
    recorded = {id(outcome) for _, outcome, _ in same}
    rest = [f for f in pairs if id(f[1]) not in recorded]
    for _, outcome, _ in rest:
        _forget_counts(outcome)
    return rest


_Stored = dict[tuple[str, str, int], tuple[float, float, float, float, float] | None]


def _all_stored(batch: Candles, stored: _Stored) -> bool:
    key = (batch.symbol, batch.interval.value)
    return all(stored.get((*key, ts)) == tuple(values) for ts, *values in batch.rows())


def _retrying(
    app: AppContext,
    attempt: Callable[[], T],
    what: str,
    log: Any,
    *,
    again: Callable[[], bool] = lambda: True,
) -> T:
    """Run a write, and again in a new transaction after a transient database fault
    (STORE_ATTEMPTS, with backoff); `again` says whether a retry is still right."""
    for n in range(1, STORE_ATTEMPTS + 1):
        try:
            return attempt()
        except (DatabaseBusyError, DatabaseUnavailableError) as exc:
            if n == STORE_ATTEMPTS or not again():
                raise
            _wait_to_retry(app, exc, n, what, log)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _forget_counts(outcome: PairOutcome) -> None:
    outcome.fetched = outcome.inserted = outcome.updated = outcome.unchanged = 0
    outcome.rejected = 0


def _fail(
    app: AppContext,
    run_id: int,
    outcome: PairOutcome,
    exc: MarketdataError,
    say: Callable[..., None],
) -> None:
    """Mark the pair failed (counting no rows: nothing of it was committed) and record it."""
    outcome.status, outcome.error = "failed", exc.one_line()
    outcome.inserted = outcome.updated = outcome.unchanged = outcome.rejected = 0
    say("{} {} failed: {}", outcome.symbol, outcome.interval, exc.one_line())
    _record_failure(app, run_id, outcome)


def _fetch(
    app: AppContext, chain: FallbackChain, pair: PairPlan, outcome: PairOutcome
) -> list[Candles]:
    """Every window of the pair through the provider chain."""
    batches = []
    for window in pair.windows:
        app.cancel.check()
        served = chain.fetch(pair.symbol, pair.interval, window)
        outcome.provider = served.provider
        bind_pair(pair.symbol, pair.interval.value, served.provider)
        if served.fell_back:  # alerted once per run, after it (reporting.report_run)
            app.metrics.incr("provider.fallback")
            outcome.error = "; ".join(served.failures)  # why a later provider served it
            logger.warning(
                "{} {} served by {} after: {}",
                pair.symbol,
                pair.interval,
                served.provider,
                "; ".join(served.failures),
            )
        batches.append(served.candles)
    return batches


def _store(
    app: AppContext,
    run_id: int,
    pair: PairPlan,
    batches: list[Candles],
    conn: Connection,
    outcome: PairOutcome,
    write_lock: threading.Lock | None,
) -> None:
    """Validate and write the pair's candles, rejects and outcome in one transaction."""
    from marketdata.derive import PairWriter, analytics_intervals
    from marketdata.storage.rejects import record_rejects
    from marketdata.storage.runs import record_outcome
    from marketdata.validation import validate

    now = app.clock()
    derive = pair.interval in analytics_intervals(app.settings)
    cancel = app.cancel
    with write_lock or _no_lock():
        started = time.perf_counter()
        with conn.begin():
            writer = PairWriter(conn, now, derive=derive)
            for batch in batches:
                good, rejected = validate(batch, epoch_of(now))
                outcome.fetched += len(batch)
                outcome.rejected += len(rejected)
                record_rejects(
                    conn, run_id, pair.symbol, pair.interval.value, batch.provider, rejected, now
                )
                stats = writer.write(good)
                outcome.inserted += stats.inserted
                outcome.updated += stats.updated
                outcome.unchanged += stats.unchanged
            writer.finish()  # derived data after the batches, recomputed once
            record_outcome(conn, run_id, outcome)
            cancel.check()  # a stop before the commit leaves the transaction to roll back
        app.metrics.timing("ingestion.write_ms", (time.perf_counter() - started) * 1e3)
    if outcome.inserted + outcome.updated:  # committed: its cached values, off this thread
        from marketdata.cache.market import refresh_later

        newest = max((int(b.ts.max()) for b in batches if len(b)), default=None)
        refresh_later(app, pair.symbol, pair.interval, now, writer.whole, newest, writer.appended)


@contextmanager
def _no_lock() -> Iterator[None]:
    yield


def _record_failure(app: AppContext, run_id: int, outcome: PairOutcome) -> None:
    """Record a failed pair, unless an outcome is stored for it already (never two outcomes
    for one pair). A server that no longer answers at all ends the run."""
    from marketdata.storage.engine import connect
    from marketdata.storage.runs import record_outcome_once

    try:
        with connect(app.engine(), app.target) as conn, conn.begin():
            record_outcome_once(conn, run_id, outcome)
    except DatabaseUnavailableError:
        raise  # not one connection but the server is gone: the run ends (exit 75)
    except MarketdataError as exc:
        logger.error(
            "the failure of {} {} could not be recorded: {}",
            outcome.symbol,
            outcome.interval,
            exc.one_line(),
        )


def _record_skip(app: AppContext, run_id: int, outcome: PairOutcome, log: Any) -> None:
    """Record a pair skipped because its lock is held; warn once it has been skipped for
    longer than ALERT_STALE_AFTER (the holder may be stuck)."""
    from marketdata.storage.engine import connect
    from marketdata.storage.runs import record_outcome_once, skipped_since

    try:
        with connect(app.engine(), app.target) as conn, conn.begin():
            record_outcome_once(conn, run_id, outcome)
            since = skipped_since(conn, outcome.symbol, outcome.interval)
    except MarketdataError as exc:
        log.error(
            "the skip of {} {} could not be recorded: {}",
            outcome.symbol,
            outcome.interval,
            exc.one_line(),
        )
        return
    if since is None:
        return
    held = (app.clock() - since).total_seconds()
    if held > app.settings.stale_after_seconds:
        log.warning(
            "{} {} has been skipped since {} because another worker holds its lock "
            "(longer than ALERT_STALE_AFTER={}): is that worker stuck? see `marketdata runs`",
            outcome.symbol,
            outcome.interval,
            since.isoformat(),
            app.settings.alert_stale_after,
        )


def _status(result: RunResult, stopped: BaseException | None) -> RunStatus:
    if isinstance(stopped, RunInterruptedError):
        return RunStatus.INTERRUPTED
    if stopped is not None:
        return RunStatus.FAILURE
    failed = sum(1 for o in result.outcomes if o.status == "failed")
    if failed == 0:
        return RunStatus.SUCCESS
    if failed == len([o for o in result.outcomes if o.status in ("ok", "failed")]):
        return RunStatus.FAILURE
    return RunStatus.PARTIAL


def _run_error(result: RunResult, stopped: BaseException | None) -> str | None:
    """What the ledger says went wrong: the exception that ended the run, else the first
    pair's error when every pair failed."""
    if isinstance(stopped, MarketdataError):
        return stopped.one_line()
    if stopped is not None:
        from marketdata.redact import scrub

        return scrub(f"{type(stopped).__name__}: {stopped}")
    if result.status is RunStatus.FAILURE:
        return next((o.error for o in result.outcomes if o.error), None)
    return None
