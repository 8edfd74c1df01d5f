"""`marketdata cache ...`, `rebuild-cache` and the cache's side of `show` as a user runs them."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.cli.helpers import one_error_line, run
from tests.cli.test_analytics_cli import INGEST, WINDOW, make_env
from tests.fakes.redis_server import spare_port


@pytest.fixture
def env(redis_url, tmp_path):
    """An embedded database with three symbols ingested, cached in the test Redis (the disk
    backend runs the same core in tests/cache; here the last test uses it)."""
    env = make_env(tmp_path)
    env["REDIS_URL"] = redis_url
    env["CACHE_PREFIX"] = f"test:{uuid.uuid4().hex[:8]}:"
    result = run([*INGEST, *WINDOW], env)
    assert result.returncode == 0, result.stderr
    yield env
    run(["cache", "invalidate", "--yes", "*"], env)


def json_of(args, env):
    result = run([*args, "--json"], env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_stats_rebuild_and_invalidate_report_what_they_did(env):
    stats = json_of(["cache", "stats"], env)
    assert stats["backend"] == "redis"
    assert stats["keys"] == {"latest": 3, "show": 3, "recent": 3, "roi": 3, "other": 0}
    assert list(stats) == [
        *("backend", "location", "keys", "hits", "misses", "fallbacks", "used_bytes"),
    ]
    rebuilt = json_of(["rebuild-cache", "--symbols", "AAPL,BTC-USD"], env)
    assert (rebuilt["pairs"], rebuilt["deleted"], rebuilt["written"]) == (2, 8, 8)
    dry = json_of(["cache", "invalidate", "market:AAPL:*", "--dry-run"], env)
    assert dry == {"dry_run": True, "deleted": {"market:AAPL:*": 4}}
    gone = json_of(["cache", "invalidate", "market:AAPL:*", "market:ETH-USD:roi"], env)
    assert gone["deleted"] == {"market:AAPL:*": 4, "market:ETH-USD:roi": 1}
    assert json_of(["cache", "stats"], env)["keys"] == {
        "latest": 2,
        "show": 2,
        "recent": 2,
        "roi": 1,
        "other": 0,
    }


def test_show_says_where_its_answer_came_from(env):
    assert json_of(["show", "ETH-USD"], env)["source"] == "cache"
    run(["cache", "invalidate", "--yes", "market:*"], env)
    first = json_of(["show", "ETH-USD"], env)
    assert (first["source"], first["cached_at"]) == ("database", None)
    again = json_of(["show", "ETH-USD"], env)
    assert again["source"] == "cache" and again["cached_at"].endswith("Z")
    assert again["candles"] == first["candles"] and again["roi"] == first["roi"]
    assert json_of(["compare", "BTC-USD", "ETH-USD"], env)["source"] == "database"
    run(["cache", "rebuild"], env)
    assert json_of(["compare", "BTC-USD", "ETH-USD"], env)["source"] == "cache"


def test_invalidating_everything_without_a_terminal_needs_yes(env):
    result = run(["cache", "invalidate", "market:*"], env)
    assert result.returncode == 2
    assert "--yes" in one_error_line(result)
    assert json_of(["cache", "stats"], env)["keys"]["latest"] == 3


def test_a_bad_pattern_is_one_line_and_exit_2(env):
    result = run(["cache", "rebuild", "--pattern", "market: *"], env)
    assert result.returncode == 2
    assert "pattern" in one_error_line(result)


def test_a_dead_redis_costs_one_warning_and_show_still_answers(tmp_path):
    env = make_env(tmp_path)
    env["REDIS_URL"] = f"redis://:hunter2-secret@127.0.0.1:{spare_port()}/0"
    result = run([*INGEST, *WINDOW], env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("Redis client error:") == 1
    assert "hunter2-secret" not in result.stderr
    shown = run(["show", "BTC-USD", "--json"], env)
    assert shown.returncode == 0, shown.stderr
    # the ingest filled the disk cache after Redis failed; show finds it there
    assert json.loads(shown.stdout)["source"] == "cache"
    assert shown.stderr.count("Redis client error:") == 1
