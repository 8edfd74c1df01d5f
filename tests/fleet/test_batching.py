"""A tick over many pairs costs a few statements per group of pairs, not a dozen per pair:
locks taken and released together, unchanged pairs recorded together; what changed is still
written pair by pair, a held pair is still skipped, a transient fault is still retried."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from marketdata.domain import Interval, RunStatus
from marketdata.pipeline import IngestRequest, run_ingest
from marketdata.storage.locks import lock_key
from tests.conftest import deadlocks

NOW = datetime(2024, 4, 10, 12, 30, tzinfo=UTC)
SYMBOLS = [f"B{i:03d}-USD" for i in range(120)]


@pytest.fixture
def filled(app_factory):
    """120 hourly pairs filled two days back; the tick then runs at the same moment, so
    every pair fetches only its last stored candle again, unchanged."""

    def build(**overrides):
        app = app_factory(**{"ingestion_lookback_days": 2, "ingestion_concurrency": 2, **overrides})
        app.clock = lambda: NOW
        return app

    fill = run_ingest(build(), _request())
    assert fill.status is RunStatus.SUCCESS
    return build


def _request(symbols=SYMBOLS):
    return IngestRequest(symbols=symbols, intervals=[Interval.H1], providers=["synthetic"])


def _statements(app) -> Counter[str]:
    seen: Counter[str] = Counter()

    def count(_conn, _cursor, statement, *_args):
        seen[statement.split()[0].upper()] += 1

    sa.event.listen(app.engine(), "before_cursor_execute", count)
    return seen


def _stored(app, symbol):
    with app.engine().connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT close, ingested_at FROM candles WHERE symbol = :s AND interval = '1h' "
                "ORDER BY ts DESC LIMIT 1"
            ),
            {"s": symbol},
        ).one()


def test_a_tick_with_nothing_new_costs_less_than_one_statement_per_pair(filled):
    app = filled()
    before = _stored(app, SYMBOLS[7])
    statements = _statements(app)
    result = run_ingest(app, _request())
    assert result.status is RunStatus.SUCCESS
    if app.target.dialect == "postgresql":  # each statement a round trip to the server
        assert sum(statements.values()) < len(SYMBOLS), statements  # it was about 13 a pair
    assert statements["UPDATE"] == 1  # the run row only: no candle was written again
    assert len(result.outcomes) == len(SYMBOLS)
    assert {(o.status, o.fetched, o.unchanged, o.inserted, o.updated) for o in result.outcomes} == {
        ("ok", 1, 1, 0, 0)
    }
    assert _stored(app, SYMBOLS[7]) == before  # not even re-stamped
    with app.engine().connect() as conn:
        recorded = conn.execute(
            sa.text(
                "SELECT count(*), count(DISTINCT symbol) FROM ingestion_outcomes WHERE run_id = :r"
            ),
            {"r": result.run_id},
        ).one()
    assert tuple(recorded) == (len(SYMBOLS), len(SYMBOLS))


def test_a_stored_candle_that_differs_is_written_again_by_its_own_transaction(filled):
    app = filled()
    right = _stored(app, SYMBOLS[3]).close
    with app.engine().begin() as conn:  # a stored candle no longer what the provider says
        conn.execute(
            sa.text("UPDATE candles SET close = close * 2 WHERE symbol = :s AND interval = '1h'"),
            {"s": SYMBOLS[3]},
        )
    result = run_ingest(app, _request())
    by_symbol = {o.symbol: o for o in result.outcomes}
    assert (by_symbol[SYMBOLS[3]].updated, by_symbol[SYMBOLS[3]].unchanged) == (1, 0)
    assert all(o.unchanged == 1 for s, o in by_symbol.items() if s != SYMBOLS[3])
    assert _stored(app, SYMBOLS[3]).close == right


def test_a_new_bar_is_written_by_its_pair_s_own_transaction(filled):
    app = filled()
    later = datetime(2024, 4, 10, 13, 5, tzinfo=UTC)  # the next hour opened
    app.clock = lambda: later
    result = run_ingest(app, _request(SYMBOLS[:20]))
    assert result.status is RunStatus.SUCCESS
    assert {(o.inserted, o.unchanged) for o in result.outcomes} == {(1, 1)}


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_pair_held_by_another_process_is_skipped_and_the_rest_recorded(filled):
    app = filled()
    holder = app.engine().connect()
    try:
        holder.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": lock_key(SYMBOLS[5], "1h")})
        holder.commit()
        result = run_ingest(app, _request())
    finally:
        holder.close()
    statuses = Counter(o.status for o in result.outcomes)
    assert statuses == {"ok": len(SYMBOLS) - 1, "skipped": 1}
    assert next(o for o in result.outcomes if o.status == "skipped").symbol == SYMBOLS[5]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_transient_fault_recording_unchanged_pairs_is_retried(filled):
    app = filled(ingestion_concurrency=1)  # 40 pairs in 4 groups of 10, one after another
    engine = app.engine()
    # the first two inserts of outcomes meet a deadlock
    with deadlocks(engine, "ingestion_outcomes", 2) as tried:
        result = run_ingest(app, _request(SYMBOLS[:40]))
        faults = tried()
    assert result.status is RunStatus.SUCCESS
    assert faults == 4 + 2  # a statement per group, two of them rolled back and tried again
    assert {(o.status, o.unchanged) for o in result.outcomes} == {("ok", 1)}
    with engine.connect() as conn:
        recorded = conn.execute(
            sa.text("SELECT count(*) FROM ingestion_outcomes WHERE run_id = :r"),
            {"r": result.run_id},
        ).scalar_one()
    assert recorded == 40


def _underived(app, symbols) -> int:
    """Stored hourly rows of these pairs without their indicators (drawdown is never null
    once computed)."""
    with app.engine().connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT count(*) FROM candles WHERE interval = '1h' AND drawdown IS NULL "
                "AND symbol IN :s"
            ).bindparams(sa.bindparam("s", expanding=True)),
            {"s": symbols},
        ).scalar_one()


def test_a_tick_fills_the_indicators_of_an_interval_newly_in_analytics_intervals(app_factory):
    symbols = SYMBOLS[:6]

    def build(**overrides):
        app = app_factory(ingestion_lookback_days=2, ingestion_concurrency=2, **overrides)
        app.clock = lambda: NOW
        return app

    before = build(analytics_intervals="1d")  # hourly bars stored without indicators
    assert run_ingest(before, _request(symbols)).status is RunStatus.SUCCESS
    assert _underived(before, symbols) > 6 * 40
    app = build()  # ANALYTICS_INTERVALS now names 1h (the default 1h,1d)
    result = run_ingest(app, _request(symbols))  # nothing new from the provider
    assert result.status is RunStatus.SUCCESS
    assert _underived(app, symbols) == 0
    from marketdata.derive import rebuild

    with app.engine().begin() as conn:  # what it stored is what a rebuild computes
        assert {rebuild(conn, s, Interval.H1)[1] for s in symbols} == {0}


def test_a_tick_with_new_bars_fills_the_older_rows_of_a_newly_analysed_interval(app_factory):
    from datetime import timedelta

    from marketdata.derive import rebuild

    symbols = SYMBOLS[:4]
    before = app_factory(ingestion_lookback_days=2, analytics_intervals="1d")
    before.clock = lambda: NOW
    assert run_ingest(before, _request(symbols)).status is RunStatus.SUCCESS
    assert _underived(before, symbols) > 4 * 40
    app = app_factory(ingestion_lookback_days=2)  # 1h analysed now, and two new bars each
    app.clock = lambda: NOW + timedelta(hours=2)
    result = run_ingest(app, _request(symbols))
    assert result.status is RunStatus.SUCCESS
    assert sum(o.inserted for o in result.outcomes) >= 4 * 2
    assert _underived(app, symbols) == 0
    with app.engine().begin() as conn:  # what it stored is what a rebuild computes
        assert {rebuild(conn, s, Interval.H1)[1] for s in symbols} == {0}


def test_a_fetched_row_equal_to_a_stored_invalid_one_is_rejected_as_a_write_would(
    app_factory, tmp_path, monkeypatch
):
    from marketdata.domain import Candles, epoch_of
    from marketdata.storage.candles import write_candles

    monkeypatch.chdir(tmp_path)  # the CSV provider reads data/SYMBOL_1h.csv from here
    app = app_factory(ingestion_lookback_days=2, analytics_intervals="1d")
    app.clock = lambda: NOW
    hour = epoch_of(NOW) // 3600 * 3600 - 3600
    # its high is below its close: a row the checks reject, stored by hand (or by an older
    # version with looser checks) and served again by the provider
    rows = [(hour - 3600, 100.0, 101.0, 99.0, 100.5, 5.0), (hour, 100.0, 99.0, 95.0, 101.0, 5.0)]
    (tmp_path / "data").mkdir()
    lines = ["ts,open,high,low,close,volume", *(",".join(map(str, r)) for r in rows)]
    (tmp_path / "data" / "BAD-USD_1h.csv").write_text("\n".join(lines) + "\n")
    with app.engine().begin() as conn:
        write_candles(conn, Candles.from_rows("BAD-USD", Interval.H1, "csv", rows), NOW)
    request = IngestRequest(symbols=["BAD-USD"], intervals=[Interval.H1], providers=["csv"])
    outcome = run_ingest(app, request).outcomes[0]
    assert (outcome.status, outcome.fetched, outcome.rejected, outcome.unchanged) == ("ok", 1, 1, 0)
    with app.engine().connect() as conn:
        reasons = conn.execute(sa.text("SELECT reason FROM rejects")).scalars().all()
    assert reasons == ["high below open or close"]
