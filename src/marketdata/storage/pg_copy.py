"""PostgreSQL bulk writes: binary COPY encoded with numpy, and the guarded overlap merge.

A batch's symbol, interval and provider are the same on every row, so each COPY row has a
fixed size and the whole binary stream is one numpy structured array: no per-row Python.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

from marketdata.domain import Candles, epoch_of

if TYPE_CHECKING:
    from sqlalchemy import Connection

COLUMNS = "symbol, interval, ts, open, high, low, close, volume, provider, ingested_at"
_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
_TRAILER = (-1).to_bytes(2, "big", signed=True)
_PG_EPOCH = 946_684_800  # 2000-01-01T00:00:00Z, where PostgreSQL timestamps count from
_STAGE = "candles_stage"


def encode_binary_copy(batch: Candles, now: datetime) -> bytes:
    """The batch as a complete COPY ... (FORMAT BINARY) stream for the candles columns."""
    symbol = batch.symbol.encode()
    interval = batch.interval.value.encode()
    provider = batch.provider.encode()
    fields: list[tuple[str, str]] = [("n", ">i2")]
    for name, width in (("symbol", len(symbol)), ("interval", len(interval))):
        fields += [(f"{name}_len", ">i4"), (name, f"S{width}")]
    fields += [("ts_len", ">i4"), ("ts", ">i8")]
    for name in ("open", "high", "low", "close", "volume"):
        fields += [(f"{name}_len", ">i4"), (name, ">f8")]
    fields += [("provider_len", ">i4"), ("provider", f"S{len(provider)}")]
    fields += [("ingested_len", ">i4"), ("ingested", ">i8")]
    rows = np.empty(len(batch), dtype=np.dtype(fields))
    rows["n"] = 10
    rows["symbol_len"], rows["symbol"] = len(symbol), symbol
    rows["interval_len"], rows["interval"] = len(interval), interval
    rows["ts_len"], rows["ts"] = 8, (batch.ts - _PG_EPOCH) * 1_000_000
    for name in ("open", "high", "low", "close", "volume"):
        rows[f"{name}_len"], rows[name] = 8, getattr(batch, name)
    rows["provider_len"], rows["provider"] = len(provider), provider
    rows["ingested_len"] = 8
    rows["ingested"] = (epoch_of(now) - _PG_EPOCH) * 1_000_000 + now.microsecond
    return _HEADER + rows.tobytes() + _TRAILER


def _copy(conn: Connection, table: str, batch: Candles, now: datetime) -> None:
    raw = conn.connection.driver_connection
    assert raw is not None
    with (
        raw.cursor() as cur,
        cur.copy(f"COPY {table} ({COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy,
    ):
        copy.write(encode_binary_copy(batch, now))


def copy_insert(conn: Connection, batch: Candles, now: datetime) -> int:
    """COPY rows that are known to be new (newer than the pair's newest stored candle)."""
    if len(batch):
        _copy(conn, "candles", batch, now)
    return len(batch)


def merge_overlap(conn: Connection, overlap: Candles, now: datetime) -> tuple[int, int]:
    """Stage the overlap, update only rows whose values differ, insert the missing ones.

    Safe against concurrent writers only under the pair's advisory lock (which the pipeline
    holds): PostgreSQL 15's MERGE/UPDATE+INSERT races on the same keys without it.
    """
    from sqlalchemy import text

    conn.execute(
        text(
            f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} "
            "(LIKE candles INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
    )
    _copy(conn, _STAGE, overlap, now)
    updated = conn.execute(
        text(
            f"UPDATE candles AS c SET open = s.open, high = s.high, low = s.low, "
            f"close = s.close, volume = s.volume, provider = s.provider, "
            f"ingested_at = s.ingested_at FROM {_STAGE} AS s "
            "WHERE c.symbol = s.symbol AND c.interval = s.interval AND c.ts = s.ts "
            "AND (c.open, c.high, c.low, c.close, c.volume) "
            "IS DISTINCT FROM (s.open, s.high, s.low, s.close, s.volume)"
        )
    ).rowcount
    inserted = conn.execute(
        text(
            f"INSERT INTO candles ({COLUMNS}) SELECT {COLUMNS} FROM {_STAGE} AS s "
            "WHERE NOT EXISTS (SELECT 1 FROM candles AS c WHERE c.symbol = s.symbol "
            "AND c.interval = s.interval AND c.ts = s.ts)"
        )
    ).rowcount
    return inserted, updated
