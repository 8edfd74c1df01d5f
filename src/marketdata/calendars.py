"""Trading calendars: which bars a market trades, so gaps and synthetic data follow its sessions.

A market names its calendar in one of three ways:

- `24/7`: every bar (crypto);
- `24/5`: every bar of a weekday, UTC (FX);
- an exchange code as exchange_calendars knows it (`XNYS`, `XLON`, `XTKS`, ...): its sessions,
  early closes, lunch breaks and holidays.

Without a calendar stored for the market (`marketdata markets add SYMBOL --calendar CODE`), it
follows from the asset class: crypto trades 24/7, FX 24/5, and equities on the exchange their
ticker's suffix names (`VOD.L` London, `SAP.DE` Xetra, ...), else the New York Stock Exchange.

An intraday bar is a trading bar when it overlaps a session's trading time (outside its
break); a daily bar (00:00 UTC) when its date is a session. exchange_calendars (and pandas)
are imported only when an exchange calendar is first used.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from marketdata.domain import DAY, Interval, is_crypto
from marketdata.errors import InputError

if TYPE_CHECKING:
    from numpy.typing import NDArray

ALWAYS = "24/7"
WEEKDAYS = "24/5"
DEFAULT_EXCHANGE = "XNYS"
_THURSDAY = 3  # 1970-01-01 was a Thursday (Monday is 0)
# Yahoo-style ticker suffixes -> exchange; a symbol without one trades in New York.
SUFFIX_EXCHANGES = {
    ".L": "XLON",
    ".DE": "XETR",
    ".F": "XFRA",
    ".PA": "XPAR",
    ".AS": "XAMS",
    ".BR": "XBRU",
    ".MI": "XMIL",
    ".MC": "XMAD",
    ".SW": "XSWX",
    ".ST": "XSTO",
    ".CO": "XCSE",
    ".HE": "XHEL",
    ".OL": "XOSL",
    ".TO": "XTSE",
    ".T": "XTKS",
    ".HK": "XHKG",
    ".AX": "XASX",
    ".NS": "XBOM",
    ".SI": "XSES",
}
INDEX_EXCHANGES = {"^FTSE": "XLON", "^GDAXI": "XETR", "^FCHI": "XPAR", "^N225": "XTKS"}
# Years an exchange calendar can be built for (pandas timestamps end in 2262), and the years
# it is always built for, so that one build per process serves every usual question.
_FIRST_YEAR, _LAST_YEAR = 1900, 2200
_USUAL_FIRST_YEAR, _USUAL_LAST_YEAR = 1990, 2035


def guess_asset_class(symbol: str) -> str:
    """crypto for BASE-QUOTE pairs, fx for Yahoo-style EURUSD=X, equity for the rest."""
    if is_crypto(symbol):
        return "crypto"
    return "fx" if symbol.endswith("=X") else "equity"


def default_calendar(symbol: str, asset_class: str | None = None) -> str:
    """The calendar a market follows when none is stored for it (see the module docstring)."""
    asset_class = asset_class or guess_asset_class(symbol)
    if asset_class == "crypto":
        return ALWAYS
    if asset_class == "fx":
        return WEEKDAYS
    if symbol in INDEX_EXCHANGES:
        return INDEX_EXCHANGES[symbol]
    dot = symbol.rfind(".")
    return SUFFIX_EXCHANGES.get(symbol[dot:], DEFAULT_EXCHANGE) if dot > 0 else DEFAULT_EXCHANGE


def parse_calendar(raw: str) -> str:
    """A calendar name as stored: 24/7, 24/5 or an exchange code (aliases such as NYSE are
    resolved); InputError naming it otherwise."""
    name = raw.strip().upper()
    if name in (ALWAYS, WEEKDAYS):
        return name
    import exchange_calendars as xcals

    if name not in xcals.get_calendar_names(include_aliases=True):
        raise unknown_calendar(raw)
    return str(xcals.resolve_alias(name))


@dataclass(frozen=True)
class Calendar:
    """One market's trading time."""

    name: str

    def trading(self, ts: NDArray[np.int64], interval: Interval) -> NDArray[np.bool_]:
        """For each bar start (epoch seconds), whether the market trades in that bar."""
        weekday = (ts // DAY + _THURSDAY) % 7 < 5
        if self.name == ALWAYS:
            return np.ones(ts.shape[0], dtype=bool)
        if self.name == WEEKDAYS or ts.shape[0] == 0:
            return weekday
        sessions = _sessions(self.name, *_years(ts))
        if interval is Interval.D1:
            return np.isin(ts // DAY, sessions.days)
        return sessions.overlaps(ts, interval.seconds)

    def bars(self, start: int, end: int, interval: Interval) -> NDArray[np.int64]:
        """The trading bars starting in [start, end), ascending."""
        step = interval.seconds
        first = -(-start // step) * step
        ts = np.arange(first, end, step, dtype=np.int64)
        return ts[self.trading(ts, interval)]


def calendar(name: str) -> Calendar:
    """The calendar of that name (checked when first used for an exchange)."""
    return Calendar(name)


@dataclass(frozen=True)
class _Sessions:
    """An exchange's sessions as epoch seconds: trading periods [open, close) less breaks."""

    days: NDArray[np.int64]  # session dates as days since 1970-01-01
    opens: NDArray[np.int64]
    closes: NDArray[np.int64]
    break_starts: NDArray[np.int64]  # == closes where a session has no break
    break_ends: NDArray[np.int64]

    def overlaps(self, ts: NDArray[np.int64], step: int) -> NDArray[np.bool_]:
        """Bars [t, t + step) that overlap a session's trading time outside its break."""
        # the first session that closes after the bar starts is the only one it can overlap
        # first (sessions do not overlap each other)
        index = np.searchsorted(self.closes, ts, side="right")
        inside = index < self.closes.shape[0]
        i = np.minimum(index, self.closes.shape[0] - 1)
        end = ts + step
        overlaps = inside & (self.opens[i] < end)
        in_break = (ts >= self.break_starts[i]) & (end <= self.break_ends[i])
        trading: NDArray[np.bool_] = overlaps & ~in_break
        return trading


def _years(ts: NDArray[np.int64]) -> tuple[int, int]:
    first = np.datetime64(int(ts[0]), "s").astype("datetime64[Y]").astype(int) + 1970
    last = np.datetime64(int(ts[-1]), "s").astype("datetime64[Y]").astype(int) + 1970
    return (
        max(min(int(first), _USUAL_FIRST_YEAR), _FIRST_YEAR),
        min(max(int(last), _USUAL_LAST_YEAR), _LAST_YEAR),
    )


@lru_cache(maxsize=32)
def _sessions(name: str, first_year: int, last_year: int) -> _Sessions:
    """Sessions of an exchange over whole years, built once per process and range."""
    import exchange_calendars as xcals
    from pandas.errors import PerformanceWarning

    try:
        with warnings.catch_warnings():
            # the library's own use of pandas APIs that pandas has deprecated: not ours to fix
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", PerformanceWarning)
            exchange = xcals.get_calendar(
                name, start=f"{first_year}-01-01", end=f"{last_year}-12-31"
            )
            schedule = exchange.schedule
    except xcals.errors.InvalidCalendarName:
        raise unknown_calendar(name) from None

    def seconds(column: str, fill: NDArray[np.int64] | None = None) -> NDArray[np.int64]:
        values = schedule[column].dt.tz_convert(None).to_numpy().astype("datetime64[s]")
        out: NDArray[np.int64] = values.astype(np.int64)
        if fill is not None:
            out = np.where(np.isnat(values), fill, out).astype(np.int64)
        return out

    closes = seconds("close")
    return _Sessions(
        days=schedule.index.to_numpy().astype("datetime64[D]").astype(np.int64),
        opens=seconds("open"),
        closes=closes,
        break_starts=seconds("break_start", closes),
        break_ends=seconds("break_end", closes),
    )


def unknown_calendar(name: str) -> InputError:
    """The error for a calendar name that is neither 24/7, 24/5 nor a known exchange."""
    return InputError(
        f"unknown trading calendar {name!r}",
        hint="use 24/7, 24/5 or an exchange code such as XNYS, XLON or XTKS "
        "(exchange_calendars' names)",
    )
