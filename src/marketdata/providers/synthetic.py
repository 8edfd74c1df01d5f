"""Synthetic candles: a seeded, window-independent random walk for any symbol, no network."""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from marketdata.calendars import ALWAYS, calendar, default_calendar
from marketdata.domain import SYMBOL_PATTERN, Candles, Interval, Window, is_crypto
from marketdata.errors import OutOfReachError, SymbolNotListedError
from marketdata.providers.base import BaseProvider
from marketdata.providers.ratelimit import RateLimit

if TYPE_CHECKING:
    from numpy.typing import NDArray

_YEAR = 365.25 * 86_400
# Bars are grouped in blocks of _BLOCK; a block is a random-walk bridge between two block
# boundaries whose levels come from a midpoint-displacement tree over _LEVELS levels. Bar index
# k sits at position k + _ORIGIN, so positions span [0, 2**(_LEVELS + log2(_BLOCK))).
_BLOCK = 256
_LEVELS = 34
_ORIGIN = 1 << 41
_REACH = 1 << 40  # |bar index| allowed; keeps every position and boundary inside the tree
_FRACTION = np.arange(_BLOCK, dtype=np.float64) / _BLOCK
_SQRT3 = math.sqrt(3.0)
_U16 = 1.0 / 65_536.0
_MASK16 = np.uint64(0xFFFF)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_M64 = (1 << 64) - 1
_GOLDEN_INT, _MIX1_INT, _MIX2_INT = int(_GOLDEN), int(_MIX1), int(_MIX2)
# Up to this many blocks the tree is walked in plain Python (numpy costs more on tiny arrays)
_SCALAR_BLOCKS = 4


