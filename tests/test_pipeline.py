"""The ingestion run end to end: fake Coinbase over a socket, real SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import ClassVar

import pytest

from marketdata.domain import Interval, RunStatus, Window
from marketdata.errors import InputError, NoDataError, UnknownProviderError
from marketdata.pipeline import IngestRequest, Mode, build_plan, run_ingest
from marketdata.storage.candles import count_candles, read_candles
from marketdata.storage.engine import connect
from marketdata.storage.rejects import list_rejects
from marketdata.storage.runs import outcomes_of, recent_runs
from tests.fakes.coinbase import FakeCoinbase
from tests.fakes.market import walk
from tests.fakes.server import Reply, serve

DAY = 86_400
NOW = datetime(2024, 4, 10, 12, 0, tzinfo=UTC)
TODAY = 1_712_707_200  # 2024-04-10T00:00Z
HISTORY = 120


@pytest.fixture
def fake() -> FakeCoinbase:
    fake = FakeCoinbase()
    fake.add("BTC-USD", DAY, walk(TODAY - (HISTORY - 1) * DAY, DAY, HISTORY))
    fake.add("ETH-USD", DAY, walk(TODAY - (HISTORY - 1) * DAY, DAY, HISTORY, seed=7))
    return fake


@pytest.fixture
def coinbase(fake):
    with serve(fake) as server:
        yield server


@pytest.fixture
def make_app(app_factory, coinbase):
    def build(**overrides):
        app = app_factory(
            **{"coinbase_base_url": coinbase.url, "ingestion_lookback_days": 30, **overrides}
        )
        app.clock = lambda: NOW
        return app

    return build


def ingest(app, **kwargs):
    return run_ingest(app, IngestRequest(**{"symbols": ["BTC-USD"], **kwargs}))


def test_first_run_stores_the_lookback_window_and_records_the_run(make_app, coinbase):
    app = make_app()
    result = ingest(app, symbols=["BTC-USD", "ETH-USD"])
    assert result.status is RunStatus.SUCCESS
    assert result.rows_inserted == 62  # 30 days back .. today, inclusive, for two symbols
    with connect(app.engine(), app.target) as conn:
        assert count_candles(conn, "BTC-USD") == 31
        runs = recent_runs(conn)
        assert [r.status for r in runs] == ["success"]
        assert runs[0].rows_inserted == 62
        outcomes = outcomes_of(conn, runs[0].id)
    assert {(o["symbol"], o["status"], o["provider"]) for o in outcomes} == {
        ("BTC-USD", "ok", "coinbase"),
        ("ETH-USD", "ok", "coinbase"),
    }
    assert app.metrics.counters["ingestion.success"] == 1
    assert app.metrics.counters["ingestion.rows_written"] == 62


def test_second_run_refetches_only_from_the_last_stored_candle(make_app, coinbase):
    app = make_app()
    ingest(app)
    sent = len(coinbase.requests)
    result = ingest(app)
    assert len(coinbase.requests) == sent + 1
    assert coinbase.requests[-1].query["start"] == "2024-04-10T00:00:00Z"
    assert (result.outcomes[0].fetched, result.rows_inserted, result.rows_updated) == (1, 0, 0)


def test_a_rerun_with_nothing_new_records_each_pair_unchanged_with_its_provider(make_app):
    """The second run fetches each pair's last stored candle again, finds it stored with the
    same values and records the pair as ok and unchanged: one outcome per pair, naming the
    provider that answered, and nothing written."""
    app = make_app()
    ingest(app, symbols=["BTC-USD", "ETH-USD"])
    result = ingest(app, symbols=["BTC-USD", "ETH-USD"])
    with connect(app.engine(), app.target) as conn:
        recorded = outcomes_of(conn, recent_runs(conn)[0].id)
    fields = ("symbol", "status", "provider", "fetched", "unchanged", "inserted", "updated")
    expected = [(s, "ok", "coinbase", 1, 1, 0, 0) for s in ("BTC-USD", "ETH-USD")]
    assert [tuple(o[f] for f in fields) for o in recorded] == expected
    assert sorted(tuple(getattr(o, f) for f in fields) for o in result.outcomes) == expected
    assert (result.rows_inserted, result.rows_updated) == (0, 0)


def test_replay_overwrites_a_corrected_candle_without_duplicates(make_app, fake):
    app = make_app()
    ingest(app)
    rows = fake.candles["BTC-USD"][DAY]
    index = next(i for i, r in enumerate(rows) if r[0] == TODAY - 5 * DAY)
    ts, o, h, low, c, v = rows[index]
    rows[index] = (ts, o, h, low, c, v + 1.0)
    result = run_ingest(app, IngestRequest(symbols=["BTC-USD"], mode=Mode.REPLAY))
    outcome = result.outcomes[0]
    assert (outcome.inserted, outcome.updated, outcome.unchanged) == (0, 1, 30)
    with connect(app.engine(), app.target) as conn:
        stored = read_candles(conn, "BTC-USD", Interval.D1)
    assert len(stored) == 31
    assert stored.volume[stored.ts.tolist().index(TODAY - 5 * DAY)] == v + 1.0


def test_one_failing_symbol_makes_a_partial_run_and_spoils_no_other(make_app):
    app = make_app()
    result = ingest(app, symbols=["BTC-USD", "NOPE-USD"])
    assert result.status is RunStatus.PARTIAL
    failed = [o for o in result.outcomes if o.status == "failed"]
    assert [o.symbol for o in failed] == ["NOPE-USD"]
    assert "coinbase does not list NOPE-USD" in failed[0].error
    [alert] = app.alerts.sent
    assert alert.severity == "warning" and "1 of 2 pairs failed" in alert.title
    with connect(app.engine(), app.target) as conn:
        assert count_candles(conn, "BTC-USD") == 31
        assert recent_runs(conn)[0].status == "partial"


def test_every_pair_failing_is_a_failed_run(make_app, fake):
    fake.fail_next = [Reply(503, "down")] * 50
    app = make_app()
    result = ingest(app, symbols=["BTC-USD", "ETH-USD"])
    assert result.status is RunStatus.FAILURE
    assert "HTTP 503" in (result.error or "")
    with connect(app.engine(), app.target) as conn:
        assert count_candles(conn) == 0
        assert recent_runs(conn)[0].status == "failure"
    assert app.metrics.counters["ingestion.failure"] == 1


def high_below_low(fake, ts):
    """The fake's BTC-USD daily candle at `ts` made impossible: its high below its low."""
    rows = fake.candles["BTC-USD"][DAY]
    index = next(i for i, r in enumerate(rows) if r[0] == ts)
    ts, o, _h, low, c, v = rows[index]
    rows[index] = (ts, o, low * 0.5, low, c, v)


