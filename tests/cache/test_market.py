"""Market keys: written after each pair commits, read by `show` and `compare`, rebuilt and
invalidated; on SQLite and PostgreSQL, with the disk cache and with Redis."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from marketdata.cache import maintenance, market
from marketdata.cache.keys import latest_key, recent_key, roi_key, show_key
from marketdata.config import Settings
from marketdata.domain import Interval, RunStatus
from marketdata.errors import DatabaseUnavailableError
from marketdata.pipeline import IngestRequest, Mode, run_ingest
from marketdata.reports import comparison_report, show, show_report
from marketdata.storage.candles import read_candles
from marketdata.storage.engine import connect
from tests.fakes.redis_server import spare_port

NOW = datetime(2024, 4, 10, 12, 0, tzinfo=UTC)
SYMBOLS = ["BTC-USD", "ETH-USD", "AAPL"]
BARS = Settings.model_fields["cache_bars"].default
"""Candles cached per pair by default (CACHE_BARS)."""


@pytest.fixture(params=["disk", "redis"])
def make_app(request, app_factory, tmp_path):
    """AppContexts on the test database, sharing one cache (disk, or Redis with a prefix of
    the test's own)."""
    overrides = {"cache_dir": str(tmp_path / "cache")}
    if request.param == "redis":
        overrides |= {
            "redis_url": request.getfixturevalue("redis_url"),
            "cache_prefix": f"test:{uuid.uuid4().hex[:8]}:",
        }

    built = []

    def build(**more):
        app = app_factory(**{**overrides, **more})
        app.clock = lambda: NOW
        built.append(app)
        return app

    yield build
    for app in built:  # closing flushes the hit and miss counters: before the cleaning
        app.close()
    cleaner = app_factory(**overrides)
    cleaner.cache.delete_pattern("*")
    cleaner.close()


def ingest(app, **kwargs):
    request = IngestRequest(
        **{"symbols": SYMBOLS, "providers": ["synthetic"], "lookback_days": 150, **kwargs}
    )
    result = run_ingest(app, request)
    assert result.status is RunStatus.SUCCESS
    return result


def from_database(app, symbol, interval=Interval.D1, last=BARS):
    with connect(app.engine(), app.target) as conn:
        history = read_candles(conn, symbol, interval)
        stored = read_candles(conn, symbol, interval, last=last, with_indicators=True)
    return show_report(symbol, interval, history, stored, last)


def same_report(cached, fresh):
    assert cached.symbol == fresh.symbol and cached.interval == fresh.interval
    np.testing.assert_array_equal(cached.candles.ts, fresh.candles.ts)
    for a, b in zip(cached.records(), fresh.records(), strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert (np.isnan(a[key]) and np.isnan(b[key])) or a[key] == b[key], key
    assert cached.roi == fresh.roi


def test_an_ingest_writes_each_pairs_keys_as_json_after_its_commit(make_app):
    app = make_app()
    ingest(app)
    cache = app.cache
    for symbol in SYMBOLS:
        latest = cache.get(latest_key(symbol, "1d"))
        fresh = from_database(app, symbol)
        newest = fresh.records()[-1]
        assert latest["ts"] == newest["ts"] and latest["close"] == newest["close"]
        assert latest["time"].endswith("T00:00:00Z") and latest["stored_at"].startswith(
            "2024-04-10"
        )
        assert set(latest["indicators"]) == {k for k in newest if k not in latest}
        assert cache.get(roi_key(symbol))["roi"] == fresh.roi
        same_report(market.report_of(cache.get(show_key(symbol, "1d")), None), fresh)


def market_values(app):
    """Every market key's value as a reader sees it (a `show` value followed by its `recent`
    one, which is left out), without when it was stored."""
    keys = sorted(app.cache.scan("market:*"))
    values = app.cache.get_many(keys)
    seen = {}
    for key in keys:
        if key.endswith(":show"):
            more = values.get(key[: -len("show")] + "recent")
            seen[key] = market.combined(values[key], more, app.settings.cache_bars)
        elif not key.endswith(":recent"):
            seen[key] = values[key]
    return {k: {f: v for f, v in value.items() if f != "stored_at"} for k, value in seen.items()}


def times(recent):
    """The times of a `recent` value's rows."""
    return [row[recent["fields"].index("ts")] for row in recent["rows"]]


@pytest.mark.parametrize("bars", [BARS - 20, BARS, 3 * BARS])
def test_the_values_an_ingest_writes_equal_what_cache_rebuild_writes(make_app, bars):
    """The refresher writes them off the write path; `cache rebuild` reads them all again:
    the same values (at exactly CACHE_BARS rows too, where `complete` turns)."""
    app = make_app()
    first, day = 1_696_118_400, 86_400  # 2023-10-01
    ingest(app, symbols=SYMBOLS[:2], since=first, until=first + (bars - 2) * day)
    # a second, incremental run: its pairs' values are rewritten from one new candle on
    ingest(app, symbols=SYMBOLS[:2], since=first + (bars - 2) * day, until=first + bars * day)
    assert len(from_database(app, "BTC-USD", last=bars + 1).candles) == bars
    written = market_values(app)
    assert len(written) == 2 * 3
    assert all(v["database"] == app.cache.database for v in written.values())
    maintenance.rebuild(app)
    assert market_values(app) == written


@pytest.mark.parametrize("refetched", [0, 1], ids=["new-only", "refetched-last"])
def test_an_incremental_run_writes_the_rows_it_wrote_after_the_pairs_cached_value(
    make_app, refetched
):
    """No read of the pair's newest rows and no rewrite of its `show` value: the run's rows
    follow the pair's `recent` value (this database's, ending at the row before them or at
    the stored candle the run fetched again). A mark planted in the `show` value survives
    the run, and readers see what `cache rebuild` writes but for the mark."""
    app = make_app()
    first, day = 1_696_118_400, 86_400  # 2023-10-01
    ingest(app, symbols=["BTC-USD"], since=first, until=first + 148 * day)
    key = show_key("BTC-USD", "1d")
    planted = app.cache.get(key)
    planted["columns"]["close"][BARS // 2] = 12_345.0
    app.cache.set(key, planted, market.MARKET_TTL)
    since = first + (148 - refetched) * day
    ingest(app, symbols=["BTC-USD"], since=since, until=first + 150 * day)
    assert app.cache.get(key) == planted
    recent = app.cache.get(recent_key("BTC-USD", "1d"))
    assert recent["after"] == first + 147 * day
    assert times(recent) == [first + d * day for d in range(148 - refetched, 150)]
    seen = market_values(app)[key]
    assert seen["newest"] == first + 149 * day and len(seen["columns"]["ts"]) == BARS
    assert seen["columns"]["close"][BARS // 2 - 2] == 12_345.0  # two rows on
    assert show(app, "BTC-USD").source == "cache"
    written = market_values(app)
    maintenance.rebuild(app)
    rebuilt = market_values(app)
    rebuilt[key]["columns"]["close"][BARS // 2 - 2] = 12_345.0
    assert rebuilt == written


@pytest.mark.parametrize("refetched", [0, 1, 2])
def test_runs_in_a_row_extend_the_recent_value_in_place(make_app, refetched):
    """Each of three incremental runs (fetching again the `refetched` newest stored candles,
    which its rows replace) extends the `recent` value: it holds each row once, oldest first,
    from the first run's first on (rows the `show` value holds too, when fetched again), and
    readers see what `cache rebuild` writes."""
    app = make_app()
    first, day = 1_696_118_400, 86_400
    ingest(app, symbols=["BTC-USD"], since=first, until=first + 140 * day)
    key, more = show_key("BTC-USD", "1d"), recent_key("BTC-USD", "1d")
    base = app.cache.get(key)
    for end in range(141, 144):
        since = first + (end - 1 - refetched) * day
        ingest(app, symbols=["BTC-USD"], since=since, until=first + end * day)
        recent = app.cache.get(more)
        assert app.cache.get(key) == base
        assert times(recent) == [first + d * day for d in range(140 - refetched, end)]
        assert recent["newest"] == first + (end - 1) * day and recent["after"] == base["newest"]
    written = market_values(app)
    maintenance.rebuild(app)
    assert market_values(app) == written


def test_another_databases_recent_value_is_not_extended_the_show_value_is(make_app):
    """A `recent` value that is not this database's is ignored: the run extends the `show`
    value alone (the planted mark survives) and writes it with an empty `recent` one."""
    app = make_app()
    first, day = 1_696_118_400, 86_400
    ingest(app, symbols=["BTC-USD"], since=first, until=first + 148 * day)
    key, more = show_key("BTC-USD", "1d"), recent_key("BTC-USD", "1d")
    planted = app.cache.get(key)
    planted["columns"]["close"][BARS // 2] = 12_345.0
    app.cache.set(key, planted, market.MARKET_TTL)
    app.cache.set(more, app.cache.get(more) | {"database": "another"}, market.MARKET_TTL)
    ingest(app, symbols=["BTC-USD"], since=first + 148 * day, until=first + 150 * day)
    written = app.cache.get(key)
    assert (
        written["newest"] == first + 149 * day
        and written["columns"]["close"][BARS // 2 - 2] == 12_345.0
    )
    recent = app.cache.get(more)
    assert recent["rows"] == [] and recent["after"] == written["newest"]
    assert recent["database"] == app.cache.database


def test_a_show_value_of_another_database_is_never_trusted_behind_a_recent_value(make_app):
    """The run extends the pair's `recent` value without reading its `show` value; a reader
    that finds that `show` value foreign reads the database, and writes both again."""
    app = make_app()
    first, day = 1_696_118_400, 86_400
    ingest(app, symbols=["BTC-USD"], since=first, until=first + 148 * day)
    key = show_key("BTC-USD", "1d")
    app.cache.set(key, app.cache.get(key) | {"database": "another"}, market.MARKET_TTL)
    ingest(app, symbols=["BTC-USD"], since=first + 148 * day, until=first + 150 * day)
    assert app.cache.get(key)["database"] == "another"
    assert show(app, "BTC-USD").source == "database"
    assert show(app, "BTC-USD").source == "cache"
    written = market_values(app)
    maintenance.rebuild(app)
    assert market_values(app) == written


@pytest.mark.parametrize("why", ["rows", "age"])
def test_a_recent_value_is_folded_into_the_show_value_when_long_or_old(make_app, monkeypatch, why):
    """Past RECENT_BARS rows, or behind a `show` value older than half its TTL (which only a
    fold refreshes), the run writes a new `show` value and an empty `recent` one."""
    monkeypatch.setattr(market, "RECENT_BARS", 2)
    app = make_app()
    first, day = 1_696_118_400, 86_400
    ingest(app, symbols=["BTC-USD"], since=first, until=first + 140 * day)
    key, more = show_key("BTC-USD", "1d"), recent_key("BTC-USD", "1d")
    base = app.cache.get(key)
    ingest(app, symbols=["BTC-USD"], since=first + 140 * day, until=first + 141 * day)
    assert app.cache.get(key) == base and len(app.cache.get(more)["rows"]) == 1
    if why == "age":
        app.clock = lambda: NOW + timedelta(seconds=market.MARKET_TTL / 2)
    else:
        ingest(app, symbols=["BTC-USD"], since=first + 141 * day, until=first + 142 * day)
        assert app.cache.get(key) == base and len(app.cache.get(more)["rows"]) == 2
    ingest(app, symbols=["BTC-USD"], since=first + 142 * day, until=first + 143 * day)
    folded = app.cache.get(key)
    assert folded["newest"] == first + 142 * day
    recent = app.cache.get(more)
    assert recent["rows"] == [] and recent["after"] == folded["newest"]
    written = market_values(app)
    maintenance.rebuild(app)
    assert market_values(app) == written


@pytest.mark.parametrize("bars", [BARS - 10, BARS, 3 * BARS])
def test_one_group_refresh_of_several_pairs_writes_what_cache_rebuild_writes(make_app, bars):
    """The refresher writes the pairs queued meanwhile together (two reads, one round trip):
    the same values as `cache rebuild` for each, derived or not, whatever its length."""
    app = make_app(analytics_intervals="1d")
    first, day = 1_696_118_400, 86_400  # 2023-10-01
    ingest(app, since=first, until=first + (bars - 2) * day)
    ingest(app, since=first + (bars - 2) * day, until=first + bars * day)
    short = first + (bars - 30) * day  # a pair that is younger than the others
    ingest(app, symbols=["SOL-USD"], since=short, until=first + bars * day)
    hourly = {"symbols": SYMBOLS[:2], "intervals": [Interval.H1]}  # no stored indicators
    ingest(app, **hourly, since=first + (bars - 3) * day, until=first + bars * day)
    app.cache.delete_pattern("market:*")
    pairs = [(s, Interval.D1) for s in [*SYMBOLS, "SOL-USD", "NEVER-STORED"]]
    pairs += [(s, Interval.H1) for s in SYMBOLS[:2]]
    with connect(app.engine(), app.target) as conn:
        committed = [market.Committed(s, i, NOW) for s, i in pairs]
        market.refresh_committed(app.cache, conn, app.settings, committed)
    written = market_values(app)
    assert len(written) == 4 * 3 + 2  # no keys for a pair never stored; 1h: `latest` only
    maintenance.rebuild(app)
    rebuilt = market_values(app)
    assert set(rebuilt) - set(written) == {show_key(s, "1h") for s in SYMBOLS[:2]}
    for key, value in written.items():  # 1h `latest` holds no indicators, rebuild's does
        assert value == rebuilt[key] | ({"indicators": None} if ":1h:" in key else {})


YEAR_2023 = 1_672_531_200  # 2023-01-01: a partition's start and, for ytd, a year's


@pytest.mark.parametrize("bound", ["written", "deep", "unknown"])
def test_a_group_refresh_reads_what_cache_rebuild_writes_whatever_its_bound(make_app, bound):
    """The refresher bounds its reads near the newest candle each pair's transaction wrote
    (`written`), further back when the transaction corrected old rows of a pair stored far
    beyond them (`deep`), or on the commit's clock when not known (`unknown`: a clock years
    after the candles, where the bounded read finds nothing); and it takes the ROI anchors
    its newest rows reach from those rows, looking up the others. Anchors on a partition's
    first instant (inclusive, at or before), a ytd before any row, a pair whose whole
    history it holds: the same values as `cache rebuild` in every case."""
    app = make_app(analytics_intervals="1d")
    app.clock = lambda: datetime(2024, 7, 10, tzinfo=UTC)  # after the candles
    day, end = 86_400, YEAR_2023 + 546 * 86_400  # 2024-06-30: 180d before 06-29 is 01-01
    ingest(app, symbols=["BTC-USD"], since=YEAR_2023, until=end)  # 180d, 365d, inception beyond
    ingest(app, symbols=["ETH-USD"], since=YEAR_2023 + 365 * day, until=end)  # none before ytd
    ingest(app, symbols=["SOL-USD"], since=end - 60 * day, until=end)  # whole history in hand
    newest = end - day
    stamps = {"written": newest, "deep": YEAR_2023 + 30 * day, "unknown": None}
    clock = app.clock() if bound != "unknown" else datetime(2031, 1, 1, tzinfo=UTC)
    app.cache.delete_pattern("market:*")
    symbols = ["BTC-USD", "ETH-USD", "SOL-USD", "NEVER-STORED"]
    with connect(app.engine(), app.target) as conn:
        committed = [market.Committed(s, Interval.D1, clock, stamps[bound]) for s in symbols]
        market.refresh_committed(app.cache, conn, app.settings, committed)
    written = market_values(app)
    assert len(written) == 3 * 3
    maintenance.rebuild(app)
    assert market_values(app) == written
    roi = written[roi_key("ETH-USD")]["roi"]
    assert roi["ytd"] is None and roi["365d"] is None and roi["180d"] is not None


def test_a_replay_that_corrects_history_refreshes_the_keys(make_app):
    app = make_app()
    ingest(app)
    with connect(app.engine(), app.target) as conn, conn.begin():
        from sqlalchemy import text

        # a wrong stored close that the replay corrects (the provider's value comes back)
        conn.execute(
            text("UPDATE candles SET close = close * 2 WHERE symbol = 'BTC-USD'"),
        )
    app.cache.delete_pattern("market:*")
    before = show(app, "BTC-USD")  # read-through: caches the wrong closes
    assert before.source == "database"
    assert show(app, "BTC-USD").source == "cache"
    result = ingest(app, symbols=["BTC-USD"], mode=Mode.REPLAY)
    assert result.rows_updated > 0
    after = show(app, "BTC-USD")
    assert after.source == "cache"
    same_report(after, from_database(app, "BTC-USD", last=20))
    assert after.candles.close[-1] == pytest.approx(before.candles.close[-1] / 2)
    written = market_values(app)  # the history rewritten: what `cache rebuild` writes
    assert set(written) == {
        show_key("BTC-USD", "1d"),
        latest_key("BTC-USD", "1d"),
        roi_key("BTC-USD"),
    }
    maintenance.rebuild(app)
    rebuilt = market_values(app)
    assert {k: rebuilt[k] for k in written} == written


def test_show_from_a_warm_cache_opens_no_database_connection(make_app):
    ingest(make_app())
    app = make_app()
    report = show(app, "ETH-USD", last=5)
    assert report.source == "cache" and report.stored_at is not None
    assert app._engine is None  # no engine was even built
    same_report(report, from_database(make_app(), "ETH-USD", last=5))


def test_show_reads_the_database_when_a_newer_candle_was_stored_since(make_app):
    app = make_app()
    ingest(app)
    newest = app.cache.get(latest_key("BTC-USD", "1d"))
    newer = {**newest, "ts": newest["ts"] + 86_400}
    app.cache.set(latest_key("BTC-USD", "1d"), newer)
    report = show(app, "BTC-USD")
    assert report.source == "database"
    # and the answer from the database was cached again
    assert show(app, "BTC-USD").source == "cache"


def test_show_more_candles_than_cached_reads_the_database(make_app):
    app = make_app()
    ingest(app)
    assert show(app, "BTC-USD", last=BARS).source == "cache"
    report = show(app, "BTC-USD", last=BARS + 1)
    assert report.source == "database" and len(report.candles) == BARS + 1


@pytest.mark.parametrize("bars", [7, 120])
def test_cache_bars_sets_how_many_candles_a_pair_keeps(make_app, bars):
    """CACHE_BARS is what a pair's `show` value holds (what `cache rebuild` writes too):
    `show --last` up to it and `compare --window` up to one less answer from the cache, one
    more reads the database."""
    app = make_app(cache_bars=bars)
    ingest(app)
    assert len(app.cache.get(show_key("BTC-USD", "1d"))["columns"]["ts"]) == bars
    written = market_values(app)
    maintenance.rebuild(app)
    assert market_values(app) == written
    crypto = SYMBOLS[:2]
    assert comparison_report(app, crypto, bars - 1, None).source == "cache"
    assert comparison_report(app, crypto, bars, None).source == "database"
    assert show(app, "BTC-USD", last=bars).source == "cache"
    assert show(app, "BTC-USD", last=bars + 1).source == "database"


def test_show_never_answers_from_another_databases_cache_when_that_database_is_down(
    make_app, caplog_warnings
):
    """The cache of this database answers through its own outage (tests/cache/test_scope.py);
    another database that is down gets the outage, not these values."""
    ingest(make_app())
    down = make_app(database_url=f"postgresql://u@127.0.0.1:{spare_port()}/gone")
    with pytest.raises(DatabaseUnavailableError):
        show(down, "BTC-USD")
    assert not [w for w in caplog_warnings if "answering from the cache" in w]


def test_compare_from_the_cache_equals_compare_from_the_database(make_app):
    app = make_app()
    ingest(app)
    cached = comparison_report(app, SYMBOLS, 30, "ETH-USD")
    assert cached.source == "cache"
    app.cache.delete_pattern("market:*")
    fresh = comparison_report(app, SYMBOLS, 30, "ETH-USD")
    assert fresh.source == "database"
    assert dataclasses.asdict(cached.comparison) == dataclasses.asdict(fresh.comparison)
    # a window longer than the cached closes reach: the database answers
    assert comparison_report(make_app(), SYMBOLS, BARS, None).source == "database"


def test_rebuild_makes_every_key_equal_what_the_database_says(make_app):
    app = make_app()
    ingest(app, intervals=[Interval.D1, Interval.H6], lookback_days=40)
    app.cache.set(show_key("BTC-USD", "1d"), {"garbage": True})
    app.cache.set("market:GONE-USD:1d:latest", {"ts": 0})
    result = maintenance.rebuild(app)
    assert (result.pairs, result.written) == (6, 6 * 3 + 3)  # show, recent, latest; roi
    # the ingest wrote only `latest` for 6h (outside ANALYTICS_INTERVALS: no stored indicators)
    assert result.deleted == 3 * 4 + 3 + 1
    assert app.cache.get("market:GONE-USD:1d:latest") is None
    for symbol in SYMBOLS:
        for interval in (Interval.D1, Interval.H6):
            fresh = from_database(app, symbol, interval)
            value = app.cache.get(show_key(symbol, interval.value))
            same_report(market.report_of(value, None), fresh)
            latest = app.cache.get(latest_key(symbol, interval.value))
            assert latest["ts"] == int(fresh.candles.ts[-1])


def test_rebuild_of_some_symbols_leaves_the_others_alone(make_app):
    app = make_app()
    ingest(app)
    app.cache.set("market:ETH-USD:1d:latest", {"ts": 0, "marker": 1})
    result = maintenance.rebuild(app, symbols=["btc-usd"])
    assert (result.pairs, result.deleted, result.written) == (1, 4, 4)
    assert app.cache.get("market:ETH-USD:1d:latest") == {"ts": 0, "marker": 1}


def test_invalidate_everything_leaves_nothing_under_market_and_nothing_else_touched(make_app):
    app = make_app()
    ingest(app)
    neighbour = make_app(cache_prefix=f"other:{uuid.uuid4().hex[:8]}:")
    neighbour.cache.set("market:BTC-USD:1d:latest", {"ts": 1})
    app.cache.set("keep:me", 1)
    counts = maintenance.invalidate(app, ["market:*"])
    assert counts == {"market:*": 3 * 4}
    assert app.cache.count("market:*") == 0
    assert app.cache.get("keep:me") == 1
    assert neighbour.cache.get("market:BTC-USD:1d:latest") == {"ts": 1}
    neighbour.close()  # flushes its hit counter; then every key of its prefix goes
    neighbour.cache.delete_pattern("*")


def test_stats_count_keys_by_kind_hits_and_misses(make_app):
    app = make_app()
    ingest(app)
    show(app, "BTC-USD")
    show(app, "BTC-USD", last=BARS + 5)
    assert (app.metrics.counters["cache.hit"], app.metrics.counters["cache.miss"]) == (1, 1)
    app.close()
    stats = maintenance.stats(make_app())
    assert stats.keys == {"latest": 3, "show": 3, "recent": 3, "roi": 3, "other": 0}
    assert (stats.hits, stats.misses) == (1, 1)
    assert stats.used_bytes and stats.used_bytes > 0


def test_analytics_rebuild_refreshes_the_cached_indicators(make_app):
    from sqlalchemy import text

    from marketdata.reports import rebuild_analytics

    app = make_app()
    ingest(app, symbols=["BTC-USD"])
    with connect(app.engine(), app.target) as conn, conn.begin():
        conn.execute(text("UPDATE candles SET sma_20 = 123.0 WHERE symbol = 'BTC-USD'"))
    app.cache.delete_pattern("market:*")
    assert show(app, "BTC-USD").records()[-1]["sma_20"] == 123.0  # cached as stored
    rebuild_analytics(app, ["BTC-USD"])
    report = show(app, "BTC-USD")
    assert report.source == "cache"
    same_report(report, from_database(app, "BTC-USD", last=20))
    assert report.records()[-1]["sma_20"] != 123.0
