"""Binance spot klines: 12-field rows in ms with string numbers, weight-based IP limits."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from marketdata.domain import Candles, Interval, Window, is_crypto
from marketdata.errors import (
    AccessRefusedError,
    BadPayloadError,
    ProviderError,
    ProviderUnavailableError,
)
from marketdata.providers.base import (
    HttpProvider,
    bad_row,
    elapsed_ms,
    epoch_int,
    finite_number,
    retry_after_seconds,
)
from marketdata.providers.ratelimit import RateLimit

if TYPE_CHECKING:
    import httpx

    from marketdata.providers.base import ProviderContext

KLINES_PATH = "/api/v3/klines"
# Binance returns at most 1000 klines (500 when `limit` is left out, even with start and end).
MAX_LIMIT = 1000
# Assets Binance spot actually quotes in. USD is not one of them: USDT is a different asset,
# so BTC-USD is never quietly turned into BTCUSDT.
QUOTES = frozenset(
    {
        "USDT", "USDC", "FDUSD", "TUSD", "BUSD", "DAI",
        "BTC", "ETH", "BNB", "XRP", "TRX", "DOGE",
        "EUR", "GBP", "TRY", "BRL", "JPY", "AUD", "ARS", "MXN", "PLN", "RON", "ZAR", "UAH",
        "IDR", "COP", "CZK",
    }
)  # fmt: skip
# REQUEST_WEIGHT is 6000 per minute per IP; every reply reports the weight used so far in
# X-MBX-USED-WEIGHT-1M. Other programs may share the IP, so pause at 90% of it.
WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
WEIGHT_LIMIT_1M = 6000
WEIGHT_PAUSE_AT = WEIGHT_LIMIT_1M * 9 // 10
KLINES_WEIGHT = 2
# Binance error codes (binance-spot-api-docs errors.md)
INVALID_SYMBOL = -1121


class BinanceProvider(HttpProvider):
    """Binance spot (`GET /api/v3/klines`); symbols are BASEQUOTE, e.g. BTCUSDT."""

    name: ClassVar[str] = "binance"
    intervals: ClassVar[frozenset[Interval]] = frozenset(
        {Interval.M1, Interval.M5, Interval.M15, Interval.H1, Interval.H6, Interval.D1}
    )
    max_rows_per_request: ClassVar[int] = MAX_LIMIT
    # Limits doc: 6000 request weight per minute per IP, klines weigh 2 -> 50 requests/s at
    # most; 20/s (2400 weight/min) leaves room for 429-free bursts and other users of the IP.
    rate_limit: ClassVar[RateLimit] = RateLimit(per_second=20.0, burst=20)

    def __init__(self, ctx: ProviderContext) -> None:
        super().__init__(ctx)
        # Binance counts weight per clock minute; tests replace this with a fixed time.
        self.clock: Callable[[], float] = time.time
        # read through the provider, so that a test's clock (set after this) is the one used
        self.weight = WeightBudget(lambda: self.clock())

    def map_symbol(self, symbol: str) -> str:
        """BTC-USDT -> BTCUSDT, only for quotes Binance really has (no USD market)."""
        if not is_crypto(symbol):
            raise self.not_listed(symbol, "it lists crypto pairs (BASE-QUOTE) only")
        base, quote = symbol.split("-")
        if quote not in QUOTES:
            instead = f"{base}USDT" if quote == "USD" else "ID"
            raise self.not_listed(
                symbol,
                f"it has no {quote} market",
                hint=f"{quote} is not USDT or USDC; if another quote will do, map it explicitly "
                f"with `marketdata markets add {symbol} --provider-symbol binance={instead}`",
            )
        return base + quote

    def fetch(self, symbol: str, interval: Interval, window: Window) -> Candles:
        """Klines inside `window`, paging with startTime = last open time + interval."""
        self.require_interval(interval)
        market = self.provider_symbol(symbol)
        step = interval.seconds
        pages: list[Candles] = []
        cursor = window.start
        while cursor < window.end:
            params = {
                "symbol": market,
                "interval": interval.value,
                "startTime": cursor * 1000,
                "endTime": window.end * 1000 - 1,  # inclusive on Binance
                # always sent: without it only 500 come back even for a wider range
                "limit": MAX_LIMIT,
            }
            self._mind_weight()
            response = self.get(KLINES_PATH, params, symbol=symbol)
            self._note_weight(response)
            payload = self.json(response, symbol)
            if not isinstance(payload, list):
                raise bad_row(self.name, symbol, payload, "expected a JSON array of klines")
            page = self._parse(symbol, interval, payload)
            # an empty page is the end of the data; a short one is not trusted to be (a
            # silently lower cap would cut the window short), the next request tells
            if not len(page):
                break
            following = int(page.ts.max()) + step
            if following <= cursor:
                raise BadPayloadError(
                    f"binance sent klines before the requested startTime for {symbol}",
                    provider=self.name,
                    symbol=symbol,
                )
            pages.append(page)
            cursor = following
        batch = Candles.joined(symbol, interval, self.name, pages)
        return batch.normalised(window.start, window.end)

    def _parse(self, symbol: str, interval: Interval, payload: list[Any]) -> Candles:
        rows = []
        for row in payload:
            if not isinstance(row, list) or len(row) < 12:
                raise bad_row(self.name, symbol, row, "expected a 12-field kline")
            open_ms = row[0]
            try:
                open_s = epoch_int(open_ms, per_second=1000)
            except ValueError:
                raise bad_row(
                    self.name, symbol, row, "open time is not integer epoch milliseconds"
                ) from None
            if open_ms % 1000:
                raise bad_row(self.name, symbol, row, "open time is not a whole second")
            try:
                open_, high, low, close, volume = (finite_number(value) for value in row[1:6])
            except ValueError:
                raise bad_row(self.name, symbol, row, "a value is not a number") from None
            rows.append((open_s, open_, high, low, close, volume))
        return Candles.from_rows(symbol, interval, self.name, rows)

    def _mind_weight(self) -> None:
        """Reserve a request's weight; when this minute's is nearly spent (429s lead to bans),
        wait for the next minute first."""
        pause = self.weight.reserve(KLINES_WEIGHT)
        if pause is None:
            return
        seconds, generation = pause
        # every thread that finds the weight spent pauses (not only the first); a stop ends
        # the wait
        self.ctx.wait(seconds)
        self.weight.after_pause(generation, KLINES_WEIGHT)

    def _note_weight(self, response: httpx.Response) -> None:
        raw = response.headers.get(WEIGHT_HEADER)
        try:
            used = int(raw) if raw is not None else None
        except ValueError:
            used = None
        if used is None:
            return
        self.weight.note(used)
        self.ctx.metrics.gauge(f"provider.{self.name}.used_weight_1m", used)

    def classify(self, response: httpx.Response, symbol: str | None) -> ProviderError | None:
        """Map Binance's {"code", "msg"} errors: -1121 unknown symbol, 451 geo-block, 418 ban."""
        status = response.status_code
        if status < 400:
            return None
        code, msg = _error_of(response)
        if status == 400 and code == INVALID_SYMBOL:
            market = self.provider_symbol(symbol) if symbol else "?"
            return self.not_listed(symbol, f"asked for {market}: {msg or 'Invalid symbol.'}")
        if status == 451:
            return AccessRefusedError(
                "binance refuses to serve this location (HTTP 451: restricted location)",
                provider=self.name,
                symbol=symbol,
                hint="Binance blocks some countries (e.g. the US) and cloud regions; use "
                "another provider, or set BINANCE_BASE_URL to an endpoint you may use",
            )
        if status in (418, 429):
            what = (
                "banned this IP for using too much request weight"
                if status == 418
                else ("rate limit exceeded")
            )
            return ProviderUnavailableError(
                f"binance {what} (HTTP {status}{f': {msg}' if msg else ''})",
                provider=self.name,
                symbol=symbol,
                retry_after=retry_after_seconds(response, self.ctx.clock()),
            )
        if 400 <= status < 500 and msg is not None:
            return BadPayloadError(
                f"binance refused the request with HTTP {status}: {msg} (code {code})",
                provider=self.name,
                symbol=symbol,
            )
        return super().classify(response, symbol)

    def check(self) -> float:
        """Ping Binance once (weight 1)."""
        started = time.perf_counter()
        response = self.get("/api/v3/ping")
        self._note_weight(response)
        return elapsed_ms(started)