def test_impossible_candles_are_quarantined_with_a_reason(make_app, fake):
    high_below_low(fake, TODAY - 3 * DAY)
    app = make_app()
    result = ingest(app)
    assert result.outcomes[0].rejected == 1
    assert result.rows_inserted == 30
    with connect(app.engine(), app.target) as conn:
        rejected = list_rejects(conn, ["BTC-USD"])
        stored = read_candles(conn, "BTC-USD", Interval.D1)
    assert [(r.ts, r.reason, r.provider) for r in rejected] == [
        (TODAY - 3 * DAY, "high below open or close", "coinbase")
    ]
    assert TODAY - 3 * DAY not in stored.ts.tolist()


def test_a_pair_fetched_in_several_windows_counts_every_window_s_rows_and_rejects(make_app, fake):
    """A backfill fetches a hole and the newest bars apart: the pair's outcome counts the
    rows and rejects of both batches, and each reject is recorded under the run."""
    from marketdata.domain import utc_from_epoch
    from marketdata.storage.schema import candles

    app = make_app()
    ingest(app)
    with connect(app.engine(), app.target) as conn, conn.begin():  # a hole of two bars
        for ts in (TODAY - 10 * DAY, TODAY - 9 * DAY):
            conn.execute(candles.delete().where(candles.c.ts == utc_from_epoch(ts)))
    high_below_low(fake, TODAY - 9 * DAY)
    high_below_low(fake, TODAY)
    result = ingest(app, mode=Mode.BACKFILL)
    [outcome] = result.outcomes
    assert (outcome.fetched, outcome.rejected, outcome.inserted) == (3, 2, 1)
    with connect(app.engine(), app.target) as conn:
        rejected = list_rejects(conn, ["BTC-USD"])
    assert sorted((r.ts, r.run_id) for r in rejected) == [
        (TODAY - 9 * DAY, result.run_id),
        (TODAY, result.run_id),
    ]


def test_disabled_symbols_are_skipped_with_a_note(make_app):
    app = make_app(ingestion_disabled_symbols="ETH-USD")
    result = ingest(app, symbols=["BTC-USD", "ETH-USD"])
    assert {o.symbol: o.status for o in result.outcomes} == {"BTC-USD": "ok", "ETH-USD": "disabled"}
    assert result.status is RunStatus.SUCCESS


def test_a_disabled_symbol_is_skipped_in_every_interval_asked_for(make_app):
    """Each of a disabled symbol's pairs is listed as skipped, not only its first
    interval's, and the symbols after it are planned as usual."""
    app = make_app(ingestion_disabled_symbols="ETH-USD")
    request = IngestRequest(
        symbols=["ETH-USD", "BTC-USD"],
        intervals=[Interval.D1, Interval.H1],
        providers=["synthetic"],
    )
    plan = build_plan(app, request)
    assert [(p.symbol, p.interval, p.skip) for p in plan.pairs] == [
        ("ETH-USD", Interval.D1, "disabled"),
        ("ETH-USD", Interval.H1, "disabled"),
        ("BTC-USD", Interval.D1, None),
        ("BTC-USD", Interval.H1, None),
    ]


