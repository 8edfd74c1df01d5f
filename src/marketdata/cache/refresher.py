"""Refreshing pairs' cache keys off the write path: a thread of its own, fed each pair once
its transaction committed, drained when the run ends.

Writing a pair's keys costs a read of its newest rows and ROI anchors and one Redis round
trip (~7 ms a pair); done inline after each commit it made an ingest with Redis 1.4-1.6x as
slow as one without a cache. Here the pair's thread hands the pair over and goes on to the
next; the refresher reads what the database holds when it gets to the pair (so the values
are the ones `cache rebuild` would write, and never precede the commit).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING

from loguru import logger

from marketdata.cache.keys import pair_keys
from marketdata.cache.market import Committed
from marketdata.domain import Interval

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from marketdata.cache.fallback import FallbackCache
    from marketdata.config import Settings

DRAIN_SECONDS = 30.0
"""How long the run's end waits for the pairs still queued (session timeouts bound a read)."""


class Refresher:
    """Writes committed pairs' keys on one background thread, in the order they committed.

    `submit` never waits; `drain` waits until every submitted pair is written (or, when the
    run was stopped, drops the keys of those not written yet, so that no reader trusts
    values older than the database).
    """

    def __init__(
        self,
        cache: FallbackCache,
        connect: Callable[[], AbstractContextManager[Connection]],
        settings: Settings,
    ) -> None:
        self._cache = cache
        self._connect = connect
        self._settings = settings
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Committed | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._abandon = threading.Event()

    def submit(self, symbol: str, interval: Interval, now: datetime) -> None:
        """Queue a pair whose transaction committed (starting the thread on first use)."""
        from marketdata.observability.logging import with_log_context

        with self._lock:
            if self._thread is None:
                self._abandon.clear()
                self._thread = threading.Thread(
                    target=with_log_context(self._work), name="cache-refresh", daemon=True
                )
                self._thread.start()
            self._queue.put(Committed(symbol, interval, now))

    def drain(self, *, abandon: bool = False) -> None:
        """Wait until every queued pair is written; with `abandon` (a stopped run) drop the
        keys of the pairs not written yet instead of reading them."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is None:
                return
            if abandon:
                self._abandon.set()
            self._queue.put(None)
        thread.join(DRAIN_SECONDS)
        if thread.is_alive():
            logger.warning(
                "the cache refresh did not finish within {:.0f} s; the keys of the last pairs "
                "may lag the database (`marketdata cache rebuild` rewrites them)",
                DRAIN_SECONDS,
            )

    def _work(self) -> None:
        while (first := self._queue.get()) is not None:
            pairs = [first]
            end = False
            while not end:  # what queued meanwhile shares one connection
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                end = more is None
                if more is not None:
                    pairs.append(more)
            self._write(pairs)
            if end:
                return

    def _write(self, pairs: list[Committed]) -> None:
        from marketdata.cache.market import refresh_committed
        from marketdata.errors import MarketdataError
        from marketdata.observability.logging import unbind_pair

        unbind_pair()  # records name the run, not the pair task that started this thread
        if self._abandon.is_set():
            self._drop(pairs)
            return
        try:
            with self._connect() as conn:
                if self._abandon.is_set():  # stopped while the connection was opening
                    self._drop(pairs)
                    return
                refresh_committed(self._cache, conn, self._settings, pairs)
        except MarketdataError as exc:  # no connection: the keys must not outlive the rows
            logger.warning(
                "cache not refreshed for {} pairs ({}); their keys were dropped",
                len(pairs),
                exc.one_line(),
            )
            self._drop(pairs)

    def _drop(self, pairs: list[Committed]) -> None:
        self._cache.set_many({}, drop=[k for p in pairs for k in pair_keys(p.symbol, p.interval)])
