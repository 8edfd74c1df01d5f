"""The metrics report from the run history: counters, histogram and percentiles aggregated
in SQL on both backends, by trigger and provider, --since and --symbols, freshness, and the
Prometheus text read back with prometheus_client's own parser."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from marketdata.domain import DAY, Candles, Interval, epoch_of
from marketdata.freshness import freshness_of, market_freshness, next_expected_bar
from marketdata.run_metrics import build_report, prometheus_text, write_textfile
from marketdata.storage.candles import write_candles
from marketdata.storage.engine import connect
from marketdata.storage.schema import ingestion_runs

T0 = datetime(2024, 4, 1, tzinfo=UTC)
NOW = datetime(2024, 4, 10, 12, tzinfo=UTC)
HOUR = 3600

# (trigger, providers, status, duration ms, symbols), one run an hour from T0
TIMER = [
    ("timer", "coinbase", "failure" if i in (3, 7) else "partial" if i == 9 else "success",
     100.0 * (i + 1), ["BTC-USD"])
    for i in range(10)
]  # fmt: skip
MANUAL = [
    ("manual", "coinbase,kraken", "interrupted" if ms == 60_000 else "success", ms,
     ["ETH-USD", "SOL-USD"])
    for ms in (2_000.0, 3_000.0, 4_000.0, 5_000.0, 60_000.0)
]  # fmt: skip
RUNS = TIMER + MANUAL


def seed(conn: sa.Connection, runs=RUNS, *, running: bool = True) -> None:
    rows = []
    for i, (trigger, providers, status, ms, symbols) in enumerate(runs):
        started = T0 + timedelta(hours=i)
        rows.append(
            {
                "trigger": trigger,
                "providers": providers,
                "symbols": symbols,
                "intervals": ["1d"],
                "started_at": started,
                "finished_at": started + timedelta(milliseconds=ms),
                "status": status,
                "rows_inserted": 10,
                "rows_updated": 1,
                "rows_rejected": 2 if status == "partial" else 0,
                "duration_ms": ms,
                "error": "boom" if status == "failure" else None,
                "host": "test",
            }
        )
    if running:  # in flight: not counted anywhere
        rows.append({**rows[0], "status": "running", "finished_at": None, "duration_ms": None})
    conn.execute(ingestion_runs.insert(), rows)
    conn.commit()


def finished(i: int) -> datetime:
    return T0 + timedelta(hours=i, milliseconds=RUNS[i][3])


@pytest.fixture
def conn(app_factory):
    app = app_factory()
    with connect(app.engine(), app.target) as connection:
        yield connection


def test_counters_histogram_and_percentiles_come_from_the_history(conn):
    seed(conn)
    report = build_report(conn, NOW, 2 * HOUR)
    data = report.as_dict()
    assert data["ingestion_success_total"] == 11
    assert data["ingestion_failure_total"] == 2
    assert data["ingestion_partial_total"] == 1
    assert data["ingestion_interrupted_total"] == 1
    assert data["ingestion_rows_written_total"] == 15 * 11
    assert data["ingestion_rows_rejected_total"] == 2
    histogram = data["ingestion_duration_ms"]
    assert histogram["count"] == 15
    assert histogram["sum"] == pytest.approx(5_500 + 74_000)
    buckets = {b["le"]: b["count"] for b in histogram["buckets"]}
    assert (buckets[100.0], buckets[250.0], buckets[500.0], buckets[1_000.0]) == (1, 2, 5, 10)
    assert (buckets[2_500.0], buckets[5_000.0], buckets[30_000.0]) == (11, 14, 14)
    assert (buckets[60_000.0], buckets[1_800_000.0], buckets["+Inf"]) == (15, 15, 15)
    # nearest rank over 15 durations: the 8th, then the 15th
    assert (histogram["p50"], histogram["p95"], histogram["p99"]) == (800.0, 60_000.0, 60_000.0)
    assert data["ingestion_last_success"] == finished(13)
    assert data["ingestion_last_failure"] == finished(7)


def test_percentiles_are_the_stored_durations_exactly(conn):
    # irregular durations (all 17 significant digits matter) in two groups: each percentile
    # is one stored value, read back bit for bit on both backends
    import random

    rng = random.Random(7)
    runs = [
        ("timer" if i % 3 else "manual", "coinbase", "success", rng.lognormvariate(7.5, 1.0), ["X"])
        for i in range(301)
    ]
    seed(conn, runs, running=False)
    data = build_report(conn, NOW, 2 * HOUR).as_dict()

    def nearest_rank(values: list[float], q: int) -> float:
        return sorted(values)[(len(values) * q + 99) // 100 - 1]

    every = [r[3] for r in runs]
    manual = [r[3] for r in runs if r[0] == "manual"]
    for q in (50, 95, 99):
        assert data["ingestion_duration_ms"][f"p{q}"] == nearest_rank(every, q)
        manual_ms = data["by_trigger"]["manual"]["ingestion_duration_ms"][f"p{q}"]
        assert manual_ms == nearest_rank(manual, q)
        assert data["by_provider"]["coinbase"]["ingestion_duration_ms"][f"p{q}"] == nearest_rank(
            every, q
        )


def test_the_same_figures_are_broken_down_by_trigger_and_provider(conn):
    seed(conn)
    data = build_report(conn, NOW, 2 * HOUR).as_dict()
    timer, manual = data["by_trigger"]["timer"], data["by_trigger"]["manual"]
    assert (timer["ingestion_success_total"], timer["ingestion_failure_total"]) == (7, 2)
    assert (manual["ingestion_success_total"], manual["ingestion_interrupted_total"]) == (4, 1)
    durations = timer["ingestion_duration_ms"]
    assert (durations["p50"], durations["p95"], durations["p99"]) == (500.0, 1_000.0, 1_000.0)
    assert manual["ingestion_duration_ms"]["p50"] == 4_000.0
    assert manual["ingestion_last_failure"] is None
    assert set(data["by_provider"]) == {"coinbase", "coinbase,kraken"}
    assert data["by_provider"]["coinbase,kraken"]["ingestion_duration_ms"]["count"] == 5


def test_since_and_symbols_narrow_the_runs(conn):
    seed(conn)
    recent = build_report(conn, NOW, 2 * HOUR, since=T0 + timedelta(hours=12)).as_dict()
    assert recent["ingestion_success_total"] == 2  # runs 12 and 13; 14 was interrupted
    assert recent["ingestion_interrupted_total"] == 1
    assert recent["ingestion_duration_ms"]["count"] == 3
    only = build_report(conn, NOW, 2 * HOUR, symbols=["SOL-USD"]).as_dict()
    assert only["ingestion_duration_ms"]["count"] == 5
    assert set(only["by_trigger"]) == {"manual"}
    nothing = build_report(conn, NOW, 2 * HOUR, symbols=["DOGE-USD"]).as_dict()
    assert nothing["ingestion_success_total"] == 0
    assert nothing["ingestion_duration_ms"]["p50"] is None


def test_an_empty_history_reports_zeros_not_errors(conn):
    data = build_report(conn, NOW, 2 * HOUR).as_dict()
    assert data["ingestion_success_total"] == 0
    assert data["ingestion_duration_ms"]["count"] == 0
    assert data["freshness"] == [] and data["stale"] == []
    families = {f.name for f in text_string_to_metric_families(
        prometheus_text(build_report(conn, NOW, 2 * HOUR))
    )}  # fmt: skip
    assert "ingestion_success" in families


def store(conn, symbol: str, interval: Interval, newest: datetime, bars: int = 3) -> None:
    step = interval.seconds
    last = epoch_of(newest)
    rows = [(last - (bars - 1 - i) * step, 10, 11, 9, 10, 1) for i in range(bars)]
    with conn.begin():
        write_candles(conn, Candles.from_rows(symbol, interval, "synthetic", rows), NOW)


def test_freshness_follows_each_markets_calendar(conn):
    store(conn, "BTC-USD", Interval.H1, NOW - timedelta(hours=5))  # 07:00: 08:00 due at 09:00
    store(conn, "ETH-USD", Interval.H1, NOW - timedelta(hours=1))  # 11:00: 12:00 due at 13:00
    friday = datetime(2024, 4, 5, tzinfo=UTC)
    store(conn, "AAPL", Interval.D1, friday)  # Monday's bar is due Tuesday 00:00
    monday_noon = datetime(2024, 4, 8, 12, tzinfo=UTC)
    found = {
        (f.symbol, f.interval): f
        for f in market_freshness(conn, NOW, 2 * HOUR, disabled=["ETH-USD"])
    }
    btc = found[("BTC-USD", "1h")]
    assert (btc.age_seconds, btc.staleness_seconds, btc.stale) == (5 * HOUR, 3 * HOUR, True)
    eth = found[("ETH-USD", "1h")]
    assert (eth.staleness_seconds, eth.stale, eth.state) == (0, False, "disabled")
    aapl = found[("AAPL", "1d")]
    assert aapl.due == datetime(2024, 4, 9, tzinfo=UTC) and aapl.stale  # Wednesday noon now
    on_monday = freshness_of("AAPL", Interval.D1, epoch_of(friday), epoch_of(monday_noon), 0)
    assert on_monday.staleness_seconds == 0 and not on_monday.stale
    crypto = freshness_of("BTC-USD", Interval.D1, epoch_of(friday), epoch_of(monday_noon), 0)
    assert crypto.staleness_seconds == DAY + 12 * HOUR  # Saturday's bar was due Sunday 00:00


def test_the_next_expected_bar_follows_each_market_s_sessions():
    friday_1500 = epoch_of(datetime(2024, 4, 5, 15, tzinfo=UTC))
    friday_2300 = epoch_of(datetime(2024, 4, 5, 23, tzinfo=UTC))
    monday = epoch_of(datetime(2024, 4, 8, tzinfo=UTC))
    assert next_expected_bar("AAPL", Interval.H1, friday_1500) == friday_1500 + HOUR
    # New York opens 13:30 UTC in April: the 13:00 bar is Monday's first
    assert next_expected_bar("AAPL", Interval.H1, friday_2300) == monday + 13 * HOUR
    assert next_expected_bar("AAPL", Interval.D1, monday - 3 * DAY) == monday
    assert next_expected_bar("BTC-USD", Interval.H1, friday_2300) == friday_2300 + HOUR
    assert next_expected_bar("EURUSD=X", Interval.H1, friday_2300) == monday
    sunday = epoch_of(datetime(2024, 4, 7, 12, tzinfo=UTC))
    assert next_expected_bar("^GSPC", Interval.M15, sunday) == monday + 13 * HOUR + 1800


def test_freshness_reads_one_index_probe_per_market_over_many_symbols(conn):
    symbols = [f"S{i:03d}-USD" for i in range(120)]
    for symbol in symbols:
        store(conn, symbol, Interval.D1, NOW.replace(hour=0), bars=2)
    store(conn, "S000-USD", Interval.M5, NOW - timedelta(minutes=5), bars=2)
    found = market_freshness(conn, NOW, 2 * HOUR)
    assert [(f.symbol, f.interval) for f in found[:3]] == [
        ("S000-USD", "5m"),
        ("S000-USD", "1d"),
        ("S001-USD", "1d"),
    ]
    assert len(found) == 121
    some = market_freshness(conn, NOW, 2 * HOUR, symbols=["S007-USD", "NOPE"])
    assert [(f.symbol, f.interval) for f in some] == [("S007-USD", "1d")]


def test_prometheus_text_parses_with_types_labels_and_buckets(conn):
    seed(conn)
    store(conn, "BTC-USD", Interval.H1, NOW - timedelta(hours=5))
    text = prometheus_text(build_report(conn, NOW, 2 * HOUR))
    assert "# HELP ingestion_success_total " in text
    assert "# TYPE ingestion_duration_ms histogram" in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["ingestion_success"].type == "counter"
    assert families["ingestion_failure"].type == "counter"
    assert families["ingestion_duration_ms"].type == "histogram"
    assert families["market_staleness_seconds"].type == "gauge"
    success = {
        (s.labels["trigger"], s.labels["provider"]): s.value
        for s in families["ingestion_success"].samples
        if s.name == "ingestion_success_total"
    }
    assert success == {("timer", "coinbase"): 7, ("manual", "coinbase,kraken"): 4}
    samples = families["ingestion_duration_ms"].samples
    timer = [s for s in samples if s.labels.get("trigger") == "timer"]
    buckets = {s.labels["le"]: s.value for s in timer if s.name == "ingestion_duration_ms_bucket"}
    assert buckets["+Inf"] == 10 and buckets["500.0"] == 5
    assert next(s.value for s in timer if s.name == "ingestion_duration_ms_count") == 10
    assert next(s.value for s in timer if s.name == "ingestion_duration_ms_sum") == 5_500
    [stale] = families["market_stale"].samples
    assert stale.labels == {"symbol": "BTC-USD", "interval": "1h"} and stale.value == 1
    [staleness] = families["market_staleness_seconds"].samples
    assert staleness.value == 3 * HOUR


def test_the_textfile_is_replaced_atomically_and_leaves_no_temporary_file(conn, tmp_path):
    seed(conn)
    (tmp_path / "textfiles").mkdir()
    target = tmp_path / "textfiles" / "marketdata.prom"
    target.write_text("old\n")
    before = os.stat(target).st_ino
    report = build_report(conn, NOW, 2 * HOUR)
    write_textfile(report, target)
    assert os.stat(target).st_ino != before  # a rename, never a rewrite in place
    assert target.read_text() == prometheus_text(report)
    assert sorted(p.name for p in target.parent.iterdir()) == ["marketdata.prom"]
    list(text_string_to_metric_families(target.read_text()))


def test_a_status_recorded_by_a_newer_version_is_counted_in_json_and_prometheus(conn):
    seed(conn, [("timer", "coinbase", "abandoned", 50.0, ["BTC-USD"])], running=False)
    report = build_report(conn, NOW, 2 * HOUR)
    assert report.as_dict()["ingestion_abandoned_total"] == 1
    families = {f.name: f for f in text_string_to_metric_families(prometheus_text(report))}
    [sample] = families["ingestion_abandoned"].samples
    assert sample.value == 1 and sample.labels == {"trigger": "timer", "provider": "coinbase"}