def test_a_runs_records_carry_its_id_and_each_pair_s_records_the_pair(make_app):
    """What a library caller's own loguru handler sees (no patcher of ours): the run's
    lines carry its id, and a pair's lines its symbol and interval."""
    from loguru import logger

    app = make_app()
    records: list[tuple[str, dict]] = []
    handler = logger.add(lambda m: records.append((m.record["message"], m.record["extra"])))
    try:
        result = ingest(app, symbols=["BTC-USD", "NOPE-USD"])
    finally:
        logger.remove(handler)
    started = next(extra for message, extra in records if message.startswith("run "))
    assert started["run_id"] == result.run_id
    [failed] = [extra for message, extra in records if message.startswith("NOPE-USD 1d failed")]
    assert (failed["symbol"], failed["interval"], failed["run_id"]) == (
        "NOPE-USD",
        "1d",
        result.run_id,
    )


def test_the_markets_table_names_a_run_s_symbols_and_disables_some(make_app):
    """With no symbols asked for or set, a run takes the enabled markets; a market disabled
    there is skipped even when asked for by name."""
    from marketdata.storage.markets import Market, upsert_market

    app = make_app(ingestion_symbols="")
    with connect(app.engine(), app.target) as conn, conn.begin():
        for market in (Market("BTC-USD"), Market("ETH-USD"), Market("SOL-USD", enabled=False)):
            upsert_market(conn, market, NOW)
    plan = build_plan(app, IngestRequest(symbols=[]))
    assert [(p.symbol, p.skip) for p in plan.pairs] == [("BTC-USD", None), ("ETH-USD", None)]
    plan = build_plan(app, IngestRequest(symbols=["SOL-USD", "BTC-USD"]))
    assert [(p.symbol, p.skip) for p in plan.pairs] == [("SOL-USD", "disabled"), ("BTC-USD", None)]


@contextmanager
def held_elsewhere(other, symbol):
    """The daily pair's lock held by another process's connection for the block."""
    from marketdata.storage.locks import pair_lock

    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with (
            connect(other.engine(), other.target) as conn,
            pair_lock(conn, symbol, "1d", other.lock_dir()) as taken,
        ):
            assert taken
            held.set()
            release.wait(10)

    worker = threading.Thread(target=hold)
    worker.start()
    try:
        assert held.wait(10)
        yield
    finally:
        release.set()
        worker.join()


def test_a_pair_held_by_another_worker_is_skipped_not_failed(make_app):
    app = make_app()
    with held_elsewhere(make_app(), "BTC-USD"):
        result = ingest(app, symbols=["BTC-USD", "ETH-USD"])
    assert {o.symbol: o.status for o in result.outcomes} == {"BTC-USD": "skipped", "ETH-USD": "ok"}
    assert result.status is RunStatus.SUCCESS


def test_dry_run_plans_ranges_and_requests_and_writes_nothing(make_app, coinbase):
    app = make_app(ingestion_lookback_days=400)
    plan = build_plan(app, IngestRequest(symbols=["BTC-USD"]), with_costs=True)
    pair = plan.pairs[0]
    assert pair.windows[0].start == TODAY - 400 * DAY
    assert pair.requests == 2  # 401 daily bars at 300 per request
    assert pair.seconds == 0.0  # within Coinbase's burst of 15
    assert pair.stored_last is None and pair.skip is None
    assert coinbase.requests == []
    with connect(app.engine(), app.target) as conn:
        assert recent_runs(conn) == []


def test_a_dry_run_announces_the_requests_beyond_the_burst_at_the_sustained_rate(make_app):
    """Coinbase allows a burst of 15 requests, then 10 a second: the time a dry run announces
    for a pair is what its requests past the burst take."""
    app = make_app(ingestion_lookback_days=10)
    ingest(app)  # daily BTC-USD stored up to today
    plan = build_plan(
        app,
        IngestRequest(symbols=["BTC-USD"], intervals=[Interval.M1, Interval.D1]),
        with_costs=True,
    )
    minute, daily = plan.pairs
    assert minute.requests == 49  # 10 days and today's 12 hours of minutes, 300 a request
    assert minute.seconds == pytest.approx((49 - 15) / 10)
    assert (daily.stored_last, daily.requests, daily.seconds) == (TODAY, 1, 0.0)


def test_bad_requests_are_refused_before_anything_runs(make_app):
    app = make_app()
    with pytest.raises(InputError, match="--since"):
        IngestRequest(symbols=["BTC-USD"], since=TODAY, until=TODAY - DAY)
    with pytest.raises(InputError, match="--lookback-days"):
        IngestRequest(symbols=["BTC-USD"], lookback_days=0)
    with pytest.raises(UnknownProviderError, match="nosuch"):
        ingest(app, providers=["nosuch"])
    with pytest.raises(NoDataError, match="no symbols"):
        run_ingest(app, IngestRequest())


def test_a_provider_outage_falls_back_to_the_next_in_the_chain(make_app, fake):
    from tests.fakes.kraken import FakeKraken

    kraken = FakeKraken(now=int(NOW.timestamp()))
    kraken.fill("XXBTZUSD", 1440, 60)
    fake.fail_next = [Reply(503, {"message": "down"})] * 20
    with serve(kraken) as kraken_server:
        app = make_app(kraken_base_url=kraken_server.url)
        result = ingest(app, providers=["coinbase,kraken"])
    outcome = result.outcomes[0]
    assert result.status is RunStatus.SUCCESS
    assert (outcome.status, outcome.provider) == ("ok", "kraken")
    assert outcome.inserted == 30  # kraken leaves out today's still-open candle
    with connect(app.engine(), app.target) as conn:
        assert {o["provider"] for o in outcomes_of(conn, result.run_id)} == {"kraken"}
        assert read_candles(conn, "BTC-USD", Interval.D1).provider == "kraken"
    assert app.metrics.counters["provider.fallback"] == 1
    assert outcome.error.startswith("coinbase: coinbase answered HTTP 503")
    [alert] = app.alerts.sent  # one per run, whatever the number of pairs
    assert (alert.severity, alert.title) == (
        "warning",
        "1 pair served by fallback provider kraken",
    )
    assert alert.text.startswith("BTC-USD 1d by kraken after coinbase: coinbase answered HTTP 503")


