"""Stooq daily CSV (`/q/d/l/?s=aapl.us&i=d&d1=&d2=`): plain-text errors at HTTP 200, API key.

- The reply is CSV `Date,Open,High,Low,Close[,Volume]`, oldest first, the whole range at once.
  A missing Volume column (indices, FX) or an empty volume field means volume 0.
- Every error is HTTP 200 text. A body is accepted only when its first line starts `Date,`:
  - `No data`: unknown symbol, or nothing in the asked range. To tell these apart the request
    starts 14 days before the window (a listed, trading symbol then always has rows, which are
    cut off afterwards), so `No data` raises SymbolNotListedError naming both possibilities.
  - `Exceeded the daily hits limit`: the per-IP daily quota is spent. It is raised as a
    transient ProviderUnavailableError from `fetch_page`, after `get()` returned, so that the
    shared retry loop does not hammer a quota that only resets tomorrow; later fetches in the
    same run fail at once without a request.
  - HTML (the "get an API key" page, or the `/__verify` proof-of-work bot check): a
    AccessRefusedError saying STOOQ_API_KEY is missing or refused, or a bot check blocked us.
- Since about March 2026 downloads need an API key, sent as the `apikey` query parameter (the
  parameter name is unverified). It is a secret: error messages never carry the URL, and any
  body text shown in one has the key masked.
- Symbols: AAPL -> aapl.us (a plain ticker is a US stock), BRK.B -> brk-b.us, TSCO.UK ->
  tsco.uk, ^GSPC -> ^spx (a few index aliases, other ^ names lower-cased), EURUSD=X -> eurusd.
  Crypto pairs are not served. Daily candles only.
"""

from __future__ import annotations

import csv
import time
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, ClassVar

from marketdata.domain import DAY, Candles, Interval, Window, is_crypto
from marketdata.errors import (
    AccessRefusedError,
    BadPayloadError,
    ProviderError,
    ProviderUnavailableError,
    SymbolNotListedError,
)
from marketdata.providers.base import HttpProvider, bad_row, elapsed_ms, finite_number
from marketdata.providers.ratelimit import RateLimit
from marketdata.redact import MASK

if TYPE_CHECKING:
    import httpx

    from marketdata.providers.base import ProviderContext

EPOCH = date(1970, 1, 1)
# How far before the window the request starts, so that "No data" means "not listed".
LOOKBACK_DAYS = 14
NO_DATA = "No data"
DAILY_LIMIT = "Exceeded the daily hits limit"
APIKEY_PAGE = "https://stooq.com/q/d/?s=spy.us&get_apikey"
# Yahoo-style index names -> Stooq's.
INDEX_ALIASES = {"^GSPC": "^spx", "^DJI": "^dji", "^IXIC": "^ndq", "^NDX": "^ndx"}
# Stooq's market suffixes, passed through as they are.
MARKETS = frozenset({"us", "uk", "de", "jp", "hk", "pl", "hu"})
# Yahoo's exchange suffixes with a Stooq equivalent.
YAHOO_SUFFIXES = {"l": "uk", "t": "jp"}


