"""Garbage collection during a run: the objects alive when it starts are left out.

A run's objects that outlive a young collection (a batch of candles, a group of cache values
waiting for their round trip) pile up until the collector makes a full collection, and a full
collection walks every tracked object in the process: the modules, classes and functions of
every import, hundreds of thousands of them, all alive until the process ends. Counted under
callgrind, a first ingest of 200 pairs with Redis as the cache spent ~40 million instructions
more than one without in such collections, a fifth of all the cache added. `gc.freeze` moves
every object tracked at the start into a generation no collection walks; `gc.unfreeze` at the
end hands them back, so a cycle among them that became garbage meanwhile is still collected
(a worker runs many runs in one process).
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_runs = 0  # runs of this process inside `frozen` (a worker's may overlap)


@contextlib.contextmanager
def frozen() -> Iterator[None]:
    """Collections inside the block skip the objects alive when the first of overlapping
    blocks began; when the last ends they are collected as before."""
    global _runs
    with _lock:
        _runs += 1
        if _runs == 1:
            gc.freeze()
    try:
        yield
    finally:
        with _lock:
            _runs -= 1
            if _runs == 0:
                gc.unfreeze()
