"""Synthetic provider: deterministic, window-independent, well-formed candles without a network."""

from __future__ import annotations

import numpy as np
import pytest

from marketdata.domain import Candles, Interval, Window
from marketdata.errors import OutOfReachError, SymbolNotListedError
from marketdata.providers.base import ProviderContext
from marketdata.providers.registry import build_provider
from marketdata.providers.synthetic import SyntheticProvider

DAY = 86_400
START = 1_704_067_200  # 2024-01-01, a Monday


@pytest.fixture
def provider(provider_context) -> SyntheticProvider:
    return SyntheticProvider(provider_context())


def same(a: Candles, b: Candles) -> bool:
    """Bit-for-bit equality of every column."""
    return all(
        np.array_equal(getattr(a, col), getattr(b, col))
        and getattr(a, col).dtype == getattr(b, col).dtype
        for col in ("ts", "open", "high", "low", "close", "volume")
    )


def test_the_same_request_twice_gives_identical_candles_bit_for_bit(provider, provider_context):
    window = Window(START, START + 500 * 3600)
    first = provider.fetch("BTC-USD", Interval.H1, window)
    again = SyntheticProvider(provider_context()).fetch("BTC-USD", Interval.H1, window)
    assert len(first) == 500
    assert same(first, again)
    assert first.close.tobytes() == again.close.tobytes()


def test_a_window_split_anywhere_concatenates_to_the_whole_window(provider):
    window = Window(START, START + 3000 * 900)
    whole = provider.fetch("ETH-USD", Interval.M15, window)
    for cut in (START + 1 * 900, START + 255 * 900, START + 256 * 900, START + 1777 * 900 + 17):
        left = provider.fetch("ETH-USD", Interval.M15, Window(window.start, cut))
        right = provider.fetch("ETH-USD", Interval.M15, Window(cut, window.end))
        assert same(left.concat(right), whole), cut


def test_a_bar_has_the_same_values_whatever_window_contains_it(provider):
    ts = START + 123 * DAY
    alone = provider.fetch("SOL-USD", Interval.D1, Window(ts, ts + 1))
    inside = provider.fetch("SOL-USD", Interval.D1, Window(ts - 900 * DAY, ts + 900 * DAY))
    row = int(np.flatnonzero(inside.ts == ts)[0])
    assert len(alone) == 1
    assert alone.rows().__next__() == inside.take(slice(row, row + 1)).rows().__next__()


def test_the_walk_of_a_few_bars_in_plain_python_equals_numpy_s_bit_for_bit(monkeypatch):
    from marketdata.providers import synthetic

    walk = synthetic._Walk(42, "BTC-USD", Interval.H1)
    rng = np.random.default_rng(7)
    for size in (1, 2, 3, 4):
        blocks = rng.integers(0, 1 << 34, size=(50, size), dtype=np.int64)
        scalar = [walk._tree(b).tobytes() for b in blocks]
        monkeypatch.setattr(synthetic, "_SCALAR_BLOCKS", 0)  # numpy's path for every size
        assert [walk._tree(b).tobytes() for b in blocks] == scalar
        monkeypatch.undo()


def test_paging_a_window_larger_than_one_request_changes_nothing(provider, monkeypatch):
    window = Window(START, START + 2500 * 60)
    whole = provider.fetch("BTC-USD", Interval.M1, window)
    monkeypatch.setattr(SyntheticProvider, "max_rows_per_request", 300)
    paged = provider.fetch("BTC-USD", Interval.M1, window)
    assert provider.requests_needed(Interval.M1, window) == 9
    assert same(paged, whole)


def test_seed_symbol_and_interval_each_change_the_walk(provider, provider_context):
    window = Window(START, START + 100 * DAY)
    base = provider.fetch("BTC-USD", Interval.D1, window).close
    other_symbol = provider.fetch("ETH-USD", Interval.D1, window).close
    reseeded = SyntheticProvider(provider_context())
    reseeded.seed = 7
    other_seed = reseeded.fetch("BTC-USD", Interval.D1, window).close
    assert not np.array_equal(base, other_symbol)
    assert not np.array_equal(base, other_seed)
    hourly_daily_open = provider.fetch("BTC-USD", Interval.H1, window).open[::24]
    assert not np.array_equal(base, hourly_daily_open)


def test_100k_bars_keep_ohlc_order_positive_prices_and_the_grid(provider):
    window = Window(START, START + 100_000 * 300)
    candles = provider.fetch("BTC-USD", Interval.M5, window)
    assert len(candles) == 100_000
    assert (candles.low <= np.minimum(candles.open, candles.close)).all()
    assert (np.maximum(candles.open, candles.close) <= candles.high).all()
    assert (candles.low > 0).all()
    assert (candles.volume >= 0).all()
    assert np.isfinite(candles.high).all() and np.isfinite(candles.volume).all()
    assert (candles.ts % 300 == 0).all()
    assert (np.diff(candles.ts) == 300).all()
    # a walk, not noise: each open is the previous close, and prices do move
    assert np.array_equal(candles.open[1:], candles.close[:-1])
    returns = np.diff(np.log(candles.close))
    assert 0 < returns.std() < 0.01


def test_prices_stay_in_a_plausible_range_over_decades(provider):
    candles = provider.fetch("AAPL", Interval.D1, Window(0, 2_000_000_000))
    ratio = candles.high.max() / candles.low.min()
    assert 1.5 < ratio < 5_000
    assert candles.low.min() > 0


