"""The `metrics` report, built from the run history in the database (the source of truth
across timer runs): run counters, a duration histogram with percentiles, rows, last success
and failure, by trigger and provider, plus each market's freshness. Rendered as JSON-ready
data or as Prometheus text (written atomically for node_exporter's textfile collector)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from marketdata.domain import RunStatus, epoch_of
from marketdata.freshness import Freshness

if TYPE_CHECKING:
    from prometheus_client.registry import Collector, CollectorRegistry
    from sqlalchemy import Connection

    from marketdata.context import AppContext
    from marketdata.storage.run_history import GroupTotals

DURATION_BUCKETS_MS = (
    100.0,
    250.0,
    500.0,
    1_000.0,
    2_500.0,
    5_000.0,
    10_000.0,
    30_000.0,
    60_000.0,
    120_000.0,
    300_000.0,
    600_000.0,
    1_800_000.0,
)
"""Upper bounds of the duration histogram (ms); +Inf follows."""
QUANTILES = (50, 95, 99)
COUNTED = tuple(s.value for s in RunStatus)
"""Run statuses with an `ingestion_<status>_total` counter (every finished state)."""


@dataclass
class RunStats:
    """Aggregates over a set of finished runs."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTED, 0))
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_rejected: int = 0
    durations: int = 0
    duration_sum: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * len(DURATION_BUCKETS_MS))
    quantiles: dict[int, float] = field(default_factory=dict)
    last_success: datetime | None = None
    last_failure: datetime | None = None

    def add(self, group: GroupTotals) -> None:
        """Fold one (trigger, providers, status) group in."""
        self.counts[group.status] = self.counts.get(group.status, 0) + group.runs
        self.rows_inserted += group.rows_inserted
        self.rows_updated += group.rows_updated
        self.rows_rejected += group.rows_rejected
        self.durations += group.durations
        self.duration_sum += group.duration_sum
        self.buckets = [a + b for a, b in zip(self.buckets, group.buckets, strict=True)]
        if group.status == RunStatus.SUCCESS.value:
            self.last_success = _later(self.last_success, group.last_finished)
        elif group.status == RunStatus.FAILURE.value:
            self.last_failure = _later(self.last_failure, group.last_finished)

    @property
    def rows_written(self) -> int:
        """Candles inserted or updated."""
        return self.rows_inserted + self.rows_updated

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: `ingestion_<status>_total`, rows, `ingestion_duration_ms`, last times."""
        data: dict[str, Any] = {f"ingestion_{s}_total": n for s, n in self.counts.items()}
        data |= {
            "ingestion_rows_written_total": self.rows_written,
            "ingestion_rows_inserted_total": self.rows_inserted,
            "ingestion_rows_updated_total": self.rows_updated,
            "ingestion_rows_rejected_total": self.rows_rejected,
            "ingestion_duration_ms": {
                "buckets": [
                    *(
                        {"le": b, "count": n}
                        for b, n in zip(DURATION_BUCKETS_MS, self.buckets, strict=True)
                    ),
                    {"le": "+Inf", "count": self.durations},
                ],
                "count": self.durations,
                "sum": self.duration_sum,
                **{f"p{q}": self.quantiles.get(q) for q in QUANTILES},
            },
            "ingestion_last_success": self.last_success,
            "ingestion_last_failure": self.last_failure,
        }
        return data


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return max(a, b)


@dataclass
class MetricsReport:
    """Everything `marketdata metrics` shows."""

    generated_at: datetime
    since: datetime | None
    symbols: list[str] | None
    stale_after: int
    total: RunStats
    by_trigger: dict[str, RunStats]
    by_provider: dict[str, RunStats]
    groups: dict[tuple[str, str], RunStats]  # (trigger, provider chain)
    freshness: list[Freshness]

    @property
    def stale(self) -> list[Freshness]:
        """Markets stale beyond ALERT_STALE_AFTER, stalest first."""
        return sorted((f for f in self.freshness if f.stale), key=lambda f: -f.staleness_seconds)

    def as_dict(self) -> dict[str, Any]:
        """The `--json` document (stable field names)."""
        return {
            "generated_at": self.generated_at,
            "since": self.since,
            "symbols": self.symbols,
            **self.total.as_dict(),
            "by_trigger": {k: v.as_dict() for k, v in sorted(self.by_trigger.items())},
            "by_provider": {k: v.as_dict() for k, v in sorted(self.by_provider.items())},
            "stale_after_seconds": self.stale_after,
            "freshness": [f.as_dict() for f in self.freshness],
            "stale": [f.as_dict() for f in self.stale],
        }


def build_report(
    conn: Connection,
    now: datetime,
    stale_after: int,
    *,
    since: datetime | None = None,
    symbols: Sequence[str] | None = None,
    disabled: Iterable[str] = (),
) -> MetricsReport:
    """Aggregate the run history in SQL (two statements, whatever its length) and read each
    market's freshness (one index lookup per market)."""
    from marketdata.freshness import market_freshness
    from marketdata.storage.run_history import duration_quantiles, group_totals

    total = RunStats()
    by_trigger: dict[str, RunStats] = {}
    by_provider: dict[str, RunStats] = {}
    groups: dict[tuple[str, str], RunStats] = {}
    for group in group_totals(conn, DURATION_BUCKETS_MS, since=since, symbols=symbols):
        for stats in (
            total,
            by_trigger.setdefault(group.trigger, RunStats()),
            by_provider.setdefault(group.providers, RunStats()),
            groups.setdefault((group.trigger, group.providers), RunStats()),
        ):
            stats.add(group)
    quantiles = duration_quantiles(conn, QUANTILES, since=since, symbols=symbols)
    total.quantiles = quantiles.get(("all", ""), {})
    for name, stats in by_trigger.items():
        stats.quantiles = quantiles.get(("trigger", name), {})
    for name, stats in by_provider.items():
        stats.quantiles = quantiles.get(("provider", name), {})
    fresh = market_freshness(conn, now, stale_after, symbols=symbols, disabled=disabled)
    return MetricsReport(
        now,
        since,
        list(symbols) if symbols else None,
        stale_after,
        total,
        by_trigger,
        by_provider,
        groups,
        fresh,
    )


