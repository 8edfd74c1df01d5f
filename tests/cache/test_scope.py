"""The cache belongs to one database: values cached from one are never served for another,
and what a reader cannot use (not JSON, another shape) is a miss, said once."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import diskcache
import numpy as np
import pytest
import redis
from sqlalchemy.engine import make_url

from marketdata.analytics.indicators import INDICATOR_NAMES
from marketdata.cache.keys import latest_key, recent_key, show_key
from marketdata.config import load_settings
from marketdata.context import AppContext
from marketdata.domain import Interval
from marketdata.errors import DatabaseUnavailableError
from marketdata.observability.metrics import RecordingMetrics
from marketdata.pipeline import IngestRequest, run_ingest
from marketdata.reports import comparison_report, show
from marketdata.storage.candles import read_candles
from marketdata.storage.engine import connect
from tests.cli.helpers import run
from tests.cli.test_analytics_cli import INGEST, WINDOW, make_env
from tests.fakes.redis_server import spare_port
from tests.fakes.tcpproxy import proxy_to

NOW = datetime(2024, 4, 10, 12, 0, tzinfo=UTC)
SYMBOLS = ["BTC-USD", "ETH-USD", "AAPL"]
UNREACHABLE = "postgresql://u@127.0.0.1:{port}/gone"


def unreachable_url() -> str:
    return UNREACHABLE.format(port=spare_port())


# ------------------------------------------------------------------ one database, one cache


def test_show_never_answers_for_another_database_from_the_default_disk_cache(tmp_path):
    """The defect as seen: an ingest into the embedded SQLite file filled the default disk
    cache, then `show` against an unreachable PostgreSQL answered from it (exit 0)."""
    env = make_env(tmp_path)
    assert run([*INGEST, *WINDOW], env).returncode == 0
    shown = run(["show", "BTC-USD", "--json"], env)
    assert shown.returncode == 0 and json.loads(shown.stdout)["source"] == "cache"
    elsewhere = run(["show", "BTC-USD", "--json"], {**env, "DATABASE_URL": unreachable_url()})
    assert elsewhere.returncode == 75, elsewhere.stderr
    assert elsewhere.stdout == "" and "answering from the cache" not in elsewhere.stderr


def test_a_redis_shared_without_a_prefix_of_its_own_never_serves_another_databases_values(
    tmp_path, redis_url
):
    env = make_env(tmp_path) | {
        "REDIS_URL": redis_url,
        "CACHE_PREFIX": f"test:{uuid.uuid4().hex[:8]}:",
    }
    try:
        assert run([*INGEST, *WINDOW], env).returncode == 0
        for args in (["show", "BTC-USD"], ["compare", "BTC-USD", "ETH-USD"]):
            elsewhere = run([*args, "--json"], {**env, "DATABASE_URL": unreachable_url()})
            assert elsewhere.returncode == 75, elsewhere.stderr
            assert elsewhere.stderr.count("written for another database") == 1
            assert "CACHE_PREFIX" in elsewhere.stderr
    finally:
        run(["cache", "invalidate", "--yes", "*"], env)


def test_a_cache_dir_shared_by_two_databases_never_serves_the_others_values(tmp_path):
    env = make_env(tmp_path) | {"CACHE_DIR": str(tmp_path / "shared")}
    assert run([*INGEST, *WINDOW], env).returncode == 0
    elsewhere = run(["show", "ETH-USD", "--json"], {**env, "DATABASE_URL": unreachable_url()})
    assert elsewhere.returncode == 75, elsewhere.stderr


def test_the_default_disk_cache_directory_is_the_databases_own():
    def cache_dir(url):
        app = AppContext(load_settings({"database_url": url}, environ={}))
        try:
            return app.cache.backend.location
        finally:
            app.close()

    one = cache_dir("postgresql://u:first-secret@db.example:5432/market")
    # the same database spelt otherwise, or reached with another password: the same
    assert cache_dir("postgres://u:other@DB.example/market") == one
    assert "first-secret" not in one
    assert cache_dir("postgresql://u@db.example:5432/other") != one
    assert cache_dir("postgresql://u@db.example:5433/market") != one
    assert cache_dir("sqlite:///a.sqlite3") != cache_dir("sqlite:///b.sqlite3")


def test_the_old_shared_default_disk_cache_is_removed_and_nothing_else(tmp_path, monkeypatch):
    """Versions before the per-database directories kept the disk cache in the app's cache
    directory itself: nothing reads it any more, so opening the default cache removes it."""
    root = tmp_path / "cache"
    monkeypatch.setenv("CACHE_DIRECTORY", str(root))
    old = diskcache.Cache(str(root))
    old.set("market:BTC-USD:1d:show", "x" * 100_000)  # large: a file in a directory of its own
    old.close()
    assert any(child.is_dir() for child in root.iterdir())
    (root / "notes.txt").write_text("not the cache's")
    settings = load_settings({"database_url": f"sqlite:///{tmp_path / 'a.sqlite3'}"}, environ={})
    for _ in range(2):  # the second command finds nothing to remove
        app = AppContext(settings)
        try:
            own = app.cache.backend.location
        finally:
            app.close()
        assert sorted(child.name for child in root.iterdir()) == ["db-" + own[-16:], "notes.txt"]
    assert own.startswith(str(root / "db-"))


def test_a_database_id_ignores_the_password_but_not_where_the_data_lives():
    from marketdata.cache.fallback import database_id

    base = database_id(make_url("postgresql+psycopg://u:pw@h:5432/d"))
    assert base == database_id(make_url("postgresql://u:another@H/d"))
    assert base != database_id(make_url("postgresql://u@h/e"))
    assert base != database_id(make_url("postgresql://u@h/d?options=-csearch_path%3Dx"))


# ----------------------------------------------- the database's own cache through its outage


@pytest.fixture(params=["disk", "redis"])
def behind_proxy(request, pg_database, tmp_path):
    """Apps on the test PostgreSQL reached through a proxy that the test can close (the same
    URL then refuses), sharing one cache of the parametrised backend."""
    from tests.conftest import _truncate

    _truncate(pg_database)
    settings = {"cache_dir": str(tmp_path / "cache"), "ingestion_concurrency": 1}
    if request.param == "redis":
        settings |= {
            "redis_url": request.getfixturevalue("redis_url"),
            "cache_prefix": f"test:{uuid.uuid4().hex[:8]}:",
        }
    built: list[AppContext] = []
    with proxy_to(make_url(pg_database).port or 5432) as proxy:
        url = make_url(pg_database).set(host="127.0.0.1", port=proxy.port)
        through = url.render_as_string(hide_password=False) + "?sslmode=disable"

        def build():
            values = {"database_url": through, **settings}
            app = AppContext(load_settings(values, environ={}), metrics=RecordingMetrics())
            app.clock = lambda: NOW
            built.append(app)
            return app

        yield build, proxy
    for app in built:
        app.close()
    cleaner = AppContext(load_settings(settings, environ={}))
    cleaner.cache.delete_pattern("*")
    cleaner.close()


def test_the_databases_own_cache_answers_through_its_outage_with_a_warning(
    behind_proxy, caplog_warnings
):
    build, proxy = behind_proxy
    app = build()
    run_ingest(app, IngestRequest(symbols=SYMBOLS, providers=["synthetic"], lookback_days=60))
    app.close()
    # a newer candle was stored since: the cached values are stale, only an outage shows them
    newest = app.cache.get(latest_key("BTC-USD", "1d"))
    app.cache.set(latest_key("BTC-USD", "1d"), {**newest, "ts": newest["ts"] + 86_400})
    proxy.close()
    down = build()
    report = show(down, "BTC-USD")
    assert report.source == "cache"
    compared = comparison_report(down, SYMBOLS, 20, None)
    assert compared.source == "cache"
    assert len([w for w in caplog_warnings if "answering from the cache" in w]) == 2
    assert not [w for w in caplog_warnings if "another database" in w]
    with pytest.raises(DatabaseUnavailableError):
        show(down, "SOL-USD")  # nothing cached for it: the outage is the answer


# ------------------------------------------------------------- what a reader cannot use


@pytest.fixture(params=["disk", "redis"])
def filled(request, app_factory, tmp_path):
    """An ingested database, its cache of the parametrised backend, and a raw writer that
    puts bytes under a key as another program would."""
    overrides = {"cache_dir": str(tmp_path / "cache"), "ingestion_concurrency": 1}
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        overrides |= {"redis_url": url, "cache_prefix": prefix}
        client = redis.Redis.from_url(url)

        def put(key, raw):
            client.set(prefix + key, raw)
    else:
        overrides |= {"cache_prefix": prefix}

        def put(key, raw):
            with diskcache.Cache(str(tmp_path / "cache")) as disk:
                disk.set(prefix + key, raw)

    built = []

    def build():
        app = app_factory(**overrides)
        app.clock = lambda: NOW
        built.append(app)
        return app

    run_ingest(build(), IngestRequest(symbols=SYMBOLS, providers=["synthetic"], lookback_days=60))
    yield build, put
    for app in built:  # closing flushes the hit and miss counters: before the cleaning
        app.close()
    cleaner = app_factory(**overrides)
    cleaner.cache.delete_pattern("*")
    cleaner.close()


def _a_show_value_with(build, **changes):
    app = build()
    value = app.cache.get(show_key("BTC-USD", "1d"))
    return json.dumps({**value, **changes})


@pytest.mark.parametrize(
    "raw",
    [
        "not json {",
        b"\xff\xfe binary",
        "[1, 2, 3]",
        '{"garbage": true}',
        "shorter",  # a show value whose close column lost a candle
        "wrong-newest",
        "text-in-a-column",
        "true-in-a-column",  # JSON true is no number, though Python's bool is an int
        "fraction-in-ts",
    ],
)
def test_a_value_a_reader_cannot_use_is_a_miss_said_once(filled, raw, caplog_warnings):
    build, put = filled
    if raw == "shorter":
        value = json.loads(_a_show_value_with(build))
        value["columns"]["close"] = value["columns"]["close"][1:]
        raw = json.dumps(value)
    elif raw == "wrong-newest":
        raw = _a_show_value_with(build, newest="1712707200")
    elif raw == "text-in-a-column":
        value = json.loads(_a_show_value_with(build))
        value["columns"][INDICATOR_NAMES[-1]][-1] = "high"
        raw = json.dumps(value)
    elif raw == "true-in-a-column":
        value = json.loads(_a_show_value_with(build))
        value["columns"]["volume"][0] = True
        raw = json.dumps(value)
    elif raw == "fraction-in-ts":
        value = json.loads(_a_show_value_with(build))
        value["columns"]["ts"][0] += 0.5
        raw = json.dumps(value)
    put(show_key("BTC-USD", "1d"), raw)
    put(show_key("ETH-USD", "1d"), raw)
    app = build()
    assert show(app, "BTC-USD").source == "database"
    assert comparison_report(app, ["BTC-USD", "ETH-USD"], 20, None).source == "database"
    unreadable = [w for w in caplog_warnings if "reading the database instead" in w]
    assert len(unreadable) == 1, caplog_warnings
    assert "cache value market:" in unreadable[0]
    # show wrote the pair's values again: the next reader is answered from the cache
    assert show(build(), "BTC-USD").source == "cache"


@pytest.mark.parametrize(
    "raw",
    [
        "not json {",
        "wrong-newest",
        "another-database",
        "a-close-without-its-ts",
        "a-row-with-a-string",
        "a-number-for-its-provider",
    ],
)
def test_a_recent_value_a_reader_cannot_use_is_a_miss_said_once(filled, raw, caplog_warnings):
    """The `show` value alone would look current (nothing after it yet), but the `recent` value
    beside it cannot be trusted: the database answers, and `show` writes both again."""
    build, put = filled
    key, named = recent_key("BTC-USD", "1d"), ""
    value = build().cache.get(key)
    assert value["rows"] == [] and value["after"] == value["newest"]
    if raw == "wrong-newest":
        raw = json.dumps(value | {"newest": value["newest"] + 86_400})
    elif raw == "another-database":
        raw = json.dumps(value | {"database": "another"})
    elif raw == "a-close-without-its-ts":
        raw = json.dumps(value | {"rows": [[1.0]]})
        named = "a row that is not a list of its 'fields'"
    elif raw == "a-row-with-a-string":
        row = [value["newest"], "1.0", *[1.0] * (len(value["fields"]) - 2)]
        raw = json.dumps(value | {"rows": [row], "newest": row[0]})
        named = "a non-number in 'rows'"
    elif raw == "a-number-for-its-provider":
        raw = json.dumps(value | {"provider": 5})
        named = "without a valid 'provider'"
    put(key, raw)
    app = build()
    assert show(app, "BTC-USD").source == "database"
    said = [w for w in caplog_warnings if f"cache value {key}" in w]
    assert len(said) == 1, caplog_warnings
    assert named in said[0]
    assert show(build(), "BTC-USD").source == "cache"


@pytest.mark.parametrize("kind", ["show", "recent"])
@pytest.mark.parametrize("raw", ["not json {", "[1, 2]", "a-bad-stamp"])
def test_an_incremental_run_over_a_value_it_cannot_use_refreshes_the_pair(filled, kind, raw):
    """The writer extends only values of its own shape and database; over anything else it
    folds or reads the database instead, never failing: the pair's `latest` value is the new
    candle once the run ends, and `show` answers what the database holds."""
    build, put = filled
    key = (show_key if kind == "show" else recent_key)("BTC-USD", "1d")
    if raw == "a-bad-stamp":  # a string where an ISO 8601 time belongs
        field = "stored_at" if kind == "show" else "base_stored_at"
        raw = json.dumps(build().cache.get(key) | {field: "yesterday"})
    put(key, raw)
    assert_an_incremental_run_refreshes(build, NOW + timedelta(days=1))


@pytest.mark.parametrize(
    "spoil",
    ["pretty", "rows-first", "a-text-time", "a-fractional-time", "a-bracket-more", "columns"],
)
def test_a_recent_value_laid_out_otherwise_is_folded_not_extended_in_place(filled, spoil):
    """An incremental run extends a `recent` value in place, its rows' text copied as it is,
    only when the value is laid out as this version writes it. One that a reader can use
    all the same (indented, its rows first) and one it cannot (a time as text or with a
    fraction, a bracket too many, the columns an older version wrote) are folded instead:
    the run writes a new `show` value, whose rows are the database's."""
    build, put = filled
    key = recent_key("BTC-USD", "1d")
    assert_an_incremental_run_refreshes(build, NOW + timedelta(days=1))
    value = build().cache.get(key)
    assert value["rows"], "the first incremental run extended the value"
    text, ts = json.dumps(value, separators=(",", ":")), value["rows"][-1][0]
    names = value["fields"]
    spoiled = {
        "pretty": json.dumps(value, indent=1),
        "rows-first": json.dumps({"rows": value["rows"]} | value),
        "a-text-time": text.replace(f"[{ts},", f'["{ts}",'),
        "a-fractional-time": text.replace(f"[{ts},", f"[{ts}.5,"),
        "a-bracket-more": text.replace('"rows":[[', '"rows":[[['),
        "columns": json.dumps(
            {k: v for k, v in value.items() if k not in ("rows", "fields")}
            | {"columns": {k: [row[at] for row in value["rows"]] for at, k in enumerate(names)}}
        ),
    }[spoil]
    assert spoiled != text
    put(key, spoiled)
    later = NOW + timedelta(days=2)
    app = an_incremental_run(build, later)
    # as the run left them, before any reader writes them again
    folded, recent = app.cache.get(show_key("BTC-USD", "1d")), app.cache.get(key)
    assert recent["rows"] == [] and recent["after"] == folded["newest"]
    assert_show_answers_what_is_stored(build, later)


