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
from typing import TYPE_CHECKING, Any, Protocol

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
from marketdata.observability import reporting
from marketdata.observability.logging import RunLogContext, bind_pair, with_log_context

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from marketdata.context import AppContext
    from marketdata.providers.base import ProviderContext
    from marketdata.providers.chain import FallbackChain
    from marketdata.storage.locks import RunLease
    from marketdata.storage.markets import Market

MAX_LOOKBACK_DAYS = 36_500


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
    return PairPlan(
        pair.symbol, pair.interval, pair.windows, pair.stored_last, requests, seconds, pair.skip
    )


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
    it, every wait returns early, and the run is recorded once, as interrupted.
    """
    with app.cancel.watching():
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

    Workers are daemon threads: when the run stops, the main thread waits STOP_GRACE_SECONDS
    for pairs already committing and then records the run, even if a worker is blocked on
    a database or provider that stopped answering (the process may then exit past it).
    """
    cancel = app.cancel
    halt = threading.Event()  # no more pairs: the run stops (a signal or an error)
    write_lock = threading.Lock() if app.target.dialect == "sqlite" else None
    todo = iter(plan.pairs)
    take = threading.Lock()
    finished: queue.SimpleQueue[tuple[PairOutcome | None, BaseException | None]]
    finished = queue.SimpleQueue()
    started = 0

    def work() -> None:
        nonlocal started
        while not (halt.is_set() or cancel.is_set()):
            with take:
                pair = next(todo, None)
                if pair is None:
                    return
                started += 1
            try:
                outcome = _process_pair(app, chain, run_id, pair, write_lock, lease)
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                finished.put((None, exc))
                return
            finished.put((outcome, None))

    workers = [
        threading.Thread(target=with_log_context(work), name=f"pair-{n}", daemon=True)
        for n in range(min(app.settings.ingestion_concurrency, len(plan.pairs)))
    ]
    for worker in workers:
        worker.start()
    received = 0
    failure: BaseException | None = None

    def take_one(timeout: float) -> bool:
        nonlocal received, failure
        try:
            outcome, error = finished.get(timeout=timeout)
        except queue.Empty:
            return False
        received += 1
        if error is not None:
            if not isinstance(error, RunInterruptedError) and failure is None:
                failure = error
                halt.set()
        elif outcome is not None:
            outcomes.append(outcome)
            if progress is not None:
                progress.pair_done(outcome)
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
    if failure is not None:
        raise failure
    cancel.check()


def _process_pair(
    app: AppContext,
    chain: FallbackChain,
    run_id: int,
    pair: PairPlan,
    write_lock: threading.Lock | None,
    lease: RunLease,
) -> PairOutcome:
    from marketdata.storage.engine import connect

    outcome = PairOutcome(pair.symbol, pair.interval.value, "ok")
    bind_pair(pair.symbol, pair.interval.value)
    log = logger.bind(symbol=pair.symbol, interval=pair.interval.value, run_id=run_id)
    if pair.skip:
        outcome.status = pair.skip
        return outcome
    committed = False  # once true, the pair's candles and its ok outcome are stored
    try:
        with lease.pair(pair.symbol, pair.interval.value) as taken:
            if not taken:
                outcome.status, outcome.error = "skipped", "held by another worker"
                log.info("{} {} is held by another worker; skipped", pair.symbol, pair.interval)
                _record_skip(app, run_id, outcome, log)
                return outcome
            # no database connection is held while the provider is asked: only for the write
            batches = _fetch(app, chain, pair, outcome)
            for attempt in range(1, STORE_ATTEMPTS + 1):
                try:
                    with connect(app.engine(), app.target) as conn:
                        _store(app, run_id, pair, batches, conn, outcome, write_lock)
                        committed = True
                    break
                except (DatabaseBusyError, DatabaseUnavailableError) as exc:
                    if committed or attempt == STORE_ATTEMPTS:
                        raise
                    _forget_counts(outcome)  # the attempt rolled back: nothing of it counts
                    wait = STORE_BACKOFF_SECONDS * 2 ** (attempt - 1)
                    log.warning(
                        "{} {}: {}; writing again in {:.1f}s (attempt {} of {})",
                        pair.symbol,
                        pair.interval,
                        exc.one_line(),
                        wait,
                        attempt + 1,
                        STORE_ATTEMPTS,
                    )
                    app.cancel.sleep(wait)  # a stop request ends the wait at once
    except ProviderError as exc:
        _fail(app, run_id, outcome, exc, log.bind(provider=exc.provider).warning)
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
            return outcome
        _fail(app, run_id, outcome, exc, log.error)
    return outcome


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

        refresh_later(app, pair.symbol, pair.interval, now, writer.whole)


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
