"""Kraken public OHLC: string rows, errors in 200 bodies, only the latest 720 candles served."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from marketdata.domain import Candles, Interval, Window, is_crypto, utc_from_epoch
from marketdata.errors import (
    BadPayloadError,
    OutOfReachError,
    ProviderError,
    ProviderUnavailableError,
)
from marketdata.providers.base import HttpProvider, bad_row, elapsed_ms, epoch_int, finite_number
from marketdata.providers.ratelimit import RateLimit

if TYPE_CHECKING:
    import httpx

    from marketdata.providers.base import ProviderContext

OHLC_PATH = "/0/public/OHLC"
# Kraken "returns up to 720 of the most recent entries (older data cannot be retrieved,
# regardless of the value of since)"; the count includes the still-open candle.
SERVED_ROWS = 720
# Live replies were seen holding 707-711 rows instead of 720 (ccxt/ccxt#5682). A reply about
# that full which starts later than asked was cut by the cap, not by a listing date.
FULL_REPLY_SLACK = 30
# Kraken's interval parameter is in minutes; it offers 240 (4h) and 1440 but no 6h.
MINUTES: dict[Interval, int] = {
    Interval.M1: 1,
    Interval.M5: 5,
    Interval.M15: 15,
    Interval.H1: 60,
    Interval.D1: 1440,
}
# Kraken's own asset codes (ccxt commonCurrencies: XBT -> BTC, XDG -> DOGE).
ASSET_CODES = {"BTC": "XBT", "DOGE": "XDG"}
UNKNOWN_PAIR = "EQuery:Unknown asset pair"
# Rate limits and service trouble: worth a retry (ccxt maps these to DDoSProtection /
# ExchangeNotAvailable). Internal error and Temporary lockout pass too, as 5xx and 418 do.
TRANSIENT_ERRORS = frozenset(
    {
        "EGeneral:Too many requests",
        "EAPI:Rate limit exceeded",
        "EService:Unavailable",
        "EService:Busy",
        "EGeneral:Internal error",
        "EGeneral:Temporary lockout",
    }
)
RATE_LIMIT_ERRORS = frozenset(
    {"EGeneral:Too many requests", "EAPI:Rate limit exceeded", "EGeneral:Temporary lockout"}
)
# No Retry-After is sent; Kraken says calls over the limit are "restricted for a few seconds".
RATE_LIMIT_PAUSE = 5.0


class KrakenProvider(HttpProvider):
    """Kraken spot (`GET /0/public/OHLC`); pairs are Kraken altnames such as XBTUSD."""

    name: ClassVar[str] = "kraken"
    intervals: ClassVar[frozenset[Interval]] = frozenset(MINUTES)
    max_rows_per_request: ClassVar[int] = SERVED_ROWS
    # Kraken support: "calling the public endpoints at a frequency of 1 per second (or less)
    # would remain within the rate limits"; ccxt uses rateLimit 1000 ms.
    rate_limit: ClassVar[RateLimit] = RateLimit(per_second=1.0, burst=1)

    def __init__(self, ctx: ProviderContext) -> None:
        super().__init__(ctx)
        # Which candles are still open, and how far back Kraken reaches, depend on the clock;
        # tests replace this with a fixed time.
        self.now: Callable[[], float] = ctx.clock

    def map_symbol(self, symbol: str) -> str:
        """BTC-USD -> XBTUSD: Kraken calls BTC XBT and DOGE XDG; crypto pairs only."""
        if not is_crypto(symbol):
            raise self.not_listed(symbol, "it lists crypto pairs (BASE-QUOTE) only")
        base, quote = symbol.split("-")
        return ASSET_CODES.get(base, base) + ASSET_CODES.get(quote, quote)

    def requests_needed(self, interval: Interval, window: Window) -> int:
        """One request covers everything Kraken serves; none when no closed bar is wanted."""
        first, last = self._wanted(interval, window, int(self.now()))
        return 1 if first <= last else 0

    def fetch(self, symbol: str, interval: Interval, window: Window) -> Candles:
        """Closed candles inside `window`, paging forward with `since = last`."""
        self.require_interval(interval)
        pair = self.provider_symbol(symbol)
        now = int(self.now())
        step = interval.seconds
        first, last_needed = self._wanted(interval, window, now)
        if first > last_needed:
            return Candles.empty(symbol, interval, self.name)
        oldest = interval.floor(now) - (SERVED_ROWS - 1) * step
        if first < oldest:
            raise self._out_of_reach(symbol, interval, oldest, first)
        rows: list[tuple[int, float, float, float, float, float]] = []
        reached = first - step  # the latest closed bar received so far
        since = first - 1  # `since` is exclusive: ask from just before the first bar
        # each page advances `since` by at least one bar, so this bounds a misbehaving server
        for page_no in range((last_needed - first) // step + 2):
            params = {"pair": pair, "interval": MINUTES[interval], "since": since}
            response = self.get(OHLC_PATH, params, symbol=symbol)
            page, last = self._parse(symbol, self.json(response, symbol))
            if (
                page_no == 0
                and page
                and page[0][0] > first
                and len(page) >= (SERVED_ROWS - FULL_REPLY_SLACK)
            ):
                raise self._out_of_reach(symbol, interval, page[0][0], first, served=len(page))
            # the last row is the still-open candle: keep only periods that have closed
            closed = [row for row in page if row[0] + step <= now]
            rows.extend(closed)
            reached = max([reached, *(row[0] for row in closed)])
            if reached >= last_needed or last <= since:
                break
            since = last
        else:
            raise BadPayloadError(
                f"kraken kept paging past {utc_from_epoch(since).isoformat()} without reaching "
                f"the end of the window for {symbol}",
                provider=self.name,
                symbol=symbol,
            )
        batch = Candles.from_rows(symbol, interval, self.name, rows)
        return batch.normalised(window.start, window.end)

    def _wanted(self, interval: Interval, window: Window, now: int) -> tuple[int, int]:
        """First bar starting in the window, and the last one that is both in it and closed."""
        step = interval.seconds
        first = -(-window.start // step) * step
        last_in_window = -(-window.end // step) * step - step
        last_closed = interval.floor(now) - step
        return first, min(last_in_window, last_closed)

    def _out_of_reach(
        self, symbol: str, interval: Interval, oldest: int, first: int, served: int = SERVED_ROWS
    ) -> OutOfReachError:
        told = "serves only the latest" if served == SERVED_ROWS else f"served only {served} of"
        return OutOfReachError(
            f"kraken {told} {SERVED_ROWS} {interval.value} candles "
            f"(since {utc_from_epoch(oldest).isoformat()}); the window starts at "
            f"{utc_from_epoch(first).isoformat()}",
            provider=self.name,
            symbol=symbol,
            hint="older candles cannot be fetched from Kraken at all: use another provider "
            "for the backfill, or shorten the window",
        )

    def _parse(
        self, symbol: str, payload: Any
    ) -> tuple[list[tuple[int, float, float, float, float, float]], int]:
        """Rows (ts, open, high, low, close, volume) and `last` from an OHLC reply."""
        result = payload.get("result") if isinstance(payload, dict) else None
        if not isinstance(result, dict):
            raise bad_row(self.name, symbol, payload, "expected an object with a `result` object")
        keys = [key for key in result if key != "last"]
        # the key is Kraken's canonical name (XXBTZUSD), not the altname that was sent
        if len(keys) != 1:
            raise bad_row(self.name, symbol, result, "expected exactly one pair in `result`")
        last = result.get("last")
        if not isinstance(last, int) or isinstance(last, bool):
            raise bad_row(self.name, symbol, result, "`last` is not an integer time")
        data = result[keys[0]]
        if not isinstance(data, list):
            raise bad_row(self.name, symbol, data, "expected a list of candles")
        rows = []
        for row in data:
            if not isinstance(row, list) or len(row) < 8:
                raise bad_row(
                    self.name,
                    symbol,
                    row,
                    "expected [time, open, high, low, close, vwap, volume, count]",
                )
            try:
                epoch_int(row[0])
            except ValueError:
                raise bad_row(self.name, symbol, row, "time is not integer epoch seconds") from None
            try:
                open_, high, low, close = (finite_number(value) for value in row[1:5])
                volume = finite_number(row[6])
            except ValueError:
                raise bad_row(self.name, symbol, row, "a value is not a number") from None
            rows.append((int(row[0]), open_, high, low, close, volume))
        return rows, last

    def classify(self, response: httpx.Response, symbol: str | None) -> ProviderError | None:
        """Kraken answers errors with HTTP 200 and a non-empty `error` list."""
        if response.status_code != 200:
            return super().classify(response, symbol)
        try:
            payload = response.json()
        except ValueError:
            return None  # `json()` reports it as a bad payload, without retrying
        raw = payload.get("error") if isinstance(payload, dict) else None
        # entries are "<severity><category>:<message>"; W... are warnings beside a result
        errors = (
            [e for e in raw if isinstance(e, str) and e.startswith("E")]
            if isinstance(raw, list)
            else []
        )
        if not errors:
            return None
        if UNKNOWN_PAIR in errors:
            pair = self.provider_symbol(symbol) if symbol else "?"
            return self.not_listed(symbol, f"asked for pair {pair}")
        transient = [e for e in errors if e in TRANSIENT_ERRORS]
        if transient:
            limited = any(e in RATE_LIMIT_ERRORS for e in transient)
            return ProviderUnavailableError(
                f"kraken answered {', '.join(errors)}",
                provider=self.name,
                symbol=symbol,
                retry_after=RATE_LIMIT_PAUSE if limited else None,
            )
        return BadPayloadError(
            f"kraken refused the request: {', '.join(errors)}", provider=self.name, symbol=symbol
        )

    def check(self) -> float:
        """Ask Kraken for its server time once."""
        started = time.perf_counter()
        self.get("/0/public/Time")
        return elapsed_ms(started)
