"""CoinGecko: daily candles built from the sub-daily prices of /coins/{id}/market_chart/range.

Why this endpoint, and what the candles are:

- CoinGecko has no candle endpoint that fits our grid. `/coins/{id}/ohlc` stamps candles at
  their CLOSE, picks the candle length from `days` (1-2 days -> 30 min, 3-30 days -> 4 h,
  31+ days -> 4 days, so never 1 day on the keyless and Demo plans) and has no volume.
- `/coins/{id}/market_chart/range?vs_currency=usd&from=&to=` returns `prices` and
  `total_volumes` as `[ms, value]` points whose spacing depends on the span: 5-minutely for the
  last day, hourly for spans up to 90 days, daily (one point at 00:00 UTC) above that. A daily
  point is a single price, not a candle, so we never ask for spans over 90 days: every request
  covers at most 90 UTC days and comes back hourly (or finer).
- Each UTC day's points become one 1d candle: open = first price, high = max, low = min,
  close = last price of the day (high/low are therefore the extremes of hourly *samples*, a
  little narrower than the true range). Volume: `total_volumes` is a rolling 24-hour volume,
  so the day's last value (sampled just before midnight) stands for that day's volume.
- Only 1d is served: hourly samples are not hourly candles.
- Keyless and Demo access reach back 365 days only (error 10012 beyond that); windows that
  start earlier raise OutOfReachError before any request.
- Coins are CoinGecko ids, not tickers: BTC-USD -> id `bitcoin`, vs_currency `usd`, from a
  small built-in table; anything else needs an override (`coingecko=<id>`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from itertools import pairwise
from typing import TYPE_CHECKING, Any, ClassVar

from marketdata.domain import CRYPTO_PATTERN, DAY, Candles, Interval, Window, utc_from_epoch
from marketdata.errors import (
    AccessRefusedError,
    BadPayloadError,
    OutOfReachError,
    ProviderError,
    SymbolNotListedError,
)
from marketdata.providers.base import HttpProvider, bad_row, elapsed_ms, epoch_int
from marketdata.providers.ratelimit import RateLimit

if TYPE_CHECKING:
    import httpx

    from marketdata.providers.base import ProviderContext

# Keyless and Demo plans serve history for the past 365 days only (error_code 10012).
REACH_DAYS = 365
# Spans up to 90 days come back hourly; longer ones would come back daily (one price a day).
PAGE_DAYS = 90
# A page whose points are further apart than this (median) cannot make honest daily candles.
MAX_SPACING_MS = 2 * 3600 * 1000

# Well-known coins: ticker -> CoinGecko API id (the id in the coin page's "API ID" field).
COIN_IDS: dict[str, str] = {
    "BTC": "bitcoin",
    "ETH": "ethereum",
    "SOL": "solana",
    "ADA": "cardano",
    "XRP": "ripple",
    "DOGE": "dogecoin",
    "DOT": "polkadot",
    "LTC": "litecoin",
    "BCH": "bitcoin-cash",
    "BNB": "binancecoin",
    "AVAX": "avalanche-2",
    "LINK": "chainlink",
    "XLM": "stellar",
    "ATOM": "cosmos",
    "TRX": "tron",
    "UNI": "uniswap",
    "USDT": "tether",
    "USDC": "usd-coin",
}
# Quote currencies CoinGecko accepts as vs_currency (a subset of /simple/supported_vs_currencies).
# USDT is not one of them: BTC-USDT is not served (no silent USD substitution).
VS_CURRENCIES = frozenset(
    {
        "usd", "eur", "gbp", "jpy", "chf", "cad", "aud", "nzd", "cny", "hkd", "sgd", "krw",
        "inr", "brl", "mxn", "sek", "nok", "dkk", "pln", "czk", "huf", "try", "zar", "btc", "eth",
    }
)  # fmt: skip
API_KEY_ERRORS = {10002, 10005, 10010, 10011}


class CoinGeckoProvider(HttpProvider):
    """CoinGecko (`GET /coins/{id}/market_chart/range`); 1d candles from hourly prices."""

    name: ClassVar[str] = "coingecko"
    intervals: ClassVar[frozenset[Interval]] = frozenset({Interval.D1})
    # One request per 90 UTC days, the longest span that still comes back hourly.
    max_rows_per_request: ClassVar[int] = PAGE_DAYS
    # Demo key: 30 calls/min (docs say up to 100); keyless is IP-based, unpublished and
    # typically lower. 0.5/s with a burst of 5 stays inside the Demo plan.
    rate_limit: ClassVar[RateLimit] = RateLimit(per_second=0.5, burst=5)

    def __init__(self, ctx: ProviderContext) -> None:
        super().__init__(ctx)
        # The clock that decides the 365-day reach; tests pin it.
        self.now: Callable[[], float] = ctx.clock

    def headers(self) -> dict[str, str]:
        """The Demo key, when one is configured (a secret: only ever sent as this header)."""
        key = self.ctx.settings.api_key(self.name)
        return {"x-cg-demo-api-key": key} if key else {}

    def map_symbol(self, symbol: str) -> str:
        """BTC-USD -> `bitcoin` from the built-in table; other coins need an override."""
        base, _ = self._split(symbol)
        coin = COIN_IDS.get(base)
        if coin is None:
            raise self._not_listed(symbol, f"no known CoinGecko id for {base}")
        return coin

    def fetch(self, symbol: str, interval: Interval, window: Window) -> Candles:
        """Daily candles in `window`; refuses windows older than the 365-day reach."""
        self.require_interval(interval)
        self.provider_symbol(symbol)  # unknown coins fail before any request
        self._vs_currency(symbol)
        earliest = self.now() - REACH_DAYS * DAY
        first = interval.floor(window.start)
        if window.start < window.end and first < earliest:
            since = utc_from_epoch(-(-earliest // DAY) * DAY).date().isoformat()
            raise OutOfReachError(
                f"coingecko serves only the last {REACH_DAYS} days; the window for {symbol} "
                f"starts {utc_from_epoch(first).date().isoformat()}",
                provider=self.name,
                symbol=symbol,
                hint=f"start on or after {since}, or use another provider for older candles",
            )
        return super().fetch(symbol, interval, window)

    def fetch_page(self, symbol: str, interval: Interval, page: Window) -> Candles:
        """One request for at most 90 whole UTC days, grouped into daily candles."""
        coin = self.provider_symbol(symbol)
        # Whole days only, so that the last day is not cut short; `to` stays inside the day.
        last = -(-page.end // DAY) * DAY - 1
        params = {"vs_currency": self._vs_currency(symbol), "from": page.start, "to": last}
        response = self.get(f"/coins/{coin}/market_chart/range", params, symbol=symbol)
        payload = self.json(response, symbol)
        if not isinstance(payload, dict):
            raise bad_row(self.name, symbol, payload, "expected an object with prices")
        prices = self._points(symbol, payload, "prices")
        volumes = self._points(symbol, payload, "total_volumes")
        return self._daily(symbol, interval, prices, volumes)

    def _points(self, symbol: str, payload: dict[str, Any], key: str) -> list[tuple[int, float]]:
        points = payload.get(key)
        if not isinstance(points, list):
            raise bad_row(self.name, symbol, payload, f"no {key} array")
        parsed = []
        for point in points:
            if not isinstance(point, list) or len(point) != 2:
                raise bad_row(self.name, symbol, point, f"expected [ms, value] in {key}")
            ms, value = point
            try:
                epoch_int(ms, per_second=1000)
            except ValueError:
                raise bad_row(
                    self.name, symbol, point, "time is not integer epoch milliseconds"
                ) from None
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise bad_row(self.name, symbol, point, f"{key} value is not a number")
            parsed.append((ms, float(value)))
        # Documented as oldest first; sorting makes the day's first/last honest regardless.
        parsed.sort(key=lambda p: p[0])
        return parsed

    def _daily(
        self,
        symbol: str,
        interval: Interval,
        prices: list[tuple[int, float]],
        volumes: list[tuple[int, float]],
    ) -> Candles:
        if len(prices) >= 3:
            gaps = sorted(b[0] - a[0] for a, b in pairwise(prices))
            median = gaps[len(gaps) // 2]
            if median > MAX_SPACING_MS:
                raise BadPayloadError(
                    f"coingecko sent prices for {symbol} {median // 1000} s apart; daily "
                    "candles need hourly or finer points",
                    provider=self.name,
                    symbol=symbol,
                )
        last_volume = {ms // 1000 // DAY * DAY: value for ms, value in volumes}
        days: dict[int, list[float]] = {}
        for ms, price in prices:
            day = ms // 1000 // DAY * DAY
            candle = days.get(day)
            if candle is None:
                days[day] = [price, price, price, price]
            else:
                candle[1] = max(candle[1], price)
                candle[2] = min(candle[2], price)
                candle[3] = price
        rows = []
        for day, (open_, high, low, close) in days.items():
            volume = last_volume.get(day)
            if volume is None:
                day_text = utc_from_epoch(day).date().isoformat()
                raise bad_row(self.name, symbol, day_text, "prices without total_volumes that day")
            rows.append((day, open_, high, low, close, volume))
        return Candles.from_rows(symbol, interval, self.name, rows)

    def classify(self, response: httpx.Response, symbol: str | None) -> ProviderError | None:
        """404 is an unknown coin; 10012 is the 365-day reach; key errors say which setting."""
        status = response.status_code
        if status == 404:
            return self._not_listed(symbol, f"it knows no coin id {self._coin_or_none(symbol)!r}")
        if 400 <= status < 500 and status != 429:
            code, message = _status_of(response)
            if code == 10012:
                return OutOfReachError(
                    f"coingecko refused the window for {symbol}: {message}",
                    provider=self.name,
                    symbol=symbol,
                    hint=f"keyless and Demo access reach back {REACH_DAYS} days only",
                )
            if code in API_KEY_ERRORS:
                return AccessRefusedError(
                    f"coingecko refused the request (error {code}: {message})",
                    provider=self.name,
                    symbol=symbol,
                    hint="check COINGECKO_API_KEY: a Demo key for api.coingecko.com, or unset it",
                )
        return super().classify(response, symbol)

    def check(self) -> float:
        """GET /ping once."""
        started = time.perf_counter()
        self.get("/ping")
        return elapsed_ms(started)

    def _split(self, symbol: str) -> tuple[str, str]:
        if not CRYPTO_PATTERN.fullmatch(symbol):
            raise self._not_listed(symbol, "it serves crypto pairs (BASE-QUOTE) only")
        base, _, quote = symbol.partition("-")
        return base, quote

    def _vs_currency(self, symbol: str) -> str:
        vs = self._split(symbol)[1].lower()
        if vs not in VS_CURRENCIES:
            raise self.not_listed(
                symbol,
                f"{vs} is not a CoinGecko vs_currency",
                hint="quote in USD, EUR, BTC... (USDT is not a vs_currency)",
            )
        return vs

    def _coin_or_none(self, symbol: str | None) -> str | None:
        try:
            return self.provider_symbol(symbol) if symbol else None
        except SymbolNotListedError:
            return None

    def _not_listed(self, symbol: str | None, reason: str) -> SymbolNotListedError:
        return self.not_listed(
            symbol,
            reason,
            hint="map it to a CoinGecko coin id with `marketdata markets add SYMBOL "
            "--provider-symbol coingecko=ID` (the API id on the coin's CoinGecko page)",
        )


def _status_of(response: httpx.Response) -> tuple[int | None, str]:
    """CoinGecko's `status.error_code` (None unless an integer) and `error_message`, flat or
    nested under `error`."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    status = body.get("status") if isinstance(body, dict) else None
    if not isinstance(status, dict):
        status = {}
    code = status.get("error_code")
    message = " ".join(str(status.get("error_message", "")).split())[:200]
    return (code if isinstance(code, int) else None), message