def test_the_chain_refuses_an_interval_no_provider_serves_before_any_request(make_app, coinbase):
    from marketdata.errors import UnsupportedIntervalError
    from marketdata.providers.chain import FallbackChain
    from marketdata.providers.registry import build_provider

    app = make_app()
    with app.provider_context({}) as ctx:
        chain = FallbackChain([build_provider("kraken", ctx)])
        with pytest.raises(UnsupportedIntervalError, match="kraken does not serve 6h"):
            chain.fetch("BTC-USD", Interval.H6, Window(0, DAY))
    assert coinbase.requests == []


def test_with_redis_configured_every_provider_shares_its_rate_budget(make_app, redis_url):
    from marketdata.providers.redis_ratelimit import RedisRateLimiter
    from marketdata.providers.registry import build_provider

    app = make_app(redis_url=redis_url, cache_prefix="test-shared-")
    with app.provider_context({}) as ctx:
        provider = build_provider("coinbase", ctx)
        assert isinstance(provider._limiter, RedisRateLimiter)
        provider._limiter.acquire()
        assert not provider._limiter.degraded


class ExplodingProvider:
    """A provider with a bug: it raises something that is not a ProviderError."""

    name = "exploding"
    intervals = frozenset(Interval)
    max_rows_per_request = 1000

    def __init__(self, ctx) -> None:
        self.ctx = ctx

    def fetch(self, symbol, interval, window):
        raise RuntimeError("boom in the provider")


def test_an_unexpected_error_ends_the_run_recorded_as_a_failure_and_raised(make_app, monkeypatch):
    from marketdata.providers import registry

    monkeypatch.setitem(registry.PROVIDERS, "exploding", f"{__name__}:ExplodingProvider")
    app = make_app()
    with pytest.raises(RuntimeError, match="boom in the provider"):
        ingest(app, providers=["exploding"])
    with connect(app.engine(), app.target) as conn:
        [run] = recent_runs(conn)
    assert (run.status, run.error) == ("failure", "RuntimeError: boom in the provider")
    assert run.finished_at is not None
    assert app.metrics.counters["ingestion.failure"] == 1


def test_a_since_in_the_future_is_refused_before_any_run_or_fetch(make_app, coinbase):
    app = make_app()
    tomorrow = int(NOW.timestamp()) + 86_400
    with pytest.raises(InputError, match="is in the future") as raised:
        ingest(app, since=tomorrow)
    assert raised.value.exit_code == 2
    assert coinbase.requests == []
    with connect(app.engine(), app.target) as conn:
        assert recent_runs(conn) == [] and count_candles(conn) == 0


def test_a_window_that_selects_no_bars_is_refused_naming_a_pair(make_app, coinbase):
    """--until before the newest stored candle, with no --since (an incremental run from
    that candle on), selects nothing for any pair: one error naming the first pair and the
    window, no run recorded, nothing fetched."""
    app = make_app()
    ingest(app, symbols=["BTC-USD", "ETH-USD"])
    asked = len(coinbase.requests)
    day = int(NOW.timestamp()) // 86_400 * 86_400
    with pytest.raises(InputError, match="selects no bars to fetch \\(for BTC-USD 1d"):
        ingest(app, symbols=["BTC-USD", "ETH-USD"], until=day - 10 * 86_400)
    assert len(coinbase.requests) == asked
    with connect(app.engine(), app.target) as conn:
        assert len(recent_runs(conn)) == 1 and count_candles(conn) == 62


class FirstPairExplodes:
    """A provider whose first symbol's fetch raises at once (a bug, not a ProviderError)
    while every other symbol's takes a while and then fails as a provider does; it keeps
    the symbols asked for."""

    name = "first-explodes"
    intervals = frozenset(Interval)
    max_rows_per_request = 1000
    asked: ClassVar[list[str]] = []

    def __init__(self, ctx) -> None:
        self.ctx = ctx

    def fetch(self, symbol, interval, window):
        from marketdata.errors import ProviderUnavailableError

        self.asked.append(symbol)
        if symbol == "S00-USD":
            raise RuntimeError("boom in the provider")
        time.sleep(0.05)
        raise ProviderUnavailableError("slow and down", provider=self.name, symbol=symbol)


