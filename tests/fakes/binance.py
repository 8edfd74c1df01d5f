"""A fake Binance spot speaking its wire format: ascending 12-field klines in ms with string
numbers, limit 500 by default and 1000 at most, {"code", "msg"} errors (-1121, -1120, -1130,
-1102), request weight reported in X-MBX-USED-WEIGHT-1M on every reply, 429 once the minute's
weight is spent and 418 bans (both with Retry-After), and a 451 geo-block mode."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.fakes.server import Reply, Request

# Binance's interval names and their length in seconds (1M, the month, has no fixed length).
INTERVALS = {
    "1s": 1, "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "2h": 7200,
    "4h": 14_400, "6h": 21_600, "8h": 28_800, "12h": 43_200, "1d": 86_400, "3d": 259_200,
    "1w": 604_800, "1M": 2_592_000,
}  # fmt: skip
WEIGHTS = {"/api/v3/klines": 2, "/api/v3/ping": 1, "/api/v3/time": 1}
GEO_BLOCK = (
    "Service unavailable from a restricted location according to 'b. Eligibility' in "
    "https://www.binance.com/en/terms. Please contact customer service if you believe you "
    "received this message in error."
)


def error(status: int, code: int, msg: str, **headers: str) -> Reply:
    """A Binance error reply."""
    return Reply(status, {"code": code, "msg": msg}, dict(headers))


def rate_limited(retry_after: int = 7) -> Reply:
    """The 429 Binance sends when the minute's request weight is spent."""
    return error(
        429,
        -1003,
        "Too many requests; current limit of IP(127.0.0.1) is 6000 requests per minute. "
        "Please use the websocket for live updates to avoid polling the API.",
        **{"Retry-After": str(retry_after)},
    )


def banned(retry_after: int = 120, until_ms: int = 1_620_286_253_180) -> Reply:
    """The 418 Binance sends to an IP that kept going after 429s."""
    return error(
        418,
        -1003,
        f"Way too much request weight used; IP banned until {until_ms}. "
        "Please use the websocket for live updates to avoid bans.",
        **{"Retry-After": str(retry_after)},
    )


def encode(row: tuple, step: int) -> list[Any]:
    """(ts s, open, high, low, close, volume) -> Binance's 12-field kline."""
    ts, open_, high, low, close, volume = row[:6]
    open_ms = ts * 1000
    quote_volume = volume * close
    return [
        open_ms,
        f"{open_:.8f}",
        f"{high:.8f}",
        f"{low:.8f}",
        f"{close:.8f}",
        f"{volume:.8f}",
        open_ms + step * 1000 - 1,
        f"{quote_volume:.8f}",
        int(volume * 7) + 1,
        f"{volume / 2:.8f}",
        f"{quote_volume / 2:.8f}",
        "0",
    ]


@dataclass
class FakeBinance:
    """State of the fake exchange; tests change it between requests."""

    # symbol (BTCUSDT) -> interval name (1d) -> rows (ts, open, high, low, close, volume)
    candles: dict[str, dict[str, list[tuple]]] = field(default_factory=dict)
    used_weight: int = 0  # this minute's weight, reported on every reply
    weight_limit: int = 6000  # REQUEST_WEIGHT per minute; over it the answer is 429
    retry_after: int = 7
    geo_blocked: bool = False  # answer everything with 451, as for US and some cloud IPs
    fail_next: list[Reply] = field(default_factory=list)  # served first, one per request

    def add(self, symbol: str, interval: str, rows: list[tuple]) -> None:
        """Store rows for a Binance symbol and interval name."""
        self.candles.setdefault(symbol, {}).setdefault(interval, []).extend(rows)

    def new_minute(self) -> None:
        """The minute rolled over: the weight counter starts again."""
        self.used_weight = 0

    def __call__(self, request: Request) -> Reply:
        reply = self._answer(request)
        headers = {**reply.headers, "X-MBX-USED-WEIGHT-1M": str(self.used_weight)}
        return Reply(reply.status, reply.body, headers, reply.delay)

    def _answer(self, request: Request) -> Reply:
        if self.geo_blocked:
            return error(451, 0, GEO_BLOCK)
        if self.fail_next:
            return self.fail_next.pop(0)
        weight = WEIGHTS.get(request.path)
        if weight is None:
            return Reply(404, "<html><body><h1>404 Not Found</h1></body></html>")
        if self.used_weight + weight > self.weight_limit:
            return rate_limited(self.retry_after)
        self.used_weight += weight
        if request.path == "/api/v3/ping":
            return Reply(200, {})
        if request.path == "/api/v3/time":
            return Reply(200, {"serverTime": 1_704_067_200_000})
        return self._klines(request.query)

    def _klines(self, query: dict[str, str]) -> Reply:
        for name in ("symbol", "interval"):
            if not query.get(name):
                return error(
                    400,
                    -1102,
                    f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.",
                )
        symbol, interval = query["symbol"], query["interval"]
        if symbol not in self.candles:
            return error(400, -1121, "Invalid symbol.")
        if interval not in INTERVALS:
            return error(400, -1120, "Invalid interval.")
        try:
            limit = int(query.get("limit", "500"))  # 500 even when start and end are given
            start = int(query["startTime"]) if "startTime" in query else None
            end = int(query["endTime"]) if "endTime" in query else None
        except ValueError:
            return error(400, -1100, "Illegal characters found in a parameter.")
        if not 1 <= limit <= 1000:
            return error(400, -1130, "Data sent for parameter 'limit' is not valid.")
        rows = sorted(self.candles[symbol].get(interval, []))
        if end is not None:
            rows = [r for r in rows if r[0] * 1000 <= end]
        if start is not None:
            rows = [r for r in rows if r[0] * 1000 >= start][:limit]
        else:
            rows = rows[-limit:]  # "the most recent klines are returned"
        step = INTERVALS[interval]
        return Reply(200, [encode(r, step) for r in rows])
