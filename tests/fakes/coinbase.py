"""A fake Coinbase Exchange speaking its wire format: newest-first [time, low, high, open,
close, volume] rows, 300-bucket cap (400), 404 NotFound, 429 when throttled, missing buckets."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from tests.fakes.server import Reply, Request

GRANULARITIES = {60, 300, 900, 3600, 21600, 86400}


@dataclass
class FakeCoinbase:
    """State of the fake exchange; tests change it between requests."""

    # product id -> granularity -> rows (ts, open, high, low, close, volume)
    candles: dict[str, dict[int, list[tuple]]] = field(default_factory=dict)
    fail_next: list[Reply] = field(default_factory=list)  # served first, one per request
    early_rows: int = 0  # extra rows before `start`, as the real API sometimes sends

    def add(self, product: str, granularity: int, rows: list[tuple]) -> None:
        self.candles.setdefault(product, {}).setdefault(granularity, []).extend(rows)

    def __call__(self, request: Request) -> Reply:
        if self.fail_next:
            return self.fail_next.pop(0)
        parts = request.path.strip("/").split("/")
        if parts[-1] == "ticker" and len(parts) == 3:
            return Reply(
                200,
                {
                    "trade_id": 1,
                    "price": "1.0",
                    "size": "1",
                    "time": "2024-01-01T00:00:00Z",
                    "bid": "1",
                    "ask": "1",
                    "volume": "1",
                },
            )
        if len(parts) != 3 or parts[0] != "products" or parts[2] != "candles":
            return Reply(404, {"message": "NotFound"})
        product = parts[1].upper()
        if product not in self.candles:
            return Reply(404, {"message": "NotFound"})
        granularity = int(request.query.get("granularity", "0") or 0)
        if granularity not in GRANULARITIES:
            return Reply(400, {"message": "Unsupported granularity"})
        rows = self.candles[product].get(granularity, [])
        if "start" in request.query and "end" in request.query:
            start = _iso(request.query["start"])
            end = _iso(request.query["end"])
            if (end - start) // granularity + 1 > 300:
                return Reply(
                    400,
                    {
                        "message": "granularity too small for the requested time range. "
                        "Count of aggregations requested exceeds 300"
                    },
                )
            lo = start - self.early_rows * granularity
            chosen = [r for r in rows if lo <= r[0] <= end]
        else:
            chosen = rows[-300:]
        body = [[r[0], r[3], r[2], r[1], r[4], r[5]] for r in sorted(chosen, reverse=True)]
        return Reply(200, body)


def _iso(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())