def test_after_one_groups_error_no_worker_takes_another_group(make_app, monkeypatch):
    """The error of one worker's group halts the run: the other workers finish the pair in
    hand and take no more, so a run of 40 pairs in groups of 5 on two threads asks the
    provider for a few of them (the other thread's group, at most, on a loaded machine),
    not for all before it raises."""
    from marketdata.providers import registry

    monkeypatch.setitem(registry.PROVIDERS, "first-explodes", f"{__name__}:FirstPairExplodes")
    monkeypatch.setattr(FirstPairExplodes, "asked", [])
    app = make_app(ingestion_concurrency=2)
    symbols = [f"S{i:02d}-USD" for i in range(40)]
    with pytest.raises(RuntimeError, match="boom in the provider"):
        ingest(app, symbols=symbols, providers=["first-explodes"])
    assert "S00-USD" in FirstPairExplodes.asked
    assert len(FirstPairExplodes.asked) <= 10, FirstPairExplodes.asked


# ------------------------------------------------------------- the fleet's per-pair step
# A fleet worker runs one pair per job through `_process_pair` (marketdata/fleet/pairs.py),
# planned from what is stored when the job runs, on its own lock session: these tests drive
# that step the way a worker does, on both backends.


def run_one_pair(app, symbol="BTC-USD", *, providers=("coinbase",), skip=None):
    """One pair through the fleet's per-pair step under a run row of its own: the outcome
    returned and the outcomes recorded for that run."""
    from marketdata.observability.logging import with_log_context
    from marketdata.pipeline import PairPlan, _build_chain, _last_ts, _process_pair, _windows
    from marketdata.storage.locks import RunLease
    from marketdata.storage.runs import start_run

    request = IngestRequest(symbols=[symbol], providers=list(providers))
    with connect(app.engine(), app.target) as conn:
        run_id = start_run(
            conn,
            trigger="fleet",
            providers=list(providers),
            symbols=[symbol],
            intervals=["1d"],
            started_at=app.clock(),
        )
        conn.commit()
        last = _last_ts(conn, symbol, Interval.D1)
        now = int(app.clock().timestamp())
        windows = _windows(conn, request, symbol, Interval.D1, last, now, 30)
    pair = PairPlan(symbol, Interval.D1, windows, last, skip=skip)
    lease = RunLease(app.engine(), run_id, app.lock_dir())
    try:
        with app.provider_context({}) as ctx:
            # in a copy of the context, as a worker's job: what the pair binds stays its own
            step = with_log_context(_process_pair)
            outcome = step(app, _build_chain(providers, ctx), run_id, pair, None, lease)
    finally:
        lease.release()
    with connect(app.engine(), app.target) as conn:
        recorded = outcomes_of(conn, run_id)
    return outcome, recorded


OUTCOME_FIELDS = ("symbol", "interval", "status", "provider", "fetched", "inserted", "updated")
OUTCOME_FIELDS += ("unchanged", "rejected", "error")


def _fields(outcome) -> tuple:
    if isinstance(outcome, dict):
        return tuple(outcome[f] for f in OUTCOME_FIELDS)
    return tuple(getattr(outcome, f) for f in OUTCOME_FIELDS)


def test_a_fleet_pair_stores_its_lookback_window_with_its_outcome(make_app, coinbase):
    app = make_app()
    outcome, recorded = run_one_pair(app)
    expected = ("BTC-USD", "1d", "ok", "coinbase", 31, 31, 0, 0, 0, None)
    assert _fields(outcome) == expected
    assert [_fields(o) for o in recorded] == [expected]
    [request] = coinbase.requests
    assert request.query["start"] == "2024-03-11T00:00:00Z"  # 30 days back
    with connect(app.engine(), app.target) as conn:
        stored = read_candles(conn, "BTC-USD", Interval.D1)
    assert (len(stored), int(stored.ts[0]), int(stored.ts[-1])) == (31, TODAY - 30 * DAY, TODAY)


def test_a_fleet_pair_with_nothing_new_is_recorded_unchanged_and_not_written(make_app, coinbase):
    app = make_app()
    run_one_pair(app)
    with connect(app.engine(), app.target) as conn:
        before = read_candles(conn, "BTC-USD", Interval.D1)
    outcome, recorded = run_one_pair(app)
    expected = ("BTC-USD", "1d", "ok", "coinbase", 1, 0, 0, 1, 0, None)
    assert _fields(outcome) == expected
    assert [_fields(o) for o in recorded] == [expected]  # recorded once
    assert coinbase.requests[-1].query["start"] == "2024-04-10T00:00:00Z"  # the last stored
    with connect(app.engine(), app.target) as conn:
        after = read_candles(conn, "BTC-USD", Interval.D1)
    assert after.close.tolist() == before.close.tolist()


def test_a_fleet_pair_whose_stored_candle_changed_is_written_again(make_app, fake):
    app = make_app()
    run_one_pair(app)
    rows = fake.candles["BTC-USD"][DAY]
    index = next(i for i, r in enumerate(rows) if r[0] == TODAY)
    ts, o, h, low, c, v = rows[index]
    rows[index] = (ts, o, h, low, c, v + 2.0)  # the open bar traded more since
    outcome, recorded = run_one_pair(app)
    expected = ("BTC-USD", "1d", "ok", "coinbase", 1, 0, 1, 0, 0, None)
    assert _fields(outcome) == expected
    assert [_fields(o) for o in recorded] == [expected]
    with connect(app.engine(), app.target) as conn:
        stored = read_candles(conn, "BTC-USD", Interval.D1)
    assert float(stored.volume[-1]) == v + 2.0