def metrics_report(
    app: AppContext, *, since: datetime | None = None, symbols: Sequence[str] | None = None
) -> MetricsReport:
    """The report for this command's database, clock and ALERT_STALE_AFTER."""
    from marketdata.freshness import disabled_symbols
    from marketdata.storage.engine import connect

    with connect(app.engine(), app.target) as conn:
        off = disabled_symbols(conn, app.settings.ingestion_disabled_symbols)
        return build_report(
            conn,
            app.clock(),
            app.settings.stale_after_seconds,
            since=since,
            symbols=symbols,
            disabled=off,
        )


# ------------------------------------------------------------------------------- Prometheus


def prometheus_registry(report: MetricsReport) -> CollectorRegistry:
    """A registry holding the report as Prometheus metric families."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_collector(report))
    return registry


def prometheus_text(report: MetricsReport) -> str:
    """The report in Prometheus' text exposition format."""
    from prometheus_client import generate_latest

    return generate_latest(prometheus_registry(report)).decode()


def write_textfile(report: MetricsReport, path: Path) -> None:
    """Write the Prometheus text for node_exporter's textfile collector atomically (a
    temporary file beside `path`, then a rename), so a scrape never reads half a file.

    Raises:
        InputError: When the directory is missing or not writable.
    """
    from prometheus_client import write_to_textfile

    from marketdata.errors import InputError

    try:
        write_to_textfile(str(path), prometheus_registry(report))
    except OSError as exc:
        raise InputError(
            f"cannot write --textfile {path}: {exc.strerror or exc}",
            hint="give a path in an existing, writable directory",
        ) from None


def _collector(report: MetricsReport) -> Collector:
    from prometheus_client.metrics_core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import Collector

    labels = ["trigger", "provider"]
    market = ["symbol", "interval"]

    class ReportCollector(Collector):
        def collect(self) -> Iterable[Metric]:
            # every finished state, and any other the history holds (a newer version's)
            statuses = [*COUNTED, *sorted(set(report.total.counts) - set(COUNTED))]
            counters = {
                status: CounterMetricFamily(
                    f"ingestion_{status}",
                    f"Ingestion runs that ended with status {status}.",
                    labels=labels,
                )
                for status in statuses
            }
            rows = CounterMetricFamily(
                "ingestion_rows_written", "Candles inserted or updated by runs.", labels=labels
            )
            rejected = CounterMetricFamily(
                "ingestion_rows_rejected", "Candles rejected by validation.", labels=labels
            )
            durations = HistogramMetricFamily(
                "ingestion_duration_ms", "Wall time of finished runs (ms).", labels=labels
            )
            success = GaugeMetricFamily(
                "ingestion_last_success_timestamp_seconds",
                "When the last successful run finished (Unix time).",
                labels=labels,
            )
            failure = GaugeMetricFamily(
                "ingestion_last_failure_timestamp_seconds",
                "When the last failed run finished (Unix time).",
                labels=labels,
            )
            for (trigger, provider), stats in sorted(report.groups.items()):
                values = [trigger, provider]
                for status, family in counters.items():
                    family.add_metric(values, stats.counts.get(status, 0))
                rows.add_metric(values, stats.rows_written)
                rejected.add_metric(values, stats.rows_rejected)
                buckets = [
                    (str(b), n) for b, n in zip(DURATION_BUCKETS_MS, stats.buckets, strict=True)
                ]
                durations.add_metric(
                    values, [*buckets, ("+Inf", stats.durations)], stats.duration_sum
                )
                if stats.last_success is not None:
                    success.add_metric(values, stats.last_success.timestamp())
                if stats.last_failure is not None:
                    failure.add_metric(values, stats.last_failure.timestamp())
            yield from counters.values()
            yield from (rows, rejected, durations, success, failure)
            newest = GaugeMetricFamily(
                "market_newest_candle_timestamp_seconds",
                "Start of the newest stored candle (Unix time).",
                labels=market,
            )
            age = GaugeMetricFamily(
                "market_age_seconds", "Seconds since the newest stored candle.", labels=market
            )
            staleness = GaugeMetricFamily(
                "market_staleness_seconds",
                "Seconds since the next bar the market's calendar expects was due (0 if none).",
                labels=market,
            )
            stale = GaugeMetricFamily(
                "market_stale",
                "1 when staleness exceeds ALERT_STALE_AFTER (enabled markets only).",
                labels=market,
            )
            for f in report.freshness:
                values = [f.symbol, f.interval]
                newest.add_metric(values, epoch_of(f.newest))
                age.add_metric(values, f.age_seconds)
                staleness.add_metric(values, f.staleness_seconds)
                stale.add_metric(values, 1 if f.stale else 0)
            yield from (newest, age, staleness, stale)
            yield GaugeMetricFamily(
                "market_stale_after_seconds",
                "ALERT_STALE_AFTER in seconds.",
                value=report.stale_after,
            )

    return ReportCollector()
