"""Cache fixtures: each backend for real (a diskcache directory, the test Redis)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from marketdata.cache.base import Cache


@pytest.fixture(params=["disk", "redis"])
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def prefix() -> str:
    """A CACHE_PREFIX of this test's own (with glob characters, which must match literally)."""
    return f"test:{uuid.uuid4().hex[:8]}:[x]*:"


@pytest.fixture
def make_cache(backend_name, tmp_path, request) -> Iterator:
    """Build caches of the parametrised backend with a given prefix; emptied and closed after."""
    built: list[tuple[Cache, str]] = []

    def build(prefix: str) -> Cache:
        if backend_name == "disk":
            from marketdata.cache.disk import DiskCache

            cache: Cache = DiskCache(tmp_path / "cache", prefix)
        else:
            from marketdata.cache.redis_backend import RedisCache, redis_client

            url = request.getfixturevalue("redis_url")
            cache = RedisCache(redis_client(url), prefix, url)
        built.append((cache, prefix))
        return cache

    yield build
    for cache, _ in built:
        cache.delete_pattern("*")
        cache.close()


@pytest.fixture
def cache(make_cache, prefix) -> Cache:
    return make_cache(prefix)


@pytest.fixture
def caplog_warnings():
    """Every WARNING-or-worse message logged during the test."""
    from loguru import logger

    seen: list[str] = []

    def keep(message: str) -> None:
        # the embedded database's one line when a test's new SQLite file is set up is not
        # the cache's business
        if not message.startswith(("created the database", "upgraded the database")):
            seen.append(message)

    handler = logger.add(lambda m: keep(m.record["message"]), level="WARNING")
    yield seen
    logger.remove(handler)
