"""A run's garbage collections leave out the objects alive at its start, and only during it."""

from __future__ import annotations

import gc
import weakref

from marketdata.domain import RunStatus
from marketdata.gc_frozen import frozen
from marketdata.pipeline import IngestRequest, run_ingest


class _Cycle:
    """An object in a reference cycle: only a collection frees it."""

    def __init__(self) -> None:
        self.me = self


class _Watch:
    """A run's progress that notes the frozen objects and drops the cycle handed to it."""

    def __init__(self, cycle: _Cycle) -> None:
        self.cycle: _Cycle | None = cycle
        self.frozen: list[int] = []

    def started(self, pairs: int) -> None:
        self.frozen.append(gc.get_freeze_count())
        self.cycle = None  # garbage from now on, but frozen with what the run found alive

    def pair_done(self, outcome: object) -> None:
        self.frozen.append(gc.get_freeze_count())


def test_a_run_freezes_what_is_alive_at_its_start_and_thaws_it_at_its_end(app_factory):
    app = app_factory()
    cycle = _Cycle()
    gone = weakref.ref(cycle)
    watch = _Watch(cycle)
    del cycle
    assert gc.get_freeze_count() == 0
    request = IngestRequest(symbols=["BTC-USD", "ETH-USD"], providers=["synthetic"])
    result = run_ingest(app, request, watch)
    assert result.status is RunStatus.SUCCESS
    assert len(watch.frozen) == 3 and min(watch.frozen) > 10_000  # the imports' objects
    assert gone() is not None  # frozen: no collection during the run could free it
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert gone() is None  # thawed: collected as any garbage


def test_overlapping_blocks_keep_the_first_ones_freeze_until_the_last_ends():
    with frozen():
        first = gc.get_freeze_count()
        assert first > 0
        with frozen():
            _Cycle()  # tracked after the freeze: a second freeze would take it in
            assert gc.get_freeze_count() == first
        assert gc.get_freeze_count() == first
    assert gc.get_freeze_count() == 0
