"""One ingestion run: plan -> lock -> fetch -> validate -> store -> record -> report."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Protocol

from loguru import logger

from marketdata.domain import (
    DAY,
    Interval,
    PairOutcome,
    RunResult,
    RunStatus,
    Window,
    epoch_of,
    utc_from_epoch,
)
from marketdata.errors import (
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
    from marketdata.storage.markets import Market

MAX_LOOKBACK_DAYS = 36_500


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
    from marketdata.providers.registry import parse_chain

    chain = parse_chain(request.providers or app.settings.ingestion_provider)
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


def run_ingest(
    app: AppContext, request: IngestRequest, progress: Progress | None = None
) -> RunResult:
    """Run the request: every pair in its own transaction; a failing pair spoils no other."""
    from marketdata.storage.engine import connect
    from marketdata.storage.markets import symbol_overrides, trading_calendars
    from marketdata.storage.runs import start_run

    try:
        engine = app.engine()
        plan = build_plan(app, request)
        started = app.clock()
        result = RunResult(None, request.trigger, plan.providers, started)
        with connect(engine, app.target) as conn:
            result.run_id = start_run(
                conn,
                trigger=request.trigger,
                providers=plan.providers,
                symbols=sorted({p.symbol for p in plan.pairs}),
                intervals=sorted({p.interval.value for p in plan.pairs}),
                started_at=started,
            )
            overrides = symbol_overrides(conn)
            calendars = trading_calendars(conn)
            conn.commit()
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
    cancel = threading.Event()
    stopped: BaseException | None = None  # an interrupt, or an error that ended the run
    provider_ctx = app.provider_context(overrides, calendars)
    try:
        chain = _build_chain(plan.providers, provider_ctx)
        _run_pairs(app, plan, chain, result.run_id, cancel, progress, result.outcomes)
    except KeyboardInterrupt:
        stopped = RunInterruptedError(2)
    except Exception as exc:  # noqa: BLE001 - recorded in the ledger, then raised again below
        stopped = exc
    finally:
        provider_ctx.close()
        result.finished_at = app.clock()
        result.status = _status(result, stopped)
        result.error = _run_error(result, stopped)
        recorded = _finish(app, result)
        reporting.report_run(app, result, database_reachable=recorded)
        log_context.close()
    if stopped is not None:
        raise stopped
    return result


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
    cancel: threading.Event,
    progress: Progress | None,
    outcomes: list[PairOutcome],
) -> None:
    """Process every pair, appending each outcome as it finishes (kept if the run stops)."""
    size = app.settings.ingestion_batch_size
    write_lock = threading.Lock() if app.target.dialect == "sqlite" else None
    workers = app.settings.ingestion_concurrency
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pair") as pool:
        # big universes go in groups so memory stays flat
        for first in range(0, len(plan.pairs), size):
            group = plan.pairs[first : first + size]
            # each pair runs in a copy of this context: its records carry the run's context
            futures: dict[Future[PairOutcome], PairPlan] = {
                pool.submit(
                    with_log_context(_process_pair), app, chain, run_id, pair, cancel, write_lock
                ): pair
                for pair in group
            }
            try:
                pending = set(futures)
                while pending:
                    done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                    for future in done:
                        outcome = future.result()
                        outcomes.append(outcome)
                        if progress is not None:
                            progress.pair_done(outcome)
            except BaseException:
                cancel.set()
                for future in futures:
                    future.cancel()
                raise


def _process_pair(
    app: AppContext,
    chain: FallbackChain,
    run_id: int,
    pair: PairPlan,
    cancel: threading.Event,
    write_lock: threading.Lock | None,
) -> PairOutcome:
    from marketdata.storage.engine import connect
    from marketdata.storage.locks import pair_lock

    outcome = PairOutcome(pair.symbol, pair.interval.value, "ok")
    bind_pair(pair.symbol, pair.interval.value)
    log = logger.bind(symbol=pair.symbol, interval=pair.interval.value, run_id=run_id)
    if pair.skip:
        outcome.status = pair.skip
        return outcome
    try:
        with (
            connect(app.engine(), app.target) as conn,
            pair_lock(conn, pair.symbol, pair.interval.value, app.lock_dir()) as taken,
        ):
            if not taken:
                outcome.status = "locked"
                log.info("{} {} is held by another worker; skipped", pair.symbol, pair.interval)
                return outcome
            _fetch_and_store(app, chain, run_id, pair, conn, outcome, cancel, write_lock)
    except ProviderError as exc:
        outcome.status, outcome.error = "failed", exc.one_line()
        log.bind(provider=exc.provider).warning(
            "{} {} failed: {}", pair.symbol, pair.interval, exc.one_line()
        )
        _record_failure(app, run_id, outcome)
    except MarketdataError as exc:
        if isinstance(exc, RunInterruptedError):
            raise
        outcome.status, outcome.error = "failed", exc.one_line()
        log.error("{} {} failed: {}", pair.symbol, pair.interval, exc.one_line())
        _record_failure(app, run_id, outcome)
    return outcome


def _fetch_and_store(
    app: AppContext,
    chain: FallbackChain,
    run_id: int,
    pair: PairPlan,
    conn: Connection,
    outcome: PairOutcome,
    cancel: threading.Event,
    write_lock: threading.Lock | None,
) -> None:
    from marketdata.derive import analytics_intervals, write_with_derived
    from marketdata.storage.rejects import record_rejects
    from marketdata.storage.runs import record_outcome
    from marketdata.validation import validate

    now = app.clock()
    derive = pair.interval in analytics_intervals(app.settings)
    batches = []
    for window in pair.windows:
        if cancel.is_set():
            raise RunInterruptedError(15)
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
    with write_lock or _no_lock():
        started = time.perf_counter()
        with conn.begin():
            for batch in batches:
                good, rejected = validate(batch, epoch_of(now))
                outcome.fetched += len(batch)
                outcome.rejected += len(rejected)
                record_rejects(
                    conn, run_id, pair.symbol, pair.interval.value, batch.provider, rejected, now
                )
                stats = write_with_derived(conn, good, now, derive=derive)
                outcome.inserted += stats.inserted
                outcome.updated += stats.updated
                outcome.unchanged += stats.unchanged
            record_outcome(conn, run_id, outcome)
            if cancel.is_set():  # leave the transaction uncommitted: it rolls back
                raise RunInterruptedError(15)
        app.metrics.timing("ingestion.write_ms", (time.perf_counter() - started) * 1e3)


@contextmanager
def _no_lock() -> Iterator[None]:
    yield


def _record_failure(app: AppContext, run_id: int, outcome: PairOutcome) -> None:
    from marketdata.storage.engine import connect
    from marketdata.storage.runs import record_outcome

    with connect(app.engine(), app.target) as conn, conn.begin():
        record_outcome(conn, run_id, outcome)


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
