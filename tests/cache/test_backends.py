"""One suite over both cache backends: a real diskcache directory and the test Redis."""

from __future__ import annotations

import time

import pytest

from marketdata.cache.base import DELETE_BATCH, escape_glob, glob_regex

pytestmark = pytest.mark.redis


def test_a_value_round_trips_as_json_and_a_missing_key_is_none(cache):
    value = {"close": 1.5, "ts": 1_700_000_000, "roi": {"1d": None}, "rows": [1, 2.25]}
    cache.set("market:BTC-USD:1d:latest", value)
    assert cache.get("market:BTC-USD:1d:latest") == value
    assert cache.get("market:NOPE:1d:latest") is None


def test_nan_is_stored_as_null_so_other_programs_can_read_it(cache):
    cache.set("market:X:1d:latest", {"sma_200": float("nan"), "vol": [float("inf"), 1.0]})
    assert cache.get("market:X:1d:latest") == {"sma_200": None, "vol": [None, 1.0]}


def test_numpy_columns_are_stored_as_their_values_strided_views_too(cache):
    import numpy as np

    grid = np.arange(12, dtype=np.float64).reshape(3, 4)
    grid[0, 1] = np.nan
    column = grid[:, 1]  # a view with a stride: orjson writes only contiguous arrays itself
    assert not column.flags.c_contiguous
    value = {"close": column, "ts": np.arange(3, dtype=np.int64), "newest": grid[2, 3]}
    cache.set_many({"market:X:1d:show": value})
    assert cache.get("market:X:1d:show") == {
        "close": [None, 5.0, 9.0],
        "ts": [0, 1, 2],
        "newest": 11.0,
    }
    with pytest.raises(TypeError, match="not JSON serializable"):
        cache.set("market:X:1d:latest", {"when": object()})


def test_a_value_expires_after_its_ttl(cache):
    cache.set("market:A:1d:latest", 1, ttl=0.2)
    cache.set("market:B:1d:latest", 2)
    assert cache.get("market:A:1d:latest") == 1
    time.sleep(0.35)
    assert cache.get("market:A:1d:latest") is None
    assert cache.get("market:B:1d:latest") == 2
    assert cache.count("market:*") == 1


def test_set_many_writes_and_drops_together_and_get_many_returns_only_present_keys(cache):
    cache.set("market:OLD:1d:show", "old")
    cache.set_many({"market:A:1d:latest": 1, "market:B:1d:latest": 2}, drop=["market:OLD:1d:show"])
    found = cache.get_many(["market:A:1d:latest", "market:OLD:1d:show", "market:B:1d:latest"])
    assert found == {"market:A:1d:latest": 1, "market:B:1d:latest": 2}
    assert cache.get_many([]) == {}


def test_set_many_sets_every_key_with_its_expiry_across_batches(cache):
    from marketdata.cache.redis_backend import SET_BATCH

    many = {f"market:S{i}:1d:latest": {"close": i} for i in range(SET_BATCH + 7)}
    cache.set_many(many, ttl=0.3)
    cache.set_many({"market:KEPT:1d:latest": 1})  # no expiry
    assert cache.get_many(list(many)) == many
    time.sleep(0.45)
    assert sorted(cache.scan("*")) == ["market:KEPT:1d:latest"]


def test_set_many_reloads_its_script_after_the_server_forgot_it(prefix, redis_url):
    import redis

    from marketdata.cache.redis_backend import RedisCache, redis_client

    cache = RedisCache(redis_client(redis_url), prefix, redis_url)
    cache.set_many({"market:A:1d:latest": 1})
    redis.Redis.from_url(redis_url).script_flush()  # as a restarted server does
    cache.set_many({"market:B:1d:latest": 2}, drop=["market:A:1d:latest"])
    assert cache.get_many(["market:A:1d:latest", "market:B:1d:latest"]) == {"market:B:1d:latest": 2}
    cache.delete_pattern("*")
    cache.close()


def test_pattern_delete_removes_exactly_the_matching_keys_in_batches(cache):
    many = {f"market:S{i}:1d:latest": i for i in range(DELETE_BATCH * 2 + 7)}
    cache.set_many(many)
    cache.set_many({"market:S1:1h:show": 0, "other:key": 0})
    assert cache.count("market:*:1d:latest") == len(many)
    assert cache.delete_pattern("market:*:1d:latest") == len(many)
    assert sorted(cache.scan("*")) == ["market:S1:1h:show", "other:key"]


