"""Yahoo Finance chart v8: column arrays with nulls, daily bars moved to the UTC-midnight grid.

- `GET /v8/finance/chart/{symbol}?period1=&period2=&interval=` answers `chart.result[0]` with a
  `timestamp` array and `indicators.quote[0]` column arrays (open/high/low/close/volume).
- Nulls inside the arrays (holidays, halts, sparse intraday bars) are skipped: a row whose
  open, high, low and close are all null is a bar with no data. A row with only some of them
  null is half a bar and fails the fetch. A null volume next to real prices becomes 0.
- Daily timestamps are the session open in UTC (14:30 UTC for New York), not midnight: each
  daily bar is moved to UTC midnight of its trading date in `meta.exchangeTimezoneName`, so it
  sits on the 1d grid. Intraday timestamps are kept as sent (off-grid ones, such as New York's
  60m bars at :30, are for the validation step to judge).
- Intervals: 1m 5m 15m 1h (sent as 60m) 1d; Yahoo has no 6h. Intraday reach is capped:
  1m within the last 30 days and at most 7 days per request, 5m/15m within 60 days, 1h within
  730 days. Windows beyond the reach raise OutOfReachError before any request; 1m is paged
  by 7 days.
- Symbols pass through (BTC-USD, AAPL, ^GSPC, EURUSD=X), URL-encoded in the path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from marketdata.domain import DAY, Candles, Interval, Window, utc_from_epoch
from marketdata.errors import (
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

EPOCH = date(1970, 1, 1)
WIRE_INTERVALS = {
    Interval.M1: "1m",
    Interval.M5: "5m",
    Interval.M15: "15m",
    Interval.H1: "60m",
    Interval.D1: "1d",
}
# How far back each intraday interval is served (yfinance #356 #636 #1389, yahooquery #21).
REACH = {
    Interval.M1: 30 * DAY,
    Interval.M5: 60 * DAY,
    Interval.M15: 60 * DAY,
    Interval.H1: 730 * DAY,
}
# 1m: "Only 7 days worth of 1m granularity data are allowed to be fetched per request".
PAGE_SPAN = {Interval.M1: 7 * DAY}
# Keep clear of the reach edge: Yahoo's clock runs on while our request travels.
REACH_MARGIN = 300
# Phrases of the 400 that says an intraday window is beyond the reach.
OUT_OF_REACH_PHRASES = ("must be within the last", "data not available for starttime", "7 days")


class YahooProvider(HttpProvider):
    """Yahoo chart v8 (`GET /v8/finance/chart/{symbol}`), unofficial and keyless."""

    name: ClassVar[str] = "yahoo"
    intervals: ClassVar[frozenset[Interval]] = frozenset(WIRE_INTERVALS)
    # One reply holds the whole range; only 1m is capped (7 days = 10080 bars per request).
    max_rows_per_request: ClassVar[int] = 7 * 1440
    # Undocumented, IP-based, quick to answer 429 (quantmod #363): about one request a second.
    rate_limit: ClassVar[RateLimit] = RateLimit(per_second=1.0, burst=4)

    def __init__(self, ctx: ProviderContext) -> None:
        super().__init__(ctx)
        # The clock that decides the intraday reach; tests pin it.
        self.now: Callable[[], float] = ctx.clock

    def fetch(self, symbol: str, interval: Interval, window: Window) -> Candles:
        """Candles in `window`; intraday windows beyond Yahoo's reach are refused up front."""
        self.require_interval(interval)
        reach = REACH.get(interval)
        first = interval.floor(window.start)
        if reach is not None and window.start < window.end:
            earliest = self.now() - reach + REACH_MARGIN
            if first < earliest:
                since = utc_from_epoch(-(-earliest // DAY) * DAY).date().isoformat()
                raise OutOfReachError(
                    f"yahoo serves {interval.value} candles for the last {reach // DAY} days "
                    f"only; the window for {symbol} starts "
                    f"{utc_from_epoch(first).isoformat(timespec='minutes')}",
                    provider=self.name,
                    symbol=symbol,
                    hint=f"start on or after {since}, or use a coarser interval",
                )
        return super().fetch(symbol, interval, window)

    def pages(self, interval: Interval, window: Window) -> Iterator[Window]:
        """One page for the whole window, except 1m: 7 days per request."""
        span = PAGE_SPAN.get(interval)
        start = interval.floor(window.start)
        if span is None:
            if start < window.end:
                yield Window(start, window.end)
            return
        while start < window.end:
            end = min(start + span, window.end)
            yield Window(start, end)
            start = end

    def fetch_page(self, symbol: str, interval: Interval, page: Window) -> Candles:
        """One chart request; daily pages ask one extra day each side (see `_daily_ts`)."""
        ticker = quote(self.provider_symbol(symbol), safe="")
        start, end = page.start, page.end
        if interval is Interval.D1:
            # Session opens fall on the previous UTC date east of UTC (Sydney opens 23:00 UTC).
            start, end = start - DAY, end + DAY
        params = {
            "period1": start,
            "period2": end,
            "interval": WIRE_INTERVALS[interval],
            "includePrePost": "false",
        }
        response = self.get(f"/v8/finance/chart/{ticker}", params, symbol=symbol)
        if response.status_code == 400:
            # classify() let this through: "Data doesn't exist for startDate = ..., endDate".
            return Candles.empty(symbol, interval, self.name)
        payload = self.json(response, symbol)
        result = self._result(symbol, payload)
        return self._parse(symbol, interval, result)

    def _result(self, symbol: str, payload: Any) -> dict[str, Any]:
        chart = payload.get("chart") if isinstance(payload, dict) else None
        if not isinstance(chart, dict):
            raise bad_row(self.name, symbol, payload, "no chart object")
        error = chart.get("error")
        if error:
            # Errors also arrive with HTTP 200.
            raise self._chart_error(symbol, error)
        result = chart.get("result")
        if not isinstance(result, list) or not result or not isinstance(result[0], dict):
            raise bad_row(self.name, symbol, chart, "chart.result is not a list of one result")
        return result[0]

    def _parse(self, symbol: str, interval: Interval, result: dict[str, Any]) -> Candles:
        stamps = result.get("timestamp")
        if stamps is None:
            # No bar in the range: Yahoo leaves out `timestamp` and sends empty quote columns.
            return Candles.empty(symbol, interval, self.name)
        if not isinstance(stamps, list):
            raise bad_row(self.name, symbol, stamps, "timestamp is not an array")
        meta = result.get("meta")
        if not isinstance(meta, dict):
            raise bad_row(self.name, symbol, result.get("meta"), "no meta object")
        columns = self._columns(symbol, result, len(stamps))
        zone = self._zone(symbol, meta) if interval is Interval.D1 else None
        rows = []
        for i, ts in enumerate(stamps):
            values = [columns[name][i] for name in ("open", "high", "low", "close")]
            volume = columns["volume"][i] if "volume" in columns else None
            shown = (ts, *values, volume)
            try:
                epoch_int(ts)
            except ValueError:
                raise bad_row(
                    self.name, symbol, shown, "timestamp is not integer epoch seconds"
                ) from None
            if all(v is None for v in values):
                continue  # a bar without data (holiday, halt, sparse intraday): normal
            if any(not _is_number(v) for v in values):
                raise bad_row(
                    self.name, symbol, shown, "open/high/low/close partly null or not numbers"
                )
            if volume is not None and not _is_number(volume):
                raise bad_row(self.name, symbol, shown, "volume is not a number")
            bar = _daily_ts(ts, zone) if zone is not None else ts
            rows.append((bar, *map(float, values), float(volume or 0)))
        return Candles.from_rows(symbol, interval, self.name, rows)

    def _columns(self, symbol: str, result: dict[str, Any], size: int) -> dict[str, list[Any]]:
        indicators = result.get("indicators")
        quotes = indicators.get("quote") if isinstance(indicators, dict) else None
        if not isinstance(quotes, list) or not quotes or not isinstance(quotes[0], dict):
            raise bad_row(self.name, symbol, indicators, "no indicators.quote[0] object")
        columns: dict[str, list[Any]] = {}
        for name in ("open", "high", "low", "close", "volume"):
            column = quotes[0].get(name)
            if column is None and name == "volume":
                continue  # volume is optional; prices are not
            if not isinstance(column, list) or len(column) != size:
                raise bad_row(
                    self.name, symbol, {name: column}, f"{name} column does not match timestamp"
                )
            columns[name] = column
        return columns

    def _zone(self, symbol: str, meta: dict[str, Any]) -> tzinfo:
        name = meta.get("exchangeTimezoneName")
        if isinstance(name, str) and name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                pass
        offset = meta.get("gmtoffset")
        if isinstance(offset, int) and not isinstance(offset, bool) and abs(offset) < DAY:
            return timezone(timedelta(seconds=offset))
        raise bad_row(
            self.name, symbol, {"exchangeTimezoneName": name, "gmtoffset": offset},
            "no usable exchange time zone for daily bars",
        )  # fmt: skip

    def _chart_error(self, symbol: str | None, error: Any) -> ProviderError:
        code, description = _describe(error)
        if code == "not found" or "delisted" in description.lower():
            return self._not_listed(symbol, description)
        return BadPayloadError(
            f"yahoo refused the request for {symbol}: {description or code or error!r}",
            provider=self.name,
            symbol=symbol,
        )

    def classify(self, response: httpx.Response, symbol: str | None) -> ProviderError | None:
        """404 is an unknown symbol; a 400 about the intraday window is out of reach."""
        status = response.status_code
        if status == 404:
            _, description = _describe(_chart_error_of(response))
            return self._not_listed(symbol, description)
        if status == 400:
            error = _chart_error_of(response)
            _, description = _describe(error)
            lowered = description.lower()
            if any(phrase in lowered for phrase in OUT_OF_REACH_PHRASES):
                return OutOfReachError(
                    f"yahoo does not serve that window for {symbol}: {description}",
                    provider=self.name,
                    symbol=symbol,
                )
            if "doesn't exist for startdate" in lowered:
                return None  # nothing in the range: fetch_page returns no candles
            if error is not None:
                return self._chart_error(symbol, error)
        return super().classify(response, symbol)

    def check(self) -> float:
        """One daily bar of SPY."""
        started = time.perf_counter()
        self.get("/v8/finance/chart/SPY", {"range": "1d", "interval": "1d"})
        return elapsed_ms(started)

    def _not_listed(self, symbol: str | None, description: str) -> SymbolNotListedError:
        detail = f" ({description})" if description else ""
        return SymbolNotListedError(
            f"yahoo does not list {symbol}{detail}",
            provider=self.name,
            symbol=symbol,
            hint="check the symbol (Yahoo spells indices ^GSPC and FX EURUSD=X), or map it with "
            "`marketdata markets add SYMBOL --provider-symbol yahoo=TICKER`",
        )


def _daily_ts(ts: int, zone: tzinfo) -> int:
    """UTC midnight of the trading date that a session-open timestamp falls on locally."""
    local = datetime.fromtimestamp(ts, tz=UTC).astimezone(zone).date()
    return (local - EPOCH).days * DAY


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _chart_error_of(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        return None
    chart = body.get("chart") if isinstance(body, dict) else None
    return chart.get("error") if isinstance(chart, dict) else None


def _describe(error: Any) -> tuple[str, str]:
    """(lower-cased code, description) of a `chart.error` object."""
    if not isinstance(error, dict):
        return "", ""
    code = str(error.get("code") or "").lower()
    description = " ".join(str(error.get("description") or "").split())[:200]
    return code, description