class WeightBudget:
    """This IP's request weight in the current clock minute, shared by every worker thread.

    A request reserves its weight before it is sent, under the lock, so that threads cannot
    all pass the check at 5,398 and send together; each reply's X-MBX-USED-WEIGHT-1M (which
    counts other programs on the IP too) raises the count, never lowers it within a minute (a
    late reply's lower figure is stale).
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.used = 0
        self.minute = -1  # the clock minute `used` counts; -1 before the first request
        self.generation = 0  # bumped when a minute starts afresh: a pause's wake-up knows it
        self._lock = threading.Lock()

    def reserve(self, weight: int) -> tuple[float, int] | None:
        """Count `weight` now, or (seconds to wait, generation) when it does not fit."""
        now = self.clock()
        with self._lock:
            self._roll(int(now // 60))
            if self.used + weight <= WEIGHT_PAUSE_AT:
                self.used += weight
                return None
            # one second past the boundary, for clock skew against Binance's minute
            return 60.0 - now % 60 + 1.0, self.generation

    def after_pause(self, generation: int, weight: int) -> None:
        """A pause ended: the minute starts afresh (unless another thread saw to it) and
        `weight` is counted in it."""
        with self._lock:
            if self.generation == generation:
                self._start(int(self.clock() // 60))
            self.used += weight

    def note(self, used: int) -> None:
        """A reply's figure for this minute."""
        minute = int(self.clock() // 60)
        with self._lock:
            self._roll(minute)
            self.used = max(self.used, used)

    def _roll(self, minute: int) -> None:
        if minute != self.minute:
            self._start(minute)

    def _start(self, minute: int) -> None:
        self.minute, self.used = minute, 0
        self.generation += 1


def _error_of(response: httpx.Response) -> tuple[int | None, str | None]:
    """(code, msg) from Binance's error body, or (None, None) when it is not one."""
    try:
        body = response.json()
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    code, msg = body.get("code"), body.get("msg")
    return (code if isinstance(code, int) else None), (msg if isinstance(msg, str) else None)