class StooqProvider(HttpProvider):
    """Stooq (`GET /q/d/l/`), daily only, one request per window."""

    name: ClassVar[str] = "stooq"
    intervals: ClassVar[frozenset[Interval]] = frozenset({Interval.D1})
    # No paging and no row cap: the full history comes in one reply.
    max_rows_per_request: ClassVar[int] = 100_000
    # Undocumented, with a per-IP daily quota: be polite.
    rate_limit: ClassVar[RateLimit] = RateLimit(per_second=1.0, burst=2)

    def __init__(self, ctx: ProviderContext) -> None:
        super().__init__(ctx)
        self._quota_spent = False

    def map_symbol(self, symbol: str) -> str:
        """AAPL -> aapl.us, BRK.B -> brk-b.us, ^GSPC -> ^spx, EURUSD=X -> eurusd."""
        if symbol in INDEX_ALIASES:
            return INDEX_ALIASES[symbol]
        if is_crypto(symbol):
            raise self._not_listed(symbol, "crypto pairs are not served")
        lowered = symbol.lower()
        if lowered.startswith("^"):
            return lowered
        if lowered.endswith("=x") and len(lowered) == 8:
            return lowered[:6]
        if "." in lowered:
            base, _, suffix = lowered.rpartition(".")
            if suffix in MARKETS:
                return lowered
            if suffix in YAHOO_SUFFIXES:
                return f"{base}.{YAHOO_SUFFIXES[suffix]}"
            if len(suffix) == 1:
                return f"{base}-{suffix}.us"  # a US share class: BRK.B is brk-b.us
            return lowered
        return f"{lowered}.us"

    def fetch(self, symbol: str, interval: Interval, window: Window) -> Candles:
        """Daily candles in `window`; once the daily quota is spent, fail without asking."""
        self.require_interval(interval)
        if self._quota_spent:
            raise self._quota_error(symbol)
        return super().fetch(symbol, interval, window)

    def fetch_page(self, symbol: str, interval: Interval, page: Window) -> Candles:
        """One CSV download for the page, started LOOKBACK_DAYS early."""
        first = _day(page.start - LOOKBACK_DAYS * DAY)
        last = _day(max(page.start, page.end - 1))  # d2 is inclusive
        text = self._download(symbol, first, last)
        return self._parse(symbol, interval, text)

    def _download(self, symbol: str, first: date, last: date) -> str:
        params = {
            "s": self.provider_symbol(symbol),
            "i": "d",
            "d1": first.strftime("%Y%m%d"),
            "d2": last.strftime("%Y%m%d"),
        }
        key = self.ctx.settings.api_key(self.name)
        if key:
            params["apikey"] = key
        response = self.get("/q/d/l/", params, symbol=symbol)
        text = response.text.lstrip("\ufeff")
        if text.strip().startswith(DAILY_LIMIT):
            # Raised here rather than from classify(): no retry can help before tomorrow.
            self._quota_spent = True
            self.ctx.metrics.incr(f"provider.{self.name}.errors")
            raise self._quota_error(symbol)
        return text

    def _parse(self, symbol: str, interval: Interval, text: str) -> Candles:
        lines = [line for line in text.splitlines() if line.strip()]
        reader = csv.reader(lines)
        header = [name.strip().lower() for name in next(reader, [])]
        try:
            at = {name: header.index(name) for name in ("date", "open", "high", "low", "close")}
        except ValueError:
            raise bad_row(self.name, symbol, lines[0], "CSV header lacks a price column") from None
        volume_at = header.index("volume") if "volume" in header else None
        rows = []
        for fields in reader:
            if len(fields) != len(header):
                raise bad_row(self.name, symbol, ",".join(fields), "wrong number of fields")
            ts = _parse_date(fields[at["date"]])
            if ts is None:
                raise bad_row(self.name, symbol, ",".join(fields), "date is not YYYY-MM-DD")
            try:
                prices = [
                    finite_number(fields[at[name]]) for name in ("open", "high", "low", "close")
                ]
                raw_volume = fields[volume_at].strip() if volume_at is not None else ""
                volume = finite_number(raw_volume) if raw_volume else 0.0
            except ValueError:
                raise bad_row(
                    self.name, symbol, ",".join(fields), "a value is not a number"
                ) from None
            rows.append((ts, *prices, volume))
        return Candles.from_rows(symbol, interval, self.name, rows)

    def classify(self, response: httpx.Response, symbol: str | None) -> ProviderError | None:
        """Plain-text and HTML errors hidden in 200 bodies; the key never shows in a message."""
        if response.status_code != 200:
            error = super().classify(response, symbol)
            if error is not None:
                error.args = (self._hide_key(error.message),)
                error.message = error.args[0]
            return error
        text = response.text.lstrip("\ufeff").strip()
        if text.startswith(("Date,", DAILY_LIMIT)):
            return None  # CSV; or the quota, which fetch_page raises outside the retries
        if text.startswith(NO_DATA):
            where = self._stooq_name(symbol)
            return SymbolNotListedError(
                f"stooq has no data for {symbol}{where}: it does not list it, or has no "
                f"candles in or up to {LOOKBACK_DAYS} days before the window",
                provider=self.name,
                symbol=symbol,
                hint="check the symbol, or map it with `marketdata markets add SYMBOL "
                "--provider-symbol stooq=NAME` (e.g. aapl.us, ^spx)",
            )
        head = text[:4000].lower()
        if head.startswith("<") or "<html" in head:
            return self._html_error(symbol, head)
        first_line = self._hide_key(" ".join(text.splitlines()[0][:80].split())) if text else ""
        return BadPayloadError(
            f"stooq sent a body that is not its CSV for {symbol} (first line: {first_line!r})",
            provider=self.name,
            symbol=symbol,
        )

    def _html_error(self, symbol: str | None, head: str) -> AccessRefusedError:
        has_key = bool(self.ctx.settings.api_key(self.name))
        if "__verify" in head:
            message = "stooq answered with a bot-check page (/__verify) instead of CSV"
            hint = "Stooq challenges non-browser clients at times; try later or another provider"
        elif "apikey" in head or "api key" in head:
            if has_key:
                message = "stooq refused STOOQ_API_KEY (it answered with its API-key page)"
                hint = f"check STOOQ_API_KEY; a new key comes from {APIKEY_PAGE}"
            else:
                message = "stooq requires an API key (it answered with its API-key page)"
                hint = f"get one at {APIKEY_PAGE} and set STOOQ_API_KEY"
        else:
            message = "stooq answered with an HTML page instead of CSV"
            hint = "STOOQ_API_KEY may be required or invalid, or a bot check blocked the request"
        return AccessRefusedError(
            f"{message} for {symbol}", provider=self.name, symbol=symbol, hint=hint
        )

    def check(self) -> float:
        """Download the last two weeks of ^spx once."""
        today = datetime.now(tz=UTC).date()
        started = time.perf_counter()
        self._download("^GSPC", date.fromordinal(today.toordinal() - LOOKBACK_DAYS), today)
        return elapsed_ms(started)

    def _quota_error(self, symbol: str) -> ProviderUnavailableError:
        return ProviderUnavailableError(
            f"stooq's daily download quota is spent (asked for {symbol})",
            provider=self.name,
            symbol=symbol,
            hint="Stooq counts downloads per IP per day; try again tomorrow or another provider",
        )

    def _stooq_name(self, symbol: str | None) -> str:
        try:
            return f" ({self.provider_symbol(symbol)})" if symbol else ""
        except SymbolNotListedError:
            return ""

    def _hide_key(self, text: str) -> str:
        key = self.ctx.settings.api_key(self.name)
        return text.replace(key, MASK) if key else text

    def _not_listed(self, symbol: str, reason: str) -> SymbolNotListedError:
        return SymbolNotListedError(
            f"stooq does not list {symbol}: {reason}",
            provider=self.name,
            symbol=symbol,
            hint="map it with `marketdata markets add SYMBOL --provider-symbol stooq=NAME` "
            "(Stooq names look like aapl.us, ^spx, eurusd)",
        )


def _day(epoch: int) -> date:
    return date.fromordinal(EPOCH.toordinal() + epoch // DAY)


def _parse_date(text: str) -> int | None:
    """Epoch seconds of a `YYYY-MM-DD` (or old `YYYYMMDD`) date, at UTC midnight."""
    text = text.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
        elif len(text) == 8 and text.isdigit():
            day = date(int(text[:4]), int(text[4:6]), int(text[6:]))
        else:
            return None
    except ValueError:
        return None
    return (day - EPOCH).days * DAY
