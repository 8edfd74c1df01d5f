"""A property (hypothesis): any interleaving of ingests, replays, interrupted runs and killed
processes over overlapping windows, followed by the next ordinary replay, ends with exactly
the provider's candles, no run left `running`, and a ledger that adds up."""

from __future__ import annotations

import shutil
import signal
import threading
import time
from dataclasses import dataclass

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketdata.config import load_settings
from marketdata.context import AppContext
from marketdata.domain import Interval
from marketdata.errors import RunInterruptedError
from marketdata.pipeline import IngestRequest, Mode, run_ingest
from marketdata.storage.schema import candles, ingestion_runs
from tests.fakes.coinbase import FakeCoinbase
from tests.fakes.market import walk
from tests.fakes.server import serve
from tests.reliability.processes import start, wait_for

HOUR = 3_600
BARS = 48
SYMBOLS = ["BTC-USD", "ETH-USD", "SOL-USD"]


@dataclass(frozen=True)
class Step:
    """One run: what it does, over which pairs and hours, and where a fault strikes."""

    kind: str  # ingest | replay | interrupt | kill
    symbols: tuple[str, ...]
    first_hour: int  # window start, in hours after the oldest bar
    hours: int
    fault_at: int  # the request (1-based) at which an interrupt or kill strikes


steps = st.builds(
    Step,
    kind=st.sampled_from(["ingest", "replay", "interrupt", "kill"]),
    symbols=st.lists(st.sampled_from(SYMBOLS), min_size=1, max_size=3, unique=True).map(tuple),
    first_hour=st.integers(0, BARS - 1),
    hours=st.integers(1, BARS),
    fault_at=st.integers(1, 3),
)


class Provider:
    """The fake Coinbase, plus a fault point: the n-th request of a run interrupts it (sets
    its cancel event) or hangs until the test has killed the process."""

    def __init__(self, fake: FakeCoinbase) -> None:
        self.fake = fake
        self.count = 0
        self.fault_at = 0
        self.on_fault: object = None  # an AppContext to cancel, or an Event to hang on
        self.reached = threading.Event()

    def arm(self, fault_at: int, on_fault: object) -> None:
        self.count, self.fault_at, self.on_fault = 0, fault_at, on_fault
        self.reached.clear()

    def __call__(self, request):
        self.count += 1
        if self.count == self.fault_at:
            self.reached.set()
            if isinstance(self.on_fault, AppContext):
                self.on_fault.cancel.set(signal.SIGTERM)
            elif isinstance(self.on_fault, threading.Event):
                self.on_fault.wait(30)
        return self.fake(request)


def app_for(url: str, provider_url: str) -> AppContext:
    values = {
        "database_url": url,
        "coinbase_base_url": provider_url,
        "ingestion_lookback_days": 2,
        "ingestion_concurrency": 1,
    }
    return AppContext(load_settings(values, environ={}))


def run_step(step: Step, url: str, server, provider: Provider, oldest: int, env) -> bool:
    """Run the step; True when it killed a process in the middle of its run."""
    since = oldest + step.first_hour * HOUR
    until = since + step.hours * HOUR
    if step.kind == "kill":
        hang = threading.Event()
        provider.arm(step.fault_at, hang)
        args = ["ingest", "--symbols", ",".join(step.symbols), "--interval", "1h"]
        proc = start(args, env)
        try:
            wait_for(lambda: provider.reached.is_set() or proc.poll() is not None, 30)
            killed = proc.poll() is None
        finally:
            proc.kill()
            proc.communicate()
            hang.set()
        return killed
    app = app_for(url, server.url)
    provider.arm(step.fault_at if step.kind == "interrupt" else 0, app)
    mode = Mode.REPLAY if step.kind == "replay" else Mode.INCREMENTAL
    request = IngestRequest(
        symbols=step.symbols,
        intervals=(Interval.H1,),
        since=None if mode is Mode.REPLAY else since,
        until=None if mode is Mode.REPLAY else until,
        mode=mode,
    )
    try:
        run_ingest(app, request)
    except RunInterruptedError:
        assert step.kind == "interrupt"
    finally:
        app.close()
    return False


@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=st.lists(steps, min_size=1, max_size=3))
def test_any_interleaving_of_runs_interrupts_and_kills_ends_with_exactly_the_providers_candles(
    plan, sqlite_template, tmp_path_factory, cli_env
):
    now = int(time.time()) // HOUR * HOUR
    oldest = now - (BARS - 1) * HOUR
    fake = FakeCoinbase()
    for seed, symbol in enumerate(SYMBOLS):
        fake.add(symbol, HOUR, walk(oldest, HOUR, BARS, seed=seed))
    path = tmp_path_factory.mktemp("interleaving") / "db.sqlite3"
    shutil.copyfile(sqlite_template, path)
    url = f"sqlite:///{path}"
    provider = Provider(fake)
    with serve(provider) as server:
        env = cli_env(
            database_url=url,
            coinbase_base_url=server.url,
            ingestion_lookback_days=2,
            ingestion_concurrency=1,
        )
        kills = sum(run_step(step, url, server, provider, oldest, env) for step in plan)
        # the next timer's run: a replay of the lookback window
        run_step(Step("replay", tuple(SYMBOLS), 0, BARS, 0), url, server, provider, oldest, env)

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            stored = [
                (symbol, int(ts.timestamp()), close)
                for symbol, ts, close in conn.execute(
                    sa.select(candles.c.symbol, candles.c.ts, candles.c.close)
                )
            ]
            runs = conn.execute(sa.select(ingestion_runs.c.status)).scalars().all()
            recorded = conn.execute(sa.select(sa.func.sum(ingestion_runs.c.rows_inserted)))
            inserted = int(recorded.scalar() or 0)
    finally:
        engine.dispose()
    wanted = {(s, ts, close) for s in SYMBOLS for ts, _, _, _, close, _ in fake.candles[s][HOUR]}
    assert len(stored) == len(set(stored))
    assert set(stored) == wanted
    assert "running" not in runs  # killed runs were closed as abandoned
    assert runs.count("abandoned") == kills
    # the ledger adds up: every candle stored was counted by exactly one run, including a
    # pair that committed while its run was being stopped or killed (issue 10 item 3)
    assert inserted == len(stored)
