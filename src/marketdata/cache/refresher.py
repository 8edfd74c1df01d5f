"""Refreshing pairs' cache keys off the write path: a thread of its own, fed each pair once
its transaction committed, drained when the run ends.

Writing a pair's keys costs a read of its newest rows and ROI anchors and a Redis round
trip; done inline after each commit it made an ingest with Redis 1.4-1.6x as slow as one
without a cache. Here the pair's thread hands the pair over and goes on to the next; the
refresher takes every pair queued meanwhile as one group and reads what the database holds
when it gets to them (so the values are the ones `cache rebuild` would write, and never
precede the commit): a few statements and one round trip for the whole group
(`market.refresh_committed`), where it was 2-3 statements and a round trip per pair. Pairs
whose whole history the commit wrote come with those rows, and are written without a read
(`market.write_in_hand`)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from loguru import logger

from marketdata.cache.keys import pair_keys
from marketdata.cache.market import Committed

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from marketdata.cache.fallback import FallbackCache
    from marketdata.config import Settings

GATHER_SECONDS = 2.0
"""How long the refresher waits for more committed pairs to refresh with the first: a group
costs a few statements (its ROI anchors: one, ~1.5 ms of this process's CPU) and a round trip
whatever its size, so writing pairs one by one as they commit (an incremental run commits
one every ~12 ms) costs the run's threads the CPU of ~200 refreshes, gathering them for 2 s
(or GATHER_PAIRS) that of ~4 (for 0.5 s, ~6 for 200 pairs). The run's end does not wait for
the window: it ends the gathering, and waits only for the last group's reads and writes."""
GATHER_PAIRS = 50
"""At most this many pairs a group: the run's end waits for its last group's reads and writes
(~1 ms a pair after a first ingest), so a group of 2 s of commits (~150 pairs) added ~4% to
an ingest of 200 pairs, where groups of 50 cost a few statements more."""
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
        self._ready = threading.Event()  # a group is full, or the run ended
        self._ending = threading.Event()  # the run ended: no more waiting for pairs

    def submit(self, pair: Committed) -> None:
        """Queue a pair whose transaction committed (starting the thread on first use)."""
        from marketdata.observability.logging import with_log_context

        with self._lock:
            if self._thread is None:
                self._abandon.clear()
                self._ending.clear()
                self._thread = threading.Thread(
                    target=with_log_context(self._work), name="cache-refresh", daemon=True
                )
                self._thread.start()
            self._queue.put(pair)
            if self._queue.qsize() >= GATHER_PAIRS:
                self._ready.set()

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
            self._ending.set()
            self._ready.set()
        thread.join(DRAIN_SECONDS)
        if thread.is_alive():
            logger.warning(
                "the cache refresh did not finish within {:.0f} s; the keys of the last pairs "
                "may lag the database (`marketdata cache rebuild` rewrites them)",
                DRAIN_SECONDS,
            )

    def _work(self) -> None:
        while (first := self._queue.get()) is not None:
            pairs, end = self._gather(first)
            self._write(pairs)
            if end:
                return

    def _gather(self, first: Committed) -> tuple[list[Committed], bool]:
        """`first` and the pairs that commit within GATHER_SECONDS of it (up to GATHER_PAIRS),
        as one group; True when the run's end came with them.

        The thread sleeps through the window, woken early only by a full group or the run's
        end: waiting on the queue itself woke it at every commit (~10 ms of CPU a run of
        200 pairs)."""
        if self._queue.qsize() < GATHER_PAIRS - 1 and not self._ending.is_set():
            self._ready.wait(GATHER_SECONDS)
        self._ready.clear()
        pairs = [first]
        while len(pairs) < GATHER_PAIRS:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                break
            if more is None:
                return pairs, True
            pairs.append(more)
        return pairs, False

    def _write(self, pairs: list[Committed]) -> None:
        from marketdata.cache.market import refresh_committed, write_in_hand
        from marketdata.errors import MarketdataError
        from marketdata.observability.logging import unbind_pair

        unbind_pair()  # records name the run, not the pair task that started this thread
        if self._abandon.is_set():
            self._drop(pairs)
            return
        # whole histories: no read, no connection
        pairs = write_in_hand(self._cache, self._settings, pairs)
        if not pairs:
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
