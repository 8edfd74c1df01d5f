"""What a run tells operators when it ends: statsd metrics, one alert per run (deduplicated,
queued off the hot path), the staleness of its markets, and a critical alert when the
database cannot be reached (then the alert is the run's only trace). Never raises."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from loguru import logger

from marketdata.domain import Interval, RunStatus, format_duration
from marketdata.errors import MarketdataError
from marketdata.observability.alerts import Alert

if TYPE_CHECKING:
    from marketdata.context import AppContext
    from marketdata.domain import PairOutcome, RunResult
    from marketdata.freshness import Freshness

ALERTED_MARKETS = 10
"""Stale markets alerted one by one after a run; the rest go into one summary alert."""
LISTED_PAIRS = 10
_STATSD_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_STATSD_PART_MAX = 40


def report_run(app: AppContext, result: RunResult, *, database_reachable: bool = True) -> None:
    """Metrics, alerts and, when the database answered the run's end, the staleness check."""
    log = logger.bind(run_id=result.run_id, trigger=result.trigger)
    try:
        _send_metrics(app, result)
        _alert_run(app, result)
        _alert_fallbacks(app, result)
        if database_reachable:
            check_staleness(app, result)
    except Exception as exc:  # noqa: BLE001 - reporting must never change the run's outcome
        log.opt(exception=exc).error("reporting run {} failed: {}", result.run_id, exc)
    failed = [o for o in result.outcomes if o.status == "failed"]
    log.info(
        "run {} {}: {} inserted, {} updated, {} failed pairs",
        result.run_id,
        result.status.value,
        result.rows_inserted,
        result.rows_updated,
        len(failed),
    )


def _send_metrics(app: AppContext, result: RunResult) -> None:
    metrics = app.metrics
    status = result.status
    # statsd keeps the names it had: an interrupted run counts as a failure
    name = "failure" if status is RunStatus.INTERRUPTED else status.value
    metrics.incr(f"ingestion.{name}")
    if result.duration_ms is not None:
        metrics.timing("ingestion.duration_ms", result.duration_ms)
    metrics.incr("ingestion.rows_written", result.rows_written)
    if status is RunStatus.SUCCESS and result.finished_at is not None:
        metrics.gauge("ingestion.last_success_timestamp", result.finished_at.timestamp())


def _alert(
    result: RunResult,
    severity: str,
    title: str,
    text: str,
    *,
    error: str | None = None,
    symbols: Sequence[str] | None = None,
) -> Alert:
    """An alert about this run, carrying its run_id, trigger, providers and symbols."""
    return Alert(
        severity,
        title,
        text,
        run_id=result.run_id,
        trigger=result.trigger,
        providers=list(result.providers),
        symbols=sorted({o.symbol for o in result.outcomes}) if symbols is None else symbols,
        error=error,
    )


def _alert_run(app: AppContext, result: RunResult) -> None:
    """A failed run is an error, a partial or interrupted one a warning; success says nothing."""
    if result.status is RunStatus.SUCCESS:
        return
    failed = [o for o in result.outcomes if o.status == "failed"]
    severity = "error" if result.status is RunStatus.FAILURE else "warning"
    text = _listed([f"{o.symbol} {o.interval}: {o.error}" for o in failed]) or (result.error or "")
    title = f"ingestion run {result.run_id} {result.status.value}"
    if failed:
        title += f": {len(failed)} of {len(result.outcomes)} pairs failed"
    error = result.error or next((o.error for o in failed if o.error), None)
    app.alerts.send(_alert(result, severity, title, text, error=error))


def _alert_fallbacks(app: AppContext, result: RunResult) -> None:
    """One warning per run for every pair a later provider in the chain had to serve."""
    served = [o for o in result.outcomes if o.status == "ok" and _fell_back(result.providers, o)]
    if not served:
        return
    by = sorted({o.provider for o in served if o.provider})
    title = f"{_pairs(len(served))} served by fallback provider {', '.join(by)}"
    text = _listed([f"{o.symbol} {o.interval} by {o.provider} after {o.error}" for o in served])
    app.alerts.send(_alert(result, "warning", title, text))