def test_crypto_trades_every_bar_but_equities_only_in_their_exchange_s_sessions(provider):
    window = Window(START, START + 14 * DAY)  # two weeks from New Year's Day, a holiday
    crypto = provider.fetch("BTC-USD", Interval.H6, window)
    equity = provider.fetch("AAPL", Interval.H6, window)
    assert len(crypto) == 14 * 4
    # 9 sessions (14:30-21:00 UTC in winter): the 6h bars from 12:00 and 18:00 overlap them
    assert len(equity) == 9 * 2
    hours = {int(ts % DAY // 3600) for ts in equity.ts.tolist()}
    assert hours == {12, 18}
    assert START not in (equity.ts // DAY * DAY).tolist()
    weekdays = {int(((ts // DAY) + 3) % 7) for ts in equity.ts.tolist()}
    assert weekdays == {0, 1, 2, 3, 4}
    assert set(equity.ts.tolist()) <= set(crypto.ts.tolist())
    # a Saturday alone has no equity bars at all
    saturday = START + 5 * DAY
    assert len(provider.fetch("AAPL", Interval.D1, Window(saturday, saturday + DAY))) == 0


@pytest.mark.parametrize("interval", list(Interval), ids=lambda i: i.value)
def test_every_interval_is_served_on_its_own_grid(provider, interval):
    assert interval in provider.intervals
    window = Window(START + 7, START + 7 + 50 * interval.seconds)
    candles = provider.fetch("BTC-USD", interval, window)
    assert len(candles) == 50  # bars START+1*sec .. START+50*sec start inside the window
    assert candles.ts[0] == START + interval.seconds
    assert (candles.ts % interval.seconds == 0).all()
    assert candles.ts.min() >= window.start and candles.ts.max() < window.end
    assert candles.interval is interval and candles.provider == "synthetic"


def test_an_empty_or_unaligned_tiny_window_gives_no_candles(provider):
    assert len(provider.fetch("BTC-USD", Interval.D1, Window(START, START))) == 0
    assert len(provider.fetch("BTC-USD", Interval.D1, Window(START + 1, START + DAY))) == 0


def test_windows_before_1970_work_and_absurd_ones_are_out_of_reach(provider):
    old = provider.fetch("IBM", Interval.D1, Window(-30 * 365 * DAY, -29 * 365 * DAY))
    assert len(old) > 250 and (old.low > 0).all()
    far = 1 << 62
    with pytest.raises(OutOfReachError):
        provider.fetch("IBM", Interval.M1, Window(far, far + 600))


def test_a_malformed_symbol_is_not_listed(provider):
    with pytest.raises(SymbolNotListedError, match="synthetic does not list"):
        provider.fetch("btc usd", Interval.D1, Window(START, START + DAY))


def test_an_override_makes_one_symbol_follow_another_walk(provider_context):
    ctx = provider_context()
    ctx.symbol_overrides = {"synthetic": {"XBT-USD": "BTC-USD"}}
    overridden = SyntheticProvider(ctx)
    plain = SyntheticProvider(provider_context())
    window = Window(START, START + 30 * DAY)
    assert overridden.provider_symbol("XBT-USD") == "BTC-USD"
    assert plain.provider_symbol("XBT-USD") == "XBT-USD"
    assert np.array_equal(
        overridden.fetch("XBT-USD", Interval.D1, window).close,
        plain.fetch("BTC-USD", Interval.D1, window).close,
    )


def test_the_registry_builds_it_and_check_is_instant(provider_context):
    provider = build_provider("synthetic", provider_context())
    assert isinstance(provider, SyntheticProvider)
    assert provider.check() == 0.0
    assert provider.base_url == ""
    assert provider.requests_needed(Interval.H1, Window(START, START + 10_000 * 3600)) == 1


def test_a_million_candles_for_100_symbols_come_out_whole_and_distinct(settings_factory):
    # its speed is measured by `make bench`, which generates every benchmark row with it
    provider = SyntheticProvider(ProviderContext(settings_factory()))
    window = Window(START, START + 10_000 * 3600)
    batches = [provider.fetch(f"C{i}-USD", Interval.H1, window) for i in range(100)]
    assert sum(len(b) for b in batches) == 1_000_000
    assert len({float(b.close[-1]) for b in batches}) == 100


def test_synthetic_latency_is_waited_once_per_request(provider_context, monkeypatch):
    context = provider_context(synthetic_latency_ms=40)
    waits: list[float] = []
    context.sleep = waits.append  # the provider's waits go through its context's sleeper
    slow = SyntheticProvider(context)
    monkeypatch.setattr(SyntheticProvider, "max_rows_per_request", 300)
    window = Window(START, START + 2500 * 60)
    candles = slow.fetch("BTC-USD", Interval.M1, window)
    slow.fetch_page("BTC-USD", Interval.M1, Window(START, START + 300 * 60))
    assert waits == [0.04] * (slow.requests_needed(Interval.M1, window) + 1)
    assert same(
        candles, SyntheticProvider(provider_context()).fetch("BTC-USD", Interval.M1, window)
    )


def test_synthetic_latency_is_off_by_default(provider):
    waits: list[float] = []
    provider.ctx.sleep = waits.append
    provider.fetch("BTC-USD", Interval.H1, Window(START, START + 50 * 3600))
    assert waits == []