def assert_an_incremental_run_refreshes(build, now):
    """An incremental run at `now` stores one new candle, and `show` answers what the
    database holds (see `assert_show_answers_what_is_stored`)."""
    an_incremental_run(build, now)
    assert_show_answers_what_is_stored(build, now)


def an_incremental_run(build, now):
    """A run at `now` that stores one new candle; the pair's `latest` value is that candle
    once it ends. Its app."""
    app = build()
    app.clock = lambda: now
    request = IngestRequest(symbols=["BTC-USD"], providers=["synthetic"], lookback_days=60)
    assert run_ingest(app, request).rows_inserted == 1
    with connect(app.engine(), app.target) as conn:
        newest = read_candles(conn, "BTC-USD", Interval.D1, last=1).ts[-1]
    assert app.cache.get(latest_key("BTC-USD", "1d"))["ts"] == int(newest)
    return app


def assert_show_answers_what_is_stored(build, now):
    """`show` at `now` answers what the database holds, from the cache at the latest on its
    second reading (the first may read the database: a value it cannot use)."""
    app = build()
    with connect(app.engine(), app.target) as conn:
        stored = read_candles(conn, "BTC-USD", Interval.D1, last=20, with_indicators=True)
    for _ in range(2):
        reader = build()
        reader.clock = lambda: now
        report = show(reader, "BTC-USD")
        np.testing.assert_array_equal(report.candles.ts, stored.ts)
        np.testing.assert_array_equal(report.candles.close, stored.close)
    assert report.source == "cache"


def test_an_unreadable_latest_value_leaves_the_show_value_to_outages(filled, caplog_warnings):
    build, put = filled
    put(latest_key("BTC-USD", "1d"), "{ not json")
    report = show(build(), "BTC-USD")
    assert report.source == "database"
    assert len([w for w in caplog_warnings if "reading the database instead" in w]) == 1


def test_show_on_an_unreadable_value_exits_0_from_the_database(tmp_path, redis_url):
    env = make_env(tmp_path) | {"REDIS_URL": redis_url, "CACHE_PREFIX": f"t:{uuid.uuid4().hex}:"}
    try:
        assert run([*INGEST, *WINDOW], env).returncode == 0
        client = redis.Redis.from_url(redis_url)
        client.set(env["CACHE_PREFIX"] + show_key("BTC-USD", "1d"), "<html>oops</html>")
        shown = run(["show", "BTC-USD", "--json"], env)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["source"] == "database"
        assert shown.stderr.count("is not JSON") == 1 and "Traceback" not in shown.stderr
    finally:
        run(["cache", "invalidate", "--yes", "*"], env)
