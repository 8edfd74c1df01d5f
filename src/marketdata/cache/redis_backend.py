"""The Redis cache backend, and the one function that builds a Redis client for the tool."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from marketdata import __version__
from marketdata.cache.base import DELETE_BATCH, decode_stored, encode_bytes, escape_glob

# A dead Redis must cost well under a second per run in all: the first failing call decides
# (connection refused is immediate; a black hole costs one connect timeout) and the run
# carries on without Redis. redis-py's default retries would wait seconds per call.
CONNECT_TIMEOUT = 0.3
SOCKET_TIMEOUT = 0.5
SCAN_COUNT = 1000
SET_BATCH = 1000
"""Keys one SET_MANY script sets: the script holds the server while it runs (~1 us a key)."""
SET_MANY = """
for i, key in ipairs(KEYS) do
  if ARGV[1] == '' then
    redis.call('SET', key, ARGV[i + 1])
  else
    redis.call('SET', key, ARGV[i + 1], 'PX', ARGV[1])
  end
end
return #KEYS
"""
"""SETs of many keys with one expiry in one command. A pipeline of SETs cost redis-py ~12 us
of Python a key to build (~600 keys after an incremental run of 200 pairs: a tenth of the
run's whole cache cost); one script command is built by hiredis in C."""


def redis_client(url: str) -> redis.Redis[bytes]:
    """A client for REDIS_URL with short timeouts and no retries (see CONNECT_TIMEOUT)."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=SOCKET_TIMEOUT,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
        health_check_interval=0,
        **_client_info(),
        **_packer(),
    )


def _client_info() -> dict[str, Any]:
    """What a connection tells the server about its client (CLIENT SETINFO: `CLIENT LIST`
    shows it), given: left to itself, redis-py reads its own version from its package's
    metadata (an email-format parse, ~1 ms of CPU) for every connection it opens, and a run
    (a new process) opens its own."""
    try:
        from redis.driver_info import DriverInfo
    except ImportError:  # redis-py before DriverInfo (7.1)
        return {"lib_version": redis.__version__}
    info = DriverInfo(lib_version=redis.__version__)
    return {"driver_info": info.add_upstream_driver("marketdata", __version__)}


LARGE = 6000
"""Bytes from which a value is sent as it is, not copied into the command's buffer: `set`
and `set_many` pass such values as memoryviews (redis-py's own mark for them)."""


class _Packer:
    """Frames commands in C by hiredis, without redis-py's pass over every argument in
    Python (two generator steps an argument: ~600 keys and values after an incremental run
    of 200 pairs), except a command that carries a large value (a `show` value is ~14 KB),
    framed by redis-py around its values without copying them: hiredis copied each value
    twice on its way (into its buffer, then into a bytes object), ~10% of the cache work of
    a first ingest."""

    def __init__(self, small: Any, large: Any, pack_command: Callable[[Any], bytes]) -> None:
        self._small, self._large, self._pack_command = small, large, pack_command

    def pack(self, *args: Any) -> list[bytes]:
        """The command's bytes, as chunks to send one after the other."""
        chunks: list[bytes]
        if memoryview in set(map(type, args)):
            chunks = self._large.pack(*args)
            return chunks
        name = args[0]
        if type(name) is str and " " not in name:  # else a command of two words, split
            try:
                return [self._pack_command(args)]
            except TypeError:  # a type hiredis does not pack: redis-py says what is wrong
                pass
        chunks = self._small.pack(*args)
        return chunks


def _packer() -> dict[str, Any]:
    """The client's command packer (see _Packer), given where redis-py allows it."""
    from redis import connection, utils

    # by name: the type stubs predate the packers (redis-py 4.6), and a later redis-py may
    # pack its own way
    small = getattr(connection, "HiredisRespSerializer", None)
    large = getattr(connection, "PythonRespSerializer", None)
    if small is None or large is None or not getattr(utils, "HIREDIS_AVAILABLE", False):
        return {}
    import hiredis

    encoder = connection.Encoder("utf-8", "strict", decode_responses=False)
    packer = _Packer(small(), large(LARGE, encoder.encode), hiredis.pack_command)
    return {"command_packer": packer}


class RedisCache:
    """Values as JSON strings under `prefix + key`; pattern deletes by SCAN and UNLINK."""

    name = "redis"
    errors: tuple[type[BaseException], ...] = (RedisError, OSError)

    def __init__(self, client: redis.Redis[bytes], prefix: str, location: str) -> None:
        self._client = client
        self._prefix = prefix
        self.location = location
        self._set_many = client.register_script(SET_MANY)

    def get(self, key: str) -> Any | None:
        """The decoded value (Unreadable when not JSON), or None."""
        raw = self._client.get(self._prefix + key)
        return None if raw is None else decode_stored(raw)

    def get_many(self, keys: Sequence[str], *, raw: bool = False) -> dict[str, Any]:
        """Present keys with their values (bytes when `raw`), by one MGET."""
        if not keys:
            return {}
        found = self._client.mget([self._prefix + k for k in keys])
        pairs = [(k, v) for k, v in zip(keys, found, strict=True) if v is not None]
        return dict(pairs) if raw else {k: decode_stored(v) for k, v in pairs}

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """SET with an expiry in milliseconds."""
        # a memoryview (a large value) is what redis-py sends as it is; the stubs predate it
        raw: Any = _framed(encode_bytes(value))
        self._client.set(self._prefix + key, raw, px=_ms(ttl))

    def set_many(
        self, values: Mapping[str, Any], ttl: float | None = None, *, drop: Iterable[str] = ()
    ) -> None:
        """SETs (by SET_MANY, SET_BATCH keys a command) and UNLINKs in one pipelined round
        trip (and one more to check that the script is loaded).

        Without MULTI/EXEC (a tenth of an ingest's cache cost): a reader that meets some of
        the new values and some of the old never trusts the old ones, because a `show`
        value counts only when it reaches its pair's `latest` candle.
        """
        pipe = self._client.pipeline(transaction=False)
        expiry = "" if (ms := _ms(ttl)) is None else ms
        encoded = [(self._prefix + key, encode_bytes(value)) for key, value in values.items()]
        # values of LARGE bytes or more apart: a command carrying one is framed in Python
        # (see _Packer), so the small ones are framed by hiredis, in C, in commands of their own
        small = [item for item in encoded if len(item[1]) < LARGE]
        large = [(key, memoryview(raw)) for key, raw in encoded if len(raw) >= LARGE]
        for items in (small, large):
            for at in range(0, len(items), SET_BATCH):
                keys, raws = zip(*items[at : at + SET_BATCH], strict=True)
                self._set_many(keys=keys, args=[expiry, *raws], client=pipe)
        dropped = [self._prefix + k for k in drop]
        if dropped:
            pipe.unlink(*dropped)
        pipe.execute()

    def scan(self, pattern: str) -> Iterator[str]:
        """SCAN MATCH under the prefix (the prefix is matched literally)."""
        cut = len(self._prefix)
        match = escape_glob(self._prefix) + pattern
        for raw in self._client.scan_iter(match=match, count=SCAN_COUNT):
            yield raw.decode()[cut:]

    def delete_pattern(self, pattern: str) -> int:
        """UNLINK the matching keys, DELETE_BATCH at a time."""
        deleted = 0
        batch: list[str] = []
        for key in self.scan(pattern):
            batch.append(self._prefix + key)
            if len(batch) >= DELETE_BATCH:
                deleted += int(self._client.unlink(*batch))
                batch = []
        if batch:
            deleted += int(self._client.unlink(*batch))
        return deleted

    def count(self, pattern: str = "*") -> int:
        """How many keys match (by SCAN)."""
        return sum(1 for _ in self.scan(pattern))

    def incr(self, key: str, amount: int = 1) -> None:
        """INCRBY."""
        self._client.incrby(self._prefix + key, amount)

    def counter(self, key: str) -> int:
        """An INCRBY counter's value."""
        raw = self._client.get(self._prefix + key)
        return 0 if raw is None else int(raw)

    def used_bytes(self) -> int | None:
        """INFO memory's used_memory (the whole server: Redis does not count per prefix)."""
        info = self._client.info("memory")
        return int(info["used_memory"])

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()


def _framed(raw: bytes) -> bytes | memoryview:
    """A value as `_Packer` frames it: as it is when LARGE or more (a memoryview)."""
    return memoryview(raw) if len(raw) >= LARGE else raw


def _ms(ttl: float | None) -> int | None:
    return None if ttl is None else max(1, round(ttl * 1000))