def test_a_fleet_pair_with_a_new_bar_writes_it_beside_the_unchanged_one(make_app, fake, coinbase):
    app = make_app()
    run_one_pair(app)
    later = datetime(2024, 4, 11, 0, 30, tzinfo=UTC)
    fake.add("BTC-USD", DAY, walk(TODAY + DAY, DAY, 1, seed=3))
    app.clock = lambda: later
    outcome, _ = run_one_pair(app)
    assert coinbase.requests[-1].query["start"] == "2024-04-10T00:00:00Z"  # the last stored
    assert (outcome.status, outcome.fetched, outcome.inserted, outcome.unchanged) == (
        "ok",
        2,
        1,
        1,
    )


def test_a_disabled_fleet_pair_is_neither_fetched_nor_recorded(make_app, coinbase):
    app = make_app()
    outcome, recorded = run_one_pair(app, skip="disabled")
    assert _fields(outcome) == ("BTC-USD", "1d", "disabled", None, 0, 0, 0, 0, 0, None)
    assert recorded == []
    assert coinbase.requests == []


def test_a_fleet_pair_held_by_another_worker_is_recorded_skipped_unfetched(make_app, coinbase):
    app = make_app()
    with held_elsewhere(make_app(), "BTC-USD"):
        outcome, recorded = run_one_pair(app)
    expected = ("BTC-USD", "1d", "skipped", None, 0, 0, 0, 0, 0, "held by another worker")
    assert _fields(outcome) == expected
    assert [_fields(o) for o in recorded] == [expected]
    assert coinbase.requests == []
    with connect(app.engine(), app.target) as conn:
        assert count_candles(conn, "BTC-USD") == 0
    # released: the next job of the pair takes it
    outcome, _ = run_one_pair(app)
    assert (outcome.status, outcome.inserted) == ("ok", 31)


def test_a_fleet_pair_the_provider_does_not_list_is_recorded_failed(make_app):
    app = make_app()
    with warnings_logged() as warned:
        outcome, recorded = run_one_pair(app, "NOPE-USD")
    assert (outcome.status, outcome.provider, outcome.fetched, outcome.inserted) == (
        "failed",
        None,
        0,
        0,
    )
    assert outcome.error is not None and "coinbase does not list NOPE-USD" in outcome.error
    assert [_fields(o) for o in recorded] == [_fields(outcome)]
    assert warned == [f"NOPE-USD 1d failed: {outcome.error}"]
    with connect(app.engine(), app.target) as conn:
        assert count_candles(conn) == 0


def test_a_fleet_pair_s_bad_candle_is_quarantined_and_the_rest_stored(make_app, fake):
    high_below_low(fake, TODAY - 3 * DAY)
    app = make_app()
    outcome, recorded = run_one_pair(app)
    expected = ("BTC-USD", "1d", "ok", "coinbase", 31, 30, 0, 0, 1, None)
    assert _fields(outcome) == expected
    assert [_fields(o) for o in recorded] == [expected]
    with connect(app.engine(), app.target) as conn:
        assert [r.ts for r in list_rejects(conn, ["BTC-USD"])] == [TODAY - 3 * DAY]


def _unreachable_app(**values):
    import socket

    from marketdata.config import load_settings
    from marketdata.context import AppContext
    from marketdata.observability.alerts import RecordingAlerts
    from marketdata.observability.metrics import RecordingMetrics

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    url = f"postgresql://marketdata@127.0.0.1:{port}/marketdata"
    loaded = load_settings({"database_url": url, "db_connect_timeout": 1, **values}, environ={})
    return AppContext(loaded, metrics=RecordingMetrics(), alerts=RecordingAlerts())


@pytest.mark.parametrize(
    ("asked", "settings", "providers", "symbols"),
    [
        # the request's own providers (comma lists, blanks dropped) and symbols
        (
            {"symbols": ["ETH-USD"], "providers": ["coinbase, kraken", " ", "binance,"]},
            {"ingestion_symbols": "BTC-USD", "ingestion_provider": "yahoo"},
            ["coinbase", "kraken", "binance"],
            ["ETH-USD"],
        ),
        # none asked: INGESTION_PROVIDER and INGESTION_SYMBOLS
        (
            {},
            {"ingestion_symbols": "BTC-USD,SOL-USD", "ingestion_provider": "kraken,coinbase"},
            ["kraken", "coinbase"],
            ["BTC-USD", "SOL-USD"],
        ),
    ],
)
def test_a_run_that_cannot_reach_the_database_alerts_with_what_was_asked(
    asked, settings, providers, symbols
):
    from marketdata.errors import DatabaseUnavailableError

    app = _unreachable_app(**settings)
    try:
        with pytest.raises(DatabaseUnavailableError):
            run_ingest(app, IngestRequest(trigger="timer", **asked))
    finally:
        app.close()
    [alert] = app.alerts.sent
    assert (alert.severity, alert.title) == (
        "critical",
        "database unreachable: ingestion run could not start",
    )
    assert (alert.trigger, list(alert.providers), list(alert.symbols)) == (
        "timer",
        providers,
        symbols,
    )


