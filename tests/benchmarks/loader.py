"""The documented bulk loader of the scale benchmarks: synthetic one-minute candles written
through the tool's own write path (derive.PairWriter -> storage.write_candles -> pg_copy's
binary COPY), in chunks, after the partitions they need are made as an ingest makes them."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime

from marketdata.config import load_settings
from marketdata.derive import PairWriter
from marketdata.domain import Candles, Interval, Window
from marketdata.providers.base import ProviderContext
from marketdata.providers.synthetic import SyntheticProvider
from marketdata.storage import partitions
from marketdata.storage.engine import create_engine, resolve_target

MINUTE = 60
CHUNK_BARS = 50_000  # bars per write: about five weeks of one symbol


class Loader:
    """Writes synthetic 1m candles of some symbols into one database, chunk by chunk."""

    def __init__(self, url: str, *, derive: bool = True) -> None:
        settings = load_settings(
            {"database_url": url, "analytics_intervals": "1m"}, environ={}
        ).settings
        self.engine = create_engine(settings, resolve_target(settings))
        self.derive = derive
        self._ctx = ProviderContext(settings)
        self.provider = SyntheticProvider(self._ctx)

    def close(self) -> None:
        """Release the connections and the provider context."""
        self.engine.dispose()
        self._ctx.close()

    def bars(self, symbol: str, start: int, end: int) -> Candles:
        """The synthetic provider's 1m candles of `symbol` in [start, end)."""
        return self.provider.fetch(symbol, Interval.M1, Window(start, end))

    def load(self, symbols: Sequence[str], start: int, end: int) -> tuple[int, float]:
        """Write [start, end) of every symbol; (rows written, seconds)."""
        started = time.perf_counter()
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            partitions.prepare_windows(conn, [(Interval.M1, start, end)], int(time.time()))
        rows = 0
        for symbol in symbols:
            for first in range(start, end, CHUNK_BARS * MINUTE):
                batch = self.bars(symbol, first, min(first + CHUNK_BARS * MINUTE, end))
                with self.engine.begin() as conn:
                    writer = PairWriter(conn, now, derive=self.derive)
                    rows += writer.write(batch).inserted
                    writer.finish()
        return rows, time.perf_counter() - started

    def write_next(self, symbol: str, start: int, *, keep: bool = False) -> float:
        """Seconds to write the one candle at `start` with its indicator tail (the work an
        incremental run does per pair after a new bar); rolled back unless `keep`."""
        batch = self.bars(symbol, start, start + MINUTE)
        with self.engine.connect() as conn:
            transaction = conn.begin()
            started = time.perf_counter()
            writer = PairWriter(conn, datetime.now(UTC), derive=self.derive)
            writer.write(batch)
            writer.finish()
            seconds = time.perf_counter() - started
            if keep:
                transaction.commit()
            else:
                transaction.rollback()
        return seconds