def _fell_back(chain: Sequence[str], outcome: PairOutcome) -> bool:
    """True when the pair was served by a provider after the first that serves its interval."""
    from marketdata.providers.registry import provider_class

    if outcome.provider is None:
        return False
    interval = Interval(outcome.interval)
    first = next((p for p in chain if interval in provider_class(p).intervals), None)
    return first is not None and outcome.provider != first


def _listed(lines: list[str]) -> str:
    shown = lines[:LISTED_PAIRS]
    if len(lines) > LISTED_PAIRS:
        shown.append(f"... and {len(lines) - LISTED_PAIRS} more")
    return "; ".join(shown)


def check_staleness(app: AppContext, result: RunResult) -> list[Freshness]:
    """Gauge `market.staleness_seconds.<symbol>.<interval>` for each market of the run, and
    an error alert for each stale one (the stalest ALERTED_MARKETS one by one, the rest in
    one summary). Skipped when the database cannot be reached."""
    from marketdata.freshness import disabled_symbols, market_freshness
    from marketdata.storage.engine import connect

    pairs = {(o.symbol, o.interval) for o in result.outcomes if o.status != "disabled"}
    if not pairs:
        return []
    stale_after = app.settings.stale_after_seconds
    try:
        with connect(app.engine(), app.target) as conn:
            off = disabled_symbols(conn, app.settings.ingestion_disabled_symbols)
            found = market_freshness(conn, app.clock(), stale_after, pairs=pairs, disabled=off)
    except MarketdataError as exc:
        logger.bind(run_id=result.run_id, trigger=result.trigger).warning(
            "staleness not checked after run {}: {}", result.run_id, exc.one_line()
        )
        return []
    for f in found:
        app.metrics.gauge(
            f"market.staleness_seconds.{statsd_part(f.symbol)}.{statsd_part(f.interval)}",
            f.staleness_seconds,
        )
    stale = sorted((f for f in found if f.stale), key=lambda f: -f.staleness_seconds)
    limit = format_duration(stale_after)
    for f in stale[:ALERTED_MARKETS]:
        title = f"{f.symbol} {f.interval} is stale"
        text = (
            f"newest candle {f.newest.isoformat().replace('+00:00', 'Z')}, "
            f"{format_duration(f.age_seconds)} old; the next bar was due "
            f"{format_duration(f.staleness_seconds)} ago (ALERT_STALE_AFTER {limit})"
        )
        app.alerts.send(_alert(result, "error", title, text, symbols=[f.symbol]))
    rest = stale[ALERTED_MARKETS:]
    if rest:
        app.alerts.send(
            _alert(
                result,
                "error",
                f"{len(rest)} more markets are stale",
                _listed([f"{f.symbol} {f.interval}" for f in rest])
                + " (`marketdata status` lists them all)",
                symbols=sorted({f.symbol for f in rest}),
            )
        )
    return stale


def statsd_part(text: str) -> str:
    """A piece of a statsd name: dots, colons, pipes and the like become '_', bounded length."""
    return _STATSD_UNSAFE.sub("_", text)[:_STATSD_PART_MAX] or "_"


def database_unreachable(
    app: AppContext,
    error: MarketdataError,
    *,
    trigger: str,
    providers: Sequence[str],
    symbols: Sequence[str],
    run_id: int | None = None,
) -> None:
    """A critical alert: the database cannot be reached, so the run cannot record itself."""
    what = (
        "ingestion run could not start"
        if run_id is None
        else f"ingestion run {run_id} could not be recorded"
    )
    alert = Alert(
        "critical",
        f"database unreachable: {what}",
        error.one_line(),
        run_id=run_id,
        trigger=trigger,
        providers=list(providers),
        symbols=list(symbols),
        error=error.one_line(),
    )
    # the CLI prints the error itself; the log keeps the fact that the alert went out
    logger.bind(run_id=run_id, trigger=trigger).debug("critical alert queued: {}", alert.title)
    app.alerts.send(alert)


def _pairs(count: int) -> str:
    return f"{count} pair" if count == 1 else f"{count} pairs"