@contextmanager
def warnings_logged():
    """The messages of the warnings logged in the block (loguru), as a list filled as they
    come."""
    from loguru import logger

    lines: list[str] = []
    handler = logger.add(lambda m: lines.append(m.record["message"]), level="WARNING")
    try:
        yield lines
    finally:
        logger.remove(handler)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_pair_write_that_meets_a_deadlock_is_written_again_counted_once(make_app, fake):
    from tests.conftest import deadlocks

    high_below_low(fake, TODAY - 3 * DAY)
    app = make_app()
    with warnings_logged() as warned, deadlocks(app.engine(), "ingestion_outcomes", 2) as tried:
        result = ingest(app)
        assert tried() == 3  # two writes rolled back, the third committed
    outcome = result.outcomes[0]
    assert result.status is RunStatus.SUCCESS
    assert _fields(outcome) == ("BTC-USD", "1d", "ok", "coinbase", 31, 30, 0, 0, 1, None)
    retries = [w for w in warned if "writing again" in w]
    assert [w.split(": ")[0] for w in retries] == ["BTC-USD 1d", "BTC-USD 1d"]
    assert [w.split("; ")[-1] for w in retries] == [
        "writing again in 0.2s (attempt 2 of 5)",
        "writing again in 0.4s (attempt 3 of 5)",
    ]
    with connect(app.engine(), app.target) as conn:
        assert count_candles(conn, "BTC-USD") == 30
        assert len(list_rejects(conn, ["BTC-USD"])) == 1  # the rolled-back ones are gone
        [recorded] = outcomes_of(conn, result.run_id)
    assert _fields(recorded) == _fields(outcome)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_pair_write_that_keeps_meeting_deadlocks_fails_after_five_attempts(make_app):
    from tests.conftest import deadlocks

    app = make_app()
    with warnings_logged() as warned, deadlocks(app.engine(), "ingestion_outcomes", 5) as tried:
        result = ingest(app, symbols=["BTC-USD"])
        assert tried() == 6  # five writes, then the failure recorded on its own
    outcome = result.outcomes[0]
    assert result.status is RunStatus.FAILURE
    # what was fetched is told; nothing of it was stored
    assert _fields(outcome)[:-1] == ("BTC-USD", "1d", "failed", "coinbase", 31, 0, 0, 0, 0)
    assert outcome.error is not None
    assert outcome.error.startswith("PostgreSQL at ")
    assert " is busy: deadlock detected (40P01)" in outcome.error
    waits = [w.split("; ")[-1] for w in warned if "writing again" in w]
    assert waits == [
        f"writing again in {s}s (attempt {n} of 5)"
        for s, n in [(0.2, 2), (0.4, 3), (0.8, 4), (1.6, 5)]
    ]
    with connect(app.engine(), app.target) as conn:
        assert count_candles(conn) == 0
        [recorded] = outcomes_of(conn, result.run_id)
    assert (recorded["status"], recorded["error"]) == ("failed", outcome.error)


def test_a_pair_skipped_for_longer_than_alert_stale_after_is_warned_about(make_app):
    """Each skip of a held pair is recorded; once the pair has been skipped for longer than
    ALERT_STALE_AFTER (2h by default: exactly 2h is not longer) a warning names it."""
    from datetime import timedelta

    app = make_app()
    with held_elsewhere(make_app(), "BTC-USD"), warnings_logged() as warned:
        stale = []
        for later in (timedelta(0), timedelta(hours=2), timedelta(hours=2, seconds=1)):
            app.clock = lambda later=later: NOW + later
            outcome, _ = run_one_pair(app)
            assert (outcome.status, outcome.error) == ("skipped", "held by another worker")
            stale.append([w for w in warned if "has been skipped since" in w])
            warned.clear()
    assert stale[:2] == [[], []]
    assert stale[2] == [
        "BTC-USD 1d has been skipped since 2024-04-10T12:00:00+00:00 because another worker "
        "holds its lock (longer than ALERT_STALE_AFTER=2h): is that worker stuck? "
        "see `marketdata runs`"
    ]


