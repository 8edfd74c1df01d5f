"""The cancel event a stop signal sets, and the waits that watch it.

A signal handler must not raise into whatever the main thread is doing (it could be the
code that records the run): while a run watches the event, SIGTERM and SIGINT only set it,
and every wait of the run (rate limiter, retry backoff, a provider's pause, the main thread
waiting for pairs) returns early and raises RunInterruptedError within a fraction of a
second. Outside a watched run a signal interrupts as usual.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from marketdata.errors import RunInterruptedError


class Cancel:
    """One command's stop request: set once by a signal (or a test), seen by every wait."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._watchers = 0
        self._lock = threading.Lock()
        self.signum: int | None = None

    def set(self, signum: int = signal.SIGTERM) -> None:
        """Ask everything waiting to stop (safe in a signal handler: no lock, no I/O)."""
        if self.signum is None:
            self.signum = signum
        self._event.set()

    def is_set(self) -> bool:
        """True once a stop was asked for."""
        return self._event.is_set()

    def check(self) -> None:
        """Raise RunInterruptedError when a stop was asked for."""
        if self._event.is_set():
            raise RunInterruptedError(self.signum or signal.SIGTERM)

    def sleep(self, seconds: float) -> None:
        """Wait `seconds`, or raise RunInterruptedError as soon as a stop is asked for."""
        if self._event.wait(max(seconds, 0.0)):
            raise RunInterruptedError(self.signum or signal.SIGTERM)

    def wait(self, seconds: float) -> bool:
        """Wait up to `seconds` for a stop; True when one was asked for."""
        return self._event.wait(max(seconds, 0.0))

    @property
    def watched(self) -> bool:
        """True while some run is watching this event (the signal handler then only sets
        it); False when nobody would notice, and the handler must interrupt instead."""
        return self._watchers > 0

    @contextmanager
    def watching(self) -> Iterator[Cancel]:
        """Mark the block as watching this event (a run, from start to recorded end)."""
        with self._lock:
            self._watchers += 1
        try:
            yield self
        finally:
            with self._lock:
                self._watchers -= 1