class SyntheticProvider(BaseProvider):
    """Deterministic candles for tests, demos and benchmarks.

    Every value of the bar at bar index k = ts // interval depends only on (seed, symbol,
    interval, k): a window split in two gives the same candles as the whole window, bit for
    bit. Log prices follow a Gaussian random walk at short range that reverts over about a
    year, so prices stay near a base level derived from the symbol. Bars follow the market's
    trading calendar (calendars.py): every bar for crypto pairs, weekdays for FX, the
    exchange's sessions for equities (no nights, weekends or holidays).
    """

    name: ClassVar[str] = "synthetic"
    intervals: ClassVar[frozenset[Interval]] = frozenset(Interval)
    # Generated in memory: one "request" covers a million bars.
    max_rows_per_request: ClassVar[int] = 1_000_000
    # No service behind it; the limit only has to never get in the way.
    rate_limit: ClassVar[RateLimit] = RateLimit(per_second=10_000.0, burst=10_000, shared=False)
    seed: int = 42

    def map_symbol(self, symbol: str) -> str:
        """Any well-formed symbol is 'listed'; its name seeds its walk."""
        if not SYMBOL_PATTERN.fullmatch(symbol):
            raise SymbolNotListedError(
                f"synthetic does not list {symbol!r}",
                provider=self.name,
                symbol=symbol,
                hint="use a canonical symbol such as BTC-USD or AAPL",
            )
        return symbol

    def fetch(self, symbol: str, interval: Interval, window: Window) -> Candles:
        """Generate page by page; already ascending, unique and inside the window."""
        self.require_interval(interval)
        parts = []
        for page in self.pages(interval, window):
            self._latency()
            # pages() starts at the bar containing window.start, which may lie before it
            parts.append(
                self.generate(symbol, interval, Window(max(page.start, window.start), page.end))
            )
        return Candles.joined(symbol, interval, self.name, parts)

    def fetch_page(self, symbol: str, interval: Interval, page: Window) -> Candles:
        """Generate the bars starting inside `page` (no I/O, SYNTHETIC_LATENCY_MS of wait)."""
        self._latency()
        return self.generate(symbol, interval, page)

    def _latency(self) -> None:
        # a stand-in for a network round trip, so benchmarks can be latency-bound
        ms = self.ctx.settings.synthetic_latency_ms
        if ms:
            self.ctx.wait(ms / 1000)  # the provider's wait: it ends when the run is stopped

    def generate(self, symbol: str, interval: Interval, window: Window) -> Candles:
        """The candles of `symbol` whose start lies in `window`, ascending."""
        name = self.provider_symbol(symbol)  # refuses a malformed symbol even for no bars
        sec = interval.seconds
        first = -(-window.start // sec)
        last = -(-window.end // sec) - 1  # the last bar starting before window.end
        if last < first:
            return Candles.empty(symbol, interval, self.name)
        if first < -_REACH or last > _REACH:
            raise OutOfReachError(
                f"synthetic cannot generate {interval.value} bars that far from 1970",
                provider=self.name,
                symbol=symbol,
            )
        walk = _Walk(self.seed, name, interval)
        k = np.arange(first, last + 1, dtype=np.int64)
        level = walk.levels(first, last + 1)  # random-walk value at every bar boundary
        ts = k * sec
        keep: NDArray[np.bool_] | None = None
        name = self.ctx.calendars.get(symbol) or default_calendar(symbol)
        if name != ALWAYS:
            keep = calendar(name).trading(ts, interval)
        return walk.candles(symbol, self.name, ts, k, level, keep)

    def check(self) -> float:
        """Nothing to reach: always ready."""
        return 0.0


class _Walk:
    """The random streams and scales of one (seed, symbol, interval)."""

    def __init__(self, seed: int, symbol: str, interval: Interval) -> None:
        self.interval = interval
        crypto = is_crypto(symbol)
        # Level, volatility and volume are per symbol (shared by all intervals); the walk
        # itself is per interval.
        u_base, u_vol, u_volume = (_unit(seed, symbol, name) for name in ("base", "vol", "volume"))
        self.log_base = math.log(10.0) + u_base * (math.log(50_000.0) - math.log(10.0))
        annual = (0.5 + 0.4 * u_vol) if crypto else (0.15 + 0.3 * u_vol)
        self.sigma = annual * math.sqrt(interval.seconds / _YEAR)
        notional_per_day = 10.0 ** (6.0 + 3.0 * u_volume)
        self.volume_per_bar = notional_per_day / math.exp(self.log_base) / interval.bars_per_day
        # Beyond about a year of bars the displacements shrink, so the walk reverts.
        self.horizon = max(_YEAR / interval.seconds, 2.0 * _BLOCK)
        self.key_step = _key(seed, symbol, interval, "step")
        self.key_tree = _key(seed, symbol, interval, "tree")
        self.key_bar = _key(seed, symbol, interval, "bar")

    def levels(self, first: int, end: int) -> NDArray[np.float64]:
        """Walk values (in steps of one bar's sigma) at bar boundaries first..end inclusive."""
        lo_pos, hi_pos = first + _ORIGIN, end + _ORIGIN
        b0, b1 = lo_pos // _BLOCK, hi_pos // _BLOCK
        bounds = self._tree(np.arange(b0, b1 + 2, dtype=np.int64))
        positions = np.arange(b0 * _BLOCK, (b1 + 1) * _BLOCK, dtype=np.int64)
        steps = _normal(_hash(positions, self.key_step)).reshape(-1, _BLOCK)
        total = np.cumsum(steps, axis=1)
        before = total - steps  # sum of the steps before each position in its block
        # A random-walk bridge inside each block, pinned to the tree's boundary values.
        start = bounds[:-1, None]
        rise = (bounds[1:] - bounds[:-1])[:, None]
        inside = start + (before - _FRACTION * total[:, -1:]) + _FRACTION * rise
        offset = lo_pos - b0 * _BLOCK
        return inside.reshape(-1)[offset : offset + (hi_pos - lo_pos) + 1]

    def _tree(self, blocks: NDArray[np.int64]) -> NDArray[np.float64]:
        """Walk values at block boundaries by midpoint displacement from a pinned root."""
        if len(blocks) <= _SCALAR_BLOCKS:
            return np.array([self._tree_one(int(b)) for b in blocks], dtype=np.float64)
        lo = np.zeros_like(blocks)
        left = np.zeros(blocks.shape, dtype=np.float64)
        right = np.zeros(blocks.shape, dtype=np.float64)
        for level in range(_LEVELS):
            half = 1 << (_LEVELS - 1 - level)
            span = half * _BLOCK  # bars from the node's left end to its midpoint
            # Brownian midpoint variance is span/2; capped and decaying past the horizon.
            var = span / 2.0 if span <= self.horizon else self.horizon**2 / (2.0 * span)
            mid = lo + half
            value = 0.5 * (left + right) + math.sqrt(var) * _normal(_hash(mid, self.key_tree))
            go_right = blocks >= mid
            lo = np.where(go_right, mid, lo)
            left = np.where(go_right, value, left)
            right = np.where(go_right, right, value)
        return left

    def _tree_one(self, block: int) -> float:
        """`_tree` of one block in plain Python numbers: the same operations on the same
        doubles, so the same value bit for bit, without numpy's cost per call on the one or
        two blocks a tick's few bars need."""
        lo, left, right = 0, 0.0, 0.0
        key = int(self.key_tree)
        for level in range(_LEVELS):
            half = 1 << (_LEVELS - 1 - level)
            span = half * _BLOCK
            var = span / 2.0 if span <= self.horizon else self.horizon**2 / (2.0 * span)
            mid = lo + half
            value = 0.5 * (left + right) + math.sqrt(var) * _normal_one(_hash_one(mid, key))
            if block >= mid:
                lo, left = mid, value
            else:
                right = value
        return left

    def candles(
        self,
        symbol: str,
        provider: str,
        ts: NDArray[np.int64],
        k: NDArray[np.int64],
        level: NDArray[np.float64],
        keep: NDArray[np.bool_] | None,
    ) -> Candles:
        """OHLCV from the boundary levels: open/close on the walk, wicks and volume hashed."""
        if keep is not None:
            ts, k = ts[keep], k[keep]
            start, stop = level[:-1][keep], level[1:][keep]
        else:
            start, stop = level[:-1], level[1:]
        open_ = np.exp(self.log_base + self.sigma * start)
        close = np.exp(self.log_base + self.sigma * stop)
        bits = _hash(k + _ORIGIN, self.key_bar)
        u_high = (bits & _MASK16).astype(np.float64) * _U16
        u_low = ((bits >> 16) & _MASK16).astype(np.float64) * _U16
        u_volume = ((bits >> 32) & _MASK16).astype(np.float64) * _U16
        # Multiplying by >= 1 and dividing by >= 1 keeps low <= open, close <= high exactly.
        high = np.maximum(open_, close) * (1.0 + 1.5 * self.sigma * u_high * u_high)
        low = np.minimum(open_, close) / (1.0 + 1.5 * self.sigma * u_low * u_low)
        # Busier bars move more.
        volume = self.volume_per_bar * (0.25 + 1.5 * u_volume) * (1.0 + np.abs(stop - start))
        return Candles(symbol, self.interval, provider, ts, open_, high, low, close, volume)


def _digest(*parts: object) -> int:
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def _key(seed: int, symbol: str, interval: Interval, stream: str) -> np.uint64:
    return np.uint64(_digest(seed, symbol, interval.value, stream))


def _unit(seed: int, symbol: str, stream: str) -> float:
    """A uniform number in [0, 1) for a per-symbol property."""
    return (_digest(seed, symbol, stream) >> 11) / float(1 << 53)


def _hash(index: NDArray[np.int64], key: np.uint64) -> NDArray[np.uint64]:
    """splitmix64 of (key, index), vectorised; uint64 arithmetic wraps on purpose."""
    z = index.astype(np.uint64)
    z *= _GOLDEN
    z += key
    z ^= z >> np.uint64(30)
    z *= _MIX1
    z ^= z >> np.uint64(27)
    z *= _MIX2
    z ^= z >> np.uint64(31)
    return z


def _hash_one(index: int, key: int) -> int:
    """`_hash` of one index, in Python integers wrapped to 64 bits."""
    z = ((index & _M64) * _GOLDEN_INT + key) & _M64
    z ^= z >> 30
    z = (z * _MIX1_INT) & _M64
    z ^= z >> 27
    z = (z * _MIX2_INT) & _M64
    return z ^ (z >> 31)


def _normal_one(bits: int) -> float:
    """`_normal` of one value."""
    total = (bits & 0xFFFF) + ((bits >> 16) & 0xFFFF) + ((bits >> 32) & 0xFFFF) + (bits >> 48)
    return ((float(total) + 2.0) * _U16 - 2.0) * _SQRT3


def _normal(bits: NDArray[np.uint64]) -> NDArray[np.float64]:
    """Approximately standard normal variates: the sum of four 16-bit uniforms, rescaled.

    Plain integer and float arithmetic only, so the values are the same on every CPU.
    """
    total = (
        (bits & _MASK16)
        + ((bits >> np.uint64(16)) & _MASK16)
        + ((bits >> np.uint64(32)) & _MASK16)
        + (bits >> np.uint64(48))
    )
    # Each 16-bit part is uniform on {0..65535}; centre them at (x + 0.5) / 65536.
    normal: NDArray[np.float64] = ((total.astype(np.float64) + 2.0) * _U16 - 2.0) * _SQRT3
    return normal