def test_each_pair_s_window_follows_the_mode_the_bounds_and_what_is_stored(make_app):
    app = make_app()

    def windows(symbol="BTC-USD", **asked):
        plan = build_plan(app, IngestRequest(symbols=["BTC-USD", "ETH-USD"], **asked))
        [pair] = [p for p in plan.pairs if p.symbol == symbol]
        return [(w.start, w.end) for w in pair.windows]

    bar_end = TODAY + DAY  # the end of the bar open now: it is fetched too
    assert windows() == [(TODAY - 30 * DAY, bar_end)]  # nothing stored: the lookback
    assert windows(lookback_days=5) == [(TODAY - 5 * DAY, bar_end)]
    assert windows(since=TODAY - 10 * DAY) == [(TODAY - 10 * DAY, bar_end)]
    assert windows(until=TODAY - 5 * DAY) == [(TODAY - 30 * DAY, TODAY - 5 * DAY)]
    assert windows(until=TODAY + 9 * DAY) == [(TODAY - 30 * DAY, bar_end)]  # no further
    ingest(app)  # BTC-USD stored up to today's bar
    with connect(app.engine(), app.target) as conn, conn.begin():  # a hole in the history
        from marketdata.domain import utc_from_epoch
        from marketdata.storage.schema import candles

        conn.execute(candles.delete().where(candles.c.ts == utc_from_epoch(TODAY - 10 * DAY)))
    assert windows() == [(TODAY, bar_end)]  # from the last stored bar, which may have moved
    assert windows(mode=Mode.REPLAY) == [(TODAY - 30 * DAY, bar_end)]
    assert windows(mode=Mode.BACKFILL) == [(TODAY - 10 * DAY, TODAY - 9 * DAY), (TODAY, bar_end)]
    assert windows("ETH-USD", mode=Mode.BACKFILL) == [(TODAY - 30 * DAY, bar_end)]
    # a window ending before the stored history is empty for that pair, not reversed
    assert windows(until=TODAY - 5 * DAY) == [(TODAY - 5 * DAY, TODAY - 5 * DAY)]
    assert windows("ETH-USD", until=TODAY - 5 * DAY) == [(TODAY - 30 * DAY, TODAY - 5 * DAY)]


def test_a_run_whose_only_fetched_pair_failed_is_a_failure_whatever_it_skipped(make_app):
    """Disabled and skipped pairs are neither ok nor failed: a run whose every fetched pair
    failed is a failure, recorded with that pair's error."""
    app = make_app(ingestion_disabled_symbols="ETH-USD")
    result = ingest(app, symbols=["ETH-USD", "NOPE-USD"])
    assert {o.symbol: o.status for o in result.outcomes} == {
        "ETH-USD": "disabled",
        "NOPE-USD": "failed",
    }
    assert result.status is RunStatus.FAILURE
    [failed] = [o for o in result.outcomes if o.status == "failed"]
    assert result.error == failed.error
    with connect(app.engine(), app.target) as conn:
        [run] = recent_runs(conn)
    assert (run.status, run.error) == ("failure", failed.error)


class RecordingProgress:
    """A Progress that keeps what it is told."""

    def __init__(self) -> None:
        self.pairs: int | None = None
        self.done: list[tuple[str, str]] = []

    def started(self, pairs: int) -> None:
        self.pairs = pairs

    def pair_done(self, outcome) -> None:
        self.done.append((outcome.symbol, outcome.status))


def test_progress_is_told_the_pairs_of_the_run_then_each_pair_once(make_app):
    app = make_app(ingestion_disabled_symbols="SOL-USD")
    progress = RecordingProgress()
    symbols = ["BTC-USD", "ETH-USD", "SOL-USD", "NOPE-USD"]
    result = run_ingest(app, IngestRequest(symbols=symbols), progress)
    assert progress.pairs == 4
    assert sorted(progress.done) == [
        ("BTC-USD", "ok"),
        ("ETH-USD", "ok"),
        ("NOPE-USD", "failed"),
        ("SOL-USD", "disabled"),
    ]
    assert sorted((o.symbol, o.status) for o in result.outcomes) == sorted(progress.done)


def _candle_writes(app):
    """The statements that write candles, counted from now on (a list filled as they run)."""
    import sqlalchemy as sa

    seen: list[str] = []

    def count(_conn, _cursor, statement, *_args):
        words = statement.split()
        if words[0].upper() in ("INSERT", "UPDATE", "DELETE", "TRUNCATE", "COPY") and any(
            "candles" in word for word in words[1:4]
        ):
            seen.append(" ".join(words[:3]))

    sa.event.listen(app.engine(), "before_cursor_execute", count)
    return seen


def test_a_fleet_pair_with_nothing_new_sends_no_statement_that_writes_candles(make_app):
    app = make_app()
    run_one_pair(app)
    writes = _candle_writes(app)
    outcome, _ = run_one_pair(app)
    assert (outcome.fetched, outcome.unchanged) == (1, 1)
    assert writes == []


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_fleet_pair_whose_write_keeps_failing_is_logged_with_its_pair_and_run(make_app):
    from loguru import logger

    from tests.conftest import deadlocks

    app = make_app()
    records: list[tuple[str, dict]] = []
    handler = logger.add(lambda m: records.append((m.record["message"], m.record["extra"])))
    try:
        with deadlocks(app.engine(), "ingestion_outcomes", 5):
            outcome, recorded = run_one_pair(app)
    finally:
        logger.remove(handler)
    assert outcome.status == "failed"
    assert [o["status"] for o in recorded] == ["failed"]
    [(message, extra)] = [r for r in records if r[0].startswith("BTC-USD 1d failed: ")]
    assert message == f"BTC-USD 1d failed: {outcome.error}"
    assert (extra["symbol"], extra["interval"], extra["run_id"]) == (
        "BTC-USD",
        "1d",
        recorded[0]["run_id"],
    )
    retries = [extra for message, extra in records if "writing again" in message]
    assert len(retries) == 4
    assert {(e["symbol"], e["interval"], e["run_id"]) for e in retries} == {
        ("BTC-USD", "1d", recorded[0]["run_id"])
    }
