"""A fake CoinGecko API v3 speaking its wire format: /coins/{id}/market_chart/range with
parallel [ms, value] arrays whose granularity follows the span (hourly up to 90 days, one
00:00 point a day above), 404 {"error":"coin not found"}, 401 error_code 10012 beyond 365 days,
429 with a status.error_code body and an optional retry-after, and /ping."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from tests.fakes.server import Reply, Request

HOUR = 3600
DAY = 86_400
VS = {"usd", "eur", "gbp", "btc", "eth", "jpy"}
RATE_LIMITED = {
    "status": {
        "error_code": 429,
        "error_message": "You've exceeded the Rate Limit. Please visit "
        "https://www.coingecko.com/en/api/pricing to subscribe to our API plans for higher "
        "rate limits.",
    }
}


def hourly_points(start: int, hours: int, *, seed: int = 7, offset: int = 41) -> list[tuple]:
    """(ms, price, volume) points every hour from `start`, each `offset` s past the hour,
    as CoinGecko's hourly points are (never exactly on the hour)."""
    rng = random.Random(seed)
    price = 40_000.0
    points = []
    for i in range(hours):
        price = max(1.0, price * (1 + rng.gauss(0, 0.004)))
        volume = 2.0e10 + 1.0e9 * math.sin(i / 24)
        points.append(((start + i * HOUR + offset) * 1000, round(price, 2), round(volume, 1)))
    return points


@dataclass
class FakeCoinGecko:
    """State of the fake API; tests change it between requests."""

    now: int  # the fake's clock (seconds), for the 365-day reach
    # coin id -> (ms, price, volume) points, hourly
    coins: dict[str, list[tuple]] = field(default_factory=dict)
    fail_next: list[Reply] = field(default_factory=list)  # served first, one per request
    body_override: object | None = None  # replaces the chart body (bad-payload tests)
    demo_reach: bool = True  # keyless/Demo: history only within the past 365 days
    required_key: str | None = None  # when set, answer 401 10002 unless this key is sent

    def __call__(self, request: Request) -> Reply:
        if self.fail_next:
            return self.fail_next.pop(0)
        if self.required_key is not None and (
            request.headers.get("x-cg-demo-api-key") != self.required_key
        ):
            return Reply(
                401,
                {"status": {"error_code": 10002, "error_message": "API Key Missing"}},
            )
        parts = request.path.strip("/").split("/")
        if parts[-1] == "ping":
            return Reply(200, {"gecko_says": "(V3) To the Moon!"})
        if len(parts) < 4 or parts[-4] != "coins" or parts[-2:] != ["market_chart", "range"]:
            return Reply(404, {"error": "Not Found"})
        coin = parts[-3]
        if coin not in self.coins:
            return Reply(404, {"error": "coin not found"})
        vs = request.query.get("vs_currency", "")
        if vs not in VS:
            return Reply(400, {"error": "invalid vs_currency"})
        try:
            start = float(request.query["from"])
            end = float(request.query["to"])
        except (KeyError, ValueError):
            return Reply(400, {"error": "invalid from/to"})
        if self.demo_reach and start < self.now - 365 * DAY:
            return Reply(
                401,
                {"error": {"status": {
                    "timestamp": "2024-04-20T22:00:05.123+00:00",
                    "error_code": 10012,
                    "error_message": "Your request exceeds the allowed time range. Public API "
                    "users are limited to querying historical data within the past 365 days. "
                    "Upgrade to a paid plan to enjoy full historical data access: "
                    "https://www.coingecko.com/en/api/pricing. ",
                }}},
            )  # fmt: skip
        if self.body_override is not None:
            return Reply(200, self.body_override)
        chosen = [p for p in self.coins[coin] if start * 1000 <= p[0] <= end * 1000]
        if end - start > 90 * DAY:
            # daily granularity: one point a day, at the first sample of each UTC day
            daily: dict[int, tuple] = {}
            for point in chosen:
                daily.setdefault(
                    point[0] // 1000 // DAY, (point[0] // 1000 // DAY * DAY * 1000, *point[1:])
                )
            chosen = list(daily.values())
        return Reply(
            200,
            {
                "prices": [[p[0], p[1]] for p in chosen],
                "market_caps": [[p[0], p[1] * 19_600_000] for p in chosen],
                "total_volumes": [[p[0], p[2]] for p in chosen],
            },
        )
