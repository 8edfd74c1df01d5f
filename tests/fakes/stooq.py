"""A fake Stooq daily CSV download (/q/d/l/) speaking its wire format: `Date,Open,High,Low,
Close[,Volume]` with CRLF line ends, oldest first, d1/d2 inclusive, and every error as HTTP 200
text: `No data`, `Exceeded the daily hits limit`, the HTML API-key page and the /__verify bot
check."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from tests.fakes.server import Reply, Request

CSV = {"Content-Type": "text/csv"}
HTML = {"Content-Type": "text/html; charset=utf-8"}
APIKEY_PAGE = (
    "<!DOCTYPE html><html><head><title>Stooq</title></head><body>"
    "<p>Data downloads now require an API key.</p>"
    '<a href="https://stooq.com/q/d/?s=spy.us&get_apikey">Get your apikey</a></body></html>'
)
CHALLENGE_PAGE = (
    "<!DOCTYPE html><html><head><title>Just a moment</title></head><body>"
    '<form method="POST" action="/__verify"><input type="hidden" name="pow" value="8f1c">'
    "</form><script>/* proof of work */</script></body></html>"
)


@dataclass
class Series:
    """One Stooq symbol: (YYYY-MM-DD, open, high, low, close, volume) rows, as text or numbers."""

    rows: list[tuple] = field(default_factory=list)
    volume: bool = True  # indices and FX come without the Volume column


@dataclass
class FakeStooq:
    """State of the fake site; tests change it between requests."""

    series: dict[str, Series] = field(default_factory=dict)
    fail_next: list[Reply] = field(default_factory=list)  # served first, one per request
    mode: str = "csv"  # csv | apikey (HTML key page) | challenge (HTML /__verify) | limit
    required_key: str | None = None  # when set, the key page unless apikey= matches
    raw_body: str | None = None  # replaces the CSV (bad-payload tests)

    def __call__(self, request: Request) -> Reply:
        if self.fail_next:
            return self.fail_next.pop(0)
        if request.path.rstrip("/") != "/q/d/l":
            return Reply(404, "<html>404</html>", HTML)
        if self.mode == "challenge":
            return Reply(200, CHALLENGE_PAGE, HTML)
        if self.mode == "apikey" or (
            self.required_key is not None and request.query.get("apikey") != self.required_key
        ):
            return Reply(200, APIKEY_PAGE, HTML)
        if self.mode == "limit":
            return Reply(200, "Exceeded the daily hits limit", CSV)
        symbol = request.query.get("s", "").lower()
        series = self.series.get(symbol)
        if series is None or request.query.get("i", "d") != "d":
            return Reply(200, "No data", CSV)
        first = _day(request.query.get("d1"), date.min)
        last = _day(request.query.get("d2"), date.max)
        rows = [r for r in series.rows if first <= date.fromisoformat(r[0]) <= last]
        if not rows:
            return Reply(200, "No data", CSV)
        if self.raw_body is not None:
            return Reply(200, self.raw_body, CSV)
        header = "Date,Open,High,Low,Close" + (",Volume" if series.volume else "")
        lines = [header]
        for row in rows:
            fields = row if series.volume else row[:5]
            lines.append(",".join(str(v) for v in fields))
        return Reply(200, "\r\n".join(lines) + "\r\n", CSV)


def _day(text: str | None, default: date) -> date:
    if not text:
        return default
    return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
