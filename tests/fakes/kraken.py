"""A fake Kraken speaking its wire format: HTTP 200 always, errors in the `error` list, rows
[time, "o", "h", "l", "c", "vwap", "volume", count] keyed by the canonical pair name, only the
720 most recent rows served, `since` exclusive, the still-open candle always last, and `last`
pointing at the last committed candle. Its clock is fixed (`now`) so tests are deterministic."""

from __future__ import annotations

from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

from tests.fakes.market import walk
from tests.fakes.server import Reply, Request

# Minutes Kraken accepts for `interval`; anything else is EGeneral:Invalid arguments.
INTERVALS = {1, 5, 15, 30, 60, 240, 1440, 10080, 21600}
# altname -> canonical name (legacy assets carry X/Z prefixes, newer ones none)
PAIRS = {
    "XBTUSD": "XXBTZUSD",
    "ETHUSD": "XETHZUSD",
    "ETHXBT": "XETHXXBT",
    "XDGUSD": "XDGUSD",
    "SOLUSD": "SOLUSD",
    "XBTUSDT": "XBTUSDT",
}


def error_body(*errors: str, with_result: bool = False) -> dict[str, Any]:
    """An error reply: usually no `result` key at all, sometimes an empty one."""
    body: dict[str, Any] = {"error": list(errors)}
    if with_result:
        body["result"] = {}
    return body


def encode(row: tuple) -> list[Any]:
    """(ts, o, h, l, c, volume[, count]) -> Kraken's row; an empty period has vwap and count 0."""
    ts, open_, high, low, close, volume = row[:6]
    count = row[6] if len(row) > 6 else (0 if volume == 0 else 1 + int(volume) % 500)
    vwap = 0.0 if count == 0 else (high + low + close) / 3
    return [
        ts,
        f"{open_:.5f}",
        f"{high:.5f}",
        f"{low:.5f}",
        f"{close:.5f}",
        f"{vwap:.5f}",
        f"{volume:.8f}",
        count,
    ]


def zero_filled(ts: int, close: float) -> tuple:
    """The row Kraken sends for a period without trades: OHLC at the prior close, volume 0."""
    return (ts, close, close, close, close, 0.0, 0)


@dataclass
class FakeKraken:
    """State of the fake exchange; tests change it between requests."""

    now: int  # the fake's clock (epoch seconds): decides which candle is still open
    pairs: dict[str, str] = field(default_factory=lambda: dict(PAIRS))
    # canonical pair -> interval minutes -> rows (ts, open, high, low, close, volume[, count])
    candles: dict[str, dict[int, list[tuple]]] = field(default_factory=dict)
    served_rows: int = 720  # live replies were seen holding 707-711
    page_rows: int | None = None  # cap on committed rows per reply, to exercise paging
    fail_next: list[Reply] = field(default_factory=list)  # served first, one per request

    def add(self, pair: str, minutes: int, rows: list[tuple]) -> None:
        """Store rows for a canonical pair name."""
        self.candles.setdefault(pair, {}).setdefault(minutes, []).extend(rows)

    def fill(self, pair: str, minutes: int, count: int, *, seed: int = 1) -> list[tuple]:
        """`count` candles ending with the one open at `now`; returns them (ascending)."""
        step = minutes * 60
        current = self.now - self.now % step
        rows = walk(current - (count - 1) * step, step, count, seed=seed)
        self.add(pair, minutes, rows)
        return rows

    def __call__(self, request: Request) -> Reply:
        if self.fail_next:
            return self.fail_next.pop(0)
        if request.path == "/0/public/Time":
            return Reply(
                200,
                {
                    "error": [],
                    "result": {"unixtime": self.now, "rfc1123": formatdate(self.now, usegmt=True)},
                },
            )
        if request.path != "/0/public/OHLC":
            return Reply(200, error_body("EGeneral:Unknown method"))
        asked = request.query.get("pair", "").upper()
        canonical = self.pairs.get(asked) or (asked if asked in self.pairs.values() else None)
        if canonical is None:
            return Reply(200, error_body("EQuery:Unknown asset pair"))
        try:
            minutes = int(request.query.get("interval", "1"))
            since = int(request.query["since"]) if "since" in request.query else None
        except ValueError:
            return Reply(200, error_body("EGeneral:Invalid arguments"))
        if minutes not in INTERVALS:
            return Reply(200, error_body("EGeneral:Invalid arguments"))
        step = minutes * 60
        current = self.now - self.now % step
        existing = sorted(
            r for r in self.candles.get(canonical, {}).get(minutes, []) if r[0] <= current
        )
        served = existing[-self.served_rows :]
        open_row = served[-1] if served and served[-1][0] == current else None
        committed = served[:-1] if open_row else served
        chosen = [r for r in committed if since is None or r[0] > since]
        if self.page_rows is not None:
            chosen = chosen[: self.page_rows]
        # `last`: the last committed candle sent, else the last one there is
        latest = committed[-1][0] if committed else (since or 0)
        last = chosen[-1][0] if chosen else latest
        rows = [encode(r) for r in chosen]
        if open_row is not None:
            rows.append(encode(open_row))  # present "regardless of the value of since"
        return Reply(200, {"error": [], "result": {canonical: rows, "last": last}})
