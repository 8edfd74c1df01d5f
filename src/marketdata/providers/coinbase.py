"""Coinbase Exchange public candles: rows [time, low, high, open, close, volume], newest first."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from marketdata.domain import Candles, Interval, Window, utc_from_epoch
from marketdata.errors import ProviderError
from marketdata.providers.base import HttpProvider, bad_row, elapsed_ms, epoch_int
from marketdata.providers.ratelimit import RateLimit

if TYPE_CHECKING:
    import httpx


class CoinbaseProvider(HttpProvider):
    """Coinbase Exchange (`GET /products/{id}/candles`); product ids are BASE-QUOTE as ours."""

    name: ClassVar[str] = "coinbase"
    intervals: ClassVar[frozenset[Interval]] = frozenset(
        {Interval.M1, Interval.M5, Interval.M15, Interval.H1, Interval.H6, Interval.D1}
    )
    # Coinbase rejects (400) a start/end range holding more than 300 buckets.
    max_rows_per_request: ClassVar[int] = 300
    # Documented public limit: 10 requests/s per IP, bursts of 15.
    rate_limit: ClassVar[RateLimit] = RateLimit(per_second=10.0, burst=15)
    symbol_word: ClassVar[str] = "PRODUCT"

    def fetch_page(self, symbol: str, interval: Interval, page: Window) -> Candles:
        """One request of at most 300 buckets; rows before `start` or missing are normal."""
        product = self.provider_symbol(symbol)
        # end is inclusive on Coinbase: ask up to the last bucket that starts inside the page
        last = page.end - interval.seconds
        params = {
            "granularity": interval.seconds,
            "start": utc_from_epoch(page.start).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "end": utc_from_epoch(max(last, page.start)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        response = self.get(f"/products/{product}/candles", params, symbol=symbol)
        payload = self.json(response, symbol)
        if not isinstance(payload, list):
            raise bad_row(self.name, symbol, payload, "expected a JSON array of candles")
        return self._parse(symbol, interval, payload)

    def _parse(self, symbol: str, interval: Interval, payload: list[Any]) -> Candles:
        rows = []
        for row in payload:
            if not isinstance(row, list) or len(row) < 6:
                raise bad_row(
                    self.name, symbol, row, "expected [time, low, high, open, close, volume]"
                )
            try:
                low, high, open_, close, volume = map(float, row[1:6])
            except (TypeError, ValueError):
                raise bad_row(self.name, symbol, row, "a value is not a number") from None
            try:
                ts = epoch_int(row[0])
            except ValueError:
                raise bad_row(self.name, symbol, row, "time is not integer epoch seconds") from None
            rows.append((ts, open_, high, low, close, volume))
        return Candles.from_rows(symbol, interval, self.name, rows)

    def classify(self, response: httpx.Response, symbol: str | None) -> ProviderError | None:
        """404 (`NotFound`) means the product is not listed."""
        if response.status_code == 404:
            return self.not_listed(symbol)
        return super().classify(response, symbol)

    def check(self) -> float:
        """Fetch the BTC-USD ticker once."""
        import time

        started = time.perf_counter()
        self.get("/products/BTC-USD/ticker")
        return elapsed_ms(started)
