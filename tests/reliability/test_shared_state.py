"""State that every worker thread of a run shares (issue 10 item 12): the provider circuit
breaker's count and Binance's request-weight budget, hammered by many threads at once.

CPython switches threads only at a few instructions, so a bare `count += 1` almost never
loses an update in a plain test, lock or no lock. To make the test able to fail, the threads
run under an opcode tracer on the modules under test: the interpreter may then switch threads
between any two bytecodes there (between reading a count and writing it back), and does so
often with a tiny switch interval. Without the locks these tests lose updates.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import pytest

from marketdata import context
from marketdata.config import load_settings
from marketdata.context import AppContext
from marketdata.errors import ProviderUnavailableError
from marketdata.providers import base, binance
from marketdata.providers.base import BREAKER_THRESHOLD, CircuitBreaker, HttpProvider
from marketdata.providers.binance import KLINES_WEIGHT, WEIGHT_PAUSE_AT, WeightBudget
from marketdata.providers.coinbase import CoinbaseProvider
from tests.fakes.server import Reply, serve

THREADS = 8
WATCHED = {base.__file__, binance.__file__, context.__file__}


def _tracer(frame: FrameType, event: str, arg: Any) -> Callable[..., Any] | None:
    if frame.f_code.co_filename not in WATCHED:
        return None
    frame.f_trace_opcodes = True  # an event, and so a chance to switch, at every bytecode
    return _tracer


@contextmanager
def interleaved() -> Iterator[None]:
    """Threads started inside switch as often as the interpreter allows, inside WATCHED."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    threading.settrace(_tracer)
    try:
        yield
    finally:
        threading.settrace(None)  # type: ignore[arg-type]
        sys.setswitchinterval(interval)


def hammer(work: Callable[[int], None], threads: int = THREADS) -> None:
    """Run work(i) on `threads` threads at once, interleaved; re-raise the first error."""
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def run(i: int) -> None:
        start.wait()
        try:
            work(i)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread below
            errors.append(exc)

    with interleaved():
        pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in pool)
    if errors:
        raise errors[0]


def test_the_breaker_counts_every_failure_of_many_threads_exactly():
    breaker = CircuitBreaker(threshold=10**9)
    each = 5_000

    def fail(_: int) -> None:
        for _ in range(each):
            breaker.failure()

    hammer(fail)
    assert breaker.failed_in_a_row == THREADS * each


def test_threads_failing_through_a_provider_are_each_counted_and_then_given_up(provider_context):
    with serve(lambda request: Reply(500, "down")) as server:
        ctx = provider_context(coinbase_base_url=server.url, http_retry_attempts=1)
        provider: HttpProvider = CoinbaseProvider(ctx)
        refused: list[int] = []
        gets = 6

        def work(_: int) -> None:
            for _ in range(gets):
                with pytest.raises(ProviderUnavailableError) as caught:
                    provider.get("/products/BTC-USD/candles", symbol="BTC-USD")
                if "given up" in caught.value.message:
                    refused.append(1)

        hammer(work)
    went_out = THREADS * gets - len(refused)
    # every get that went out failed (after its retries) and was counted once; the others
    # were refused without a request once the breaker had opened
    assert provider.breaker.failed_in_a_row == went_out
    assert BREAKER_THRESHOLD <= went_out < THREADS * gets
    assert len(server.requests) >= went_out


def test_binances_weight_budget_grants_exactly_what_fits_in_the_minute_across_threads():
    # several frozen minutes, each filled by every thread at once: more chances to race
    budgets = [WeightBudget(lambda: 1_704_067_230.0) for _ in range(8)]
    each = 400  # 8 threads x 400 requests of weight 2 = 6,400 > the 5,400 a minute may spend
    granted = [[0] * len(budgets) for _ in range(THREADS)]
    paused: list[set[float]] = [set() for _ in range(THREADS)]

    def work(i: int) -> None:
        for b, budget in enumerate(budgets):
            for n in range(each):
                if n % 7 == 0:
                    budget.note(n)  # a late reply's lower figure must not lower the count
                pause = budget.reserve(KLINES_WEIGHT)
                if pause is None:
                    granted[i][b] += 1
                else:
                    paused[i].add(pause[0])

    hammer(work)
    fits = WEIGHT_PAUSE_AT // KLINES_WEIGHT
    assert [sum(g[b] for g in granted) for b in range(len(budgets))] == [fits] * len(budgets)
    assert [budget.used for budget in budgets] == [WEIGHT_PAUSE_AT] * len(budgets)
    assert set().union(*paused) == {31.0}  # 30 s left in the minute, plus one for clock skew


def test_threads_paused_together_start_the_next_minute_once_and_count_every_request():
    budget = WeightBudget(lambda: 1_704_067_230.0)
    budget.note(WEIGHT_PAUSE_AT)  # the minute is spent
    pauses = [budget.reserve(KLINES_WEIGHT) for _ in range(THREADS)]
    assert all(p is not None for p in pauses)
    generation = budget.generation

    def wake(i: int) -> None:
        pause = pauses[i]
        assert pause is not None
        budget.after_pause(pause[1], KLINES_WEIGHT)
        for _ in range(100):
            assert budget.reserve(KLINES_WEIGHT) is None

    hammer(wake)
    # one fresh start (not one per waking thread, which would forget the others' requests)
    assert budget.generation == generation + 1
    assert budget.used == THREADS * 101 * KLINES_WEIGHT


def test_binance_pauses_each_thread_past_the_spent_minute_through_the_runs_wait(provider_context):
    ctx = provider_context(binance_base_url="http://127.0.0.1:9")
    waits: list[float] = []
    ctx.sleep = waits.append
    provider = binance.BinanceProvider(ctx)
    provider.clock = lambda: 1_704_067_230.0
    provider.weight.note(WEIGHT_PAUSE_AT - KLINES_WEIGHT * THREADS)

    def mind(_: int) -> None:
        for _ in range(3):
            provider._mind_weight()

    hammer(mind)
    # THREADS requests fitted in the minute; at least one found it spent and paused through
    # the run's wait, then the minute started afresh once: every later request counts there
    assert 1 <= len(waits) <= THREADS
    assert set(waits) == {31.0}
    assert provider.weight.used == (2 * THREADS) * KLINES_WEIGHT


def test_worker_threads_asking_for_the_cache_at_once_share_one(tmp_path):
    # one cache per command: two would each warn (twice "disk cache unusable" was seen in a
    # drill) and each report a Redis outage
    environ = {"CACHE_DIR": str(tmp_path / "cache")}
    for _ in range(5):
        app = AppContext(load_settings(environ=environ))
        caches, outages = built_by_threads(app)
        assert len({id(c) for c in caches}) == 1
        assert len({id(o) for o in outages}) == 1
        app.close()


def built_by_threads(app: AppContext) -> tuple[list[object], list[object]]:
    """The cache and the Redis outage each of THREADS threads got, asking at once."""
    caches: list[object] = []
    outages: list[object] = []

    def ask(_: int) -> None:
        outages.append(app.redis_outage)
        caches.append(app.cache)

    hammer(ask)
    return caches, outages
