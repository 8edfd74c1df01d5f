"""A fake Yahoo Finance chart v8 speaking its wire format: chart.result[0] with meta, a timestamp
array and indicators.quote[0] column arrays holding nulls, daily bars stamped at the session
open, 404/200 chart.error bodies, 400 for intraday windows over the caps, and a plain-text 429
"Too Many Requests" when the User-Agent does not look like a browser."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any
from urllib.parse import unquote
from zoneinfo import ZoneInfo

from tests.fakes.server import Reply, Request

DAY = 86_400
VALID = ["1m", "2m", "5m", "15m", "30m", "60m", "90m", "1h", "1d", "5d", "1wk", "1mo", "3mo"]
# interval -> (how far back it is served, longest span per request), in seconds
CAPS = {
    "1m": (30 * DAY, 7 * DAY),
    "2m": (60 * DAY, None),
    "5m": (60 * DAY, None),
    "15m": (60 * DAY, None),
    "30m": (60 * DAY, None),
    "90m": (60 * DAY, None),
    "60m": (730 * DAY, None),
    "1h": (730 * DAY, None),
}
NOT_FOUND = {
    "chart": {
        "result": None,
        "error": {"code": "Not Found", "description": "No data found, symbol may be delisted"},
    }
}


def session_open(day: date, zone: str, at: time = time(9, 30)) -> int:
    """The UTC epoch of a session opening at local `at` on `day` (how Yahoo stamps daily bars)."""
    return int(datetime.combine(day, at, tzinfo=ZoneInfo(zone)).timestamp())


@dataclass
class Listing:
    """One symbol: its exchange time zone and its bars per wire interval."""

    timezone: str = "America/New_York"
    gmtoffset: int | None = -18000
    currency: str = "USD"
    instrument: str = "EQUITY"
    # wire interval ("1d", "5m", "60m"...) -> rows (ts, open, high, low, close, volume); the
    # values may be None (bars without data) or anything else a bad-payload test wants
    bars: dict[str, list[tuple]] = field(default_factory=dict)


@dataclass
class FakeYahoo:
    """State of the fake API; tests change it between requests."""

    now: int  # the fake's clock (seconds), for the intraday caps
    listings: dict[str, Listing] = field(default_factory=dict)
    fail_next: list[Reply] = field(default_factory=list)  # served first, one per request
    browser_only: bool = True  # 429 unless the User-Agent contains "Mozilla"
    empty_as_400: bool = False  # "Data doesn't exist" 400 instead of an empty result
    error_in_200: dict[str, Any] | None = None  # {"code":..., "description":...} sent with 200
    drop_meta_zone: bool = False  # leave exchangeTimezoneName out of meta

    def __call__(self, request: Request) -> Reply:
        if self.browser_only and "Mozilla" not in request.headers.get("user-agent", ""):
            return Reply(429, "Too Many Requests")
        if self.fail_next:
            return self.fail_next.pop(0)
        prefix = "/v8/finance/chart/"
        if not request.path.startswith(prefix):
            return Reply(404, "<html>Not Found</html>")
        symbol = unquote(request.path[len(prefix) :])
        listing = self.listings.get(symbol)
        if listing is None:
            return Reply(404, NOT_FOUND)
        if self.error_in_200 is not None:
            return Reply(200, {"chart": {"result": None, "error": self.error_in_200}})
        interval = request.query.get("interval", "1d")
        if interval not in VALID:
            return _bad_request(
                f"Invalid input - interval={interval} is not supported. Valid intervals: "
                "[1m, 2m, 5m, 15m, 30m, 60m, 90m, 1h, 1d, 5d, 1wk, 1mo, 3mo]"
            )
        if "range" in request.query:
            period2 = self.now
            period1 = period2 - DAY
        else:
            period1 = int(request.query.get("period1", "0"))
            period2 = int(request.query.get("period2", str(self.now)))
        if interval in CAPS:
            reach, span = CAPS[interval]
            head = f"{interval} data not available for startTime={period1} and endTime={period2}."
            if span is not None and period2 - period1 > span:
                return _bad_request(
                    f"{head} Only 7 days worth of {interval} granularity data are allowed to "
                    "be fetched per request."
                )
            if period1 < self.now - reach:
                return _bad_request(
                    f"{head} The requested range must be within the last {reach // DAY} days."
                )
        wire = "60m" if interval == "1h" else interval
        rows = [r for r in listing.bars.get(wire, []) if period1 <= r[0] < period2]
        if not rows and self.empty_as_400:
            return _bad_request(
                f"Data doesn't exist for startDate = {period1}, endDate = {period2}"
            )
        return Reply(200, {"chart": {"result": [self._result(symbol, listing, wire, rows)],
                                     "error": None}})  # fmt: skip

    def _result(self, symbol: str, listing: Listing, wire: str, rows: list[tuple]) -> dict:
        meta: dict[str, Any] = {
            "currency": listing.currency,
            "symbol": symbol,
            "exchangeName": "NMS",
            "instrumentType": listing.instrument,
            "firstTradeDate": 345479400,
            "regularMarketTime": self.now,
            "timezone": "EST",
            "exchangeTimezoneName": listing.timezone,
            "regularMarketPrice": 181.91,
            "chartPreviousClose": 192.53,
            "priceHint": 2,
            "dataGranularity": wire,
            "range": "",
            "validRanges": ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max"],
        }
        if listing.gmtoffset is not None:
            meta["gmtoffset"] = listing.gmtoffset
        if self.drop_meta_zone:
            del meta["exchangeTimezoneName"]
        result: dict[str, Any] = {"meta": meta}
        if not rows:
            # what Yahoo sends for a range without bars: no timestamp, empty quote columns
            result["indicators"] = {"quote": [{}]}
            return result
        result["timestamp"] = [r[0] for r in rows]
        quote = {
            name: [r[i] for r in rows]
            for i, name in enumerate(("open", "high", "low", "close", "volume"), start=1)
        }
        result["indicators"] = {"quote": [quote]}
        if wire == "1d":
            result["events"] = {"dividends": {}, "splits": {}}
            result["indicators"]["adjclose"] = [{"adjclose": [r[4] for r in rows]}]
        return result


def _bad_request(description: str) -> Reply:
    return Reply(
        400,
        {"chart": {"result": None, "error": {"code": "Bad Request", "description": description}}},
    )
