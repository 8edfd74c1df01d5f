"""The quarantine keeps one row per provider, pair, time and reason, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from marketdata.storage import migrate
from marketdata.storage.engine import connect
from marketdata.storage.rejects import list_rejects, purge_rejects, record_rejects
from marketdata.validation import Rejected

T0 = datetime(2026, 1, 5, tzinfo=UTC)
BAD = Rejected(1_767_225_600, 10.0, 5.0, 8.0, 9.0, 1.0, "high below open or close")


def _record(conn, rows, now, run_id=None):
    record_rejects(conn, run_id, "BTC-USD", "1d", "coinbase", rows, now)
    conn.commit()


def test_the_same_bad_candle_seen_again_is_counted_not_piled_up(app_factory):
    app = app_factory()
    with connect(app.engine(), app.target) as conn:
        _record(conn, [BAD], T0)
        corrected = Rejected(BAD.ts, 11.0, 5.0, 8.0, 9.0, 2.0, BAD.reason)
        _record(conn, [corrected, corrected], T0 + timedelta(days=1))  # twice in one batch too
        other = Rejected(BAD.ts, float("nan"), 5.0, 8.0, 9.0, 1.0, "price not finite")
        _record(conn, [other], T0 + timedelta(days=2))
        rows = list_rejects(conn, ["BTC-USD"])

    assert [(r.reason, r.count) for r in rows] == [
        ("price not finite", 1),
        ("high below open or close", 3),
    ]
    counted = rows[1]
    assert counted.first_seen == T0 and counted.last_seen == T0 + timedelta(days=1)
    assert (counted.open, counted.volume) == (11.0, 2.0)  # the values as last seen
    assert rows[0].open is None  # NaN stored as NULL


def test_since_lists_and_purge_deletes_by_when_last_seen(app_factory):
    app = app_factory()
    with connect(app.engine(), app.target) as conn:
        _record(conn, [BAD], T0)
        later = Rejected(BAD.ts + 86_400, 10.0, 5.0, 8.0, 9.0, 1.0, BAD.reason)
        _record(conn, [later], T0 + timedelta(days=10))
        recent = list_rejects(conn, since=T0 + timedelta(days=5))
        matched = purge_rejects(conn, T0 + timedelta(days=5), dry_run=True)
        deleted = purge_rejects(conn, T0 + timedelta(days=5))
        conn.commit()
        left = list_rejects(conn)

    assert [r.ts for r in recent] == [later.ts]
    assert (matched, deleted) == (1, 1)
    assert [r.ts for r in left] == [later.ts]


def test_the_migration_folds_existing_duplicates_into_their_first_row(app_factory):
    app = app_factory()
    engine, target = app.engine(migrate=False), app.target
    migrate.downgrade(engine, target, "0008")
    insert = sa.text(
        'INSERT INTO rejects (symbol, "interval", provider, ts, reason, rejected_at) '
        "VALUES ('BTC-USD', '1d', 'coinbase', :ts, :reason, :at)"
    )
    with engine.begin() as conn:
        for ts, reason, day in [(1, "a", 1), (1, "a", 3), (1, "a", 2), (1, "b", 4), (2, "a", 5)]:
            conn.execute(insert, {"ts": ts, "reason": reason, "at": T0 + timedelta(days=day)})
    migrate.upgrade(engine, target)
    with connect(engine, target) as conn:
        rows = sorted(list_rejects(conn), key=lambda r: (r.ts, r.reason))
        assert migrate.drift(conn) == []

    assert [(r.ts, r.reason, r.count) for r in rows] == [(1, "a", 3), (1, "b", 1), (2, "a", 1)]
    assert rows[0].first_seen == T0 + timedelta(days=1)
    assert rows[0].last_seen == T0 + timedelta(days=3)