def test_globs_match_as_redis_does(cache):
    keys = ["market:BTC-USD:1d:latest", "market:BTC-USD:1h:latest", "market:ETH-USD:roi", "m?x"]
    cache.set_many(dict.fromkeys(keys, 1))
    assert sorted(cache.scan("market:BTC-USD:1?:latest")) == keys[:2]
    assert sorted(cache.scan("market:[BE]T*:roi")) == ["market:ETH-USD:roi"]
    assert sorted(cache.scan("market:[^B]*")) == ["market:ETH-USD:roi"]
    assert sorted(cache.scan("m\\?x")) == ["m?x"]
    # the disk backend's matcher agrees with Redis on these
    assert glob_regex("market:[^B]*").match("market:ETH-USD:roi")
    assert not glob_regex("m\\?x").match("mAx")


def test_patterns_never_reach_outside_the_prefix(make_cache, prefix):
    ours = make_cache(prefix)
    # a neighbour whose prefix the glob characters of ours would match if not escaped
    neighbour = make_cache(prefix.replace("[x]*", "x-anything"))
    ours.set("market:A:1d:latest", 1)
    neighbour.set("market:A:1d:latest", 2)
    neighbour.set("market:B:1d:latest", 3)
    assert ours.count("*") == 1
    assert ours.delete_pattern("*") == 1
    assert neighbour.count("*") == 2
    assert neighbour.get("market:A:1d:latest") == 2


def test_counters_add_up_and_read_zero_when_missing(cache):
    assert cache.counter("stats:hits") == 0
    cache.incr("stats:hits")
    cache.incr("stats:hits", 4)
    assert cache.counter("stats:hits") == 5


def test_space_in_use_is_reported(cache):
    cache.set("market:A:1d:show", {"columns": list(range(1000))})
    used = cache.used_bytes()
    assert used is not None and used > 0


def test_escape_glob_matches_its_text_literally():
    text = "a*b?[c]\\d:"
    assert glob_regex(escape_glob(text)).match(text)
    assert not glob_regex(escape_glob(text)).match("aXb?[c]\\d:")


def test_a_redis_client_names_itself_without_reading_package_metadata(redis_url, monkeypatch):
    """CLIENT SETINFO's name and version come given: left to itself, redis-py parses its
    package's metadata for every connection it opens (~1 ms of a run's CPU each)."""
    import importlib.metadata

    import redis

    from marketdata import __version__
    from marketdata.cache.redis_backend import redis_client

    def read(name: str) -> str:
        raise AssertionError(f"package metadata of {name} read")

    monkeypatch.setattr(importlib.metadata, "version", read)
    client = redis_client(redis_url)
    try:
        assert client.ping()
        info = client.connection_pool.connection_kwargs["driver_info"]
        assert info.lib_version == redis.__version__
        assert info.formatted_name == f"redis-py(marketdata_v{__version__})"
    finally:
        client.close()


def test_a_redis_client_sends_large_values_as_they_are_and_framed_as_hiredis_frames_them(
    redis_url,
):
    """A command carrying a `show`-sized value (a memoryview, as the cache passes one) is
    framed around it, the value not copied (hiredis copied each twice), into the same bytes
    hiredis's packing gives; Redis stores what was sent; other commands are packed by
    hiredis, those of two words and arguments it does not pack as redis-py packs them."""
    import hiredis
    from redis.exceptions import DataError

    from marketdata.cache.redis_backend import LARGE, redis_client

    client = redis_client(redis_url)
    key = "marketdata-test:large"
    try:
        packer = client.connection_pool.get_connection()._command_packer
        large = b'{"close":[' + b"1.25," * LARGE + b"2.5]}"
        view = memoryview(large)
        args = ("EVALSHA", "0" * 40, 2, "k1", "k2", 604800000, view, b"{}")
        chunks = packer.pack(*args)
        assert any(chunk is view for chunk in chunks)
        assert b"".join(chunks) == hiredis.pack_command((*args[:6], large, b"{}"))
        small = ("SET", key, b"{}", "PX", 1000)
        assert packer.pack(*small) == [hiredis.pack_command(small)]
        assert packer.pack("SCRIPT EXISTS", "0" * 40) == [
            hiredis.pack_command(("SCRIPT", "EXISTS", "0" * 40))
        ]
        with pytest.raises(DataError):
            packer.pack("SET", key, True)
        client.set(key, view)
        assert client.get(key) == large
    finally:
        client.delete(key)
        client.close()
