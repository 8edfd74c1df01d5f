"""Local CSV files of OHLCV: found by symbol under a folder or by a per-market path override."""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import ClassVar

import numpy as np

from marketdata.domain import Candles, Interval, Window
from marketdata.errors import BadPayloadError, SymbolNotListedError
from marketdata.providers.base import BaseProvider
from marketdata.providers.ratelimit import RateLimit

# Header names, lower-cased, that name each column; the first present wins.
_TIME_NAMES = ("ts", "timestamp", "datetime", "time", "date")
_PRICE_COLUMNS = ("open", "high", "low", "close")
_DELIMITERS = (",", ";", "\t")
_COMPACT_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")  # YYYYMMDD, as old Stooq files have
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Epoch numbers above 1e11 are milliseconds (1e11 s is the year 5138), above 1e14
# microseconds, above 1e17 nanoseconds.
_EPOCH_SCALES = ((1e17, 1e9), (1e14, 1e6), (1e11, 1e3))


class CsvProvider(BaseProvider):
    """OHLCV imported from local CSV files; one read per fetch, filtered to the window.

    Lookup for a symbol and interval: the market's override (`--provider-symbol csv=PATH`,
    a file, or a folder holding SYMBOL_<interval>.csv or SYMBOL.csv), else
    `root`/SYMBOL_<interval>.csv, then `root`/SYMBOL.csv. The file is trusted to hold bars of
    the asked interval; off-grid rows are left to the validation step.
    """

    name: ClassVar[str] = "csv"
    intervals: ClassVar[frozenset[Interval]] = frozenset(Interval)
    # A whole file is read at once, so there are no pages.
    max_rows_per_request: ClassVar[int] = 1_000_000_000
    # Local disk: no limit worth the name.
    rate_limit: ClassVar[RateLimit] = RateLimit(per_second=10_000.0, burst=10_000, shared=False)
    root: Path = Path("data")

    def locate(self, symbol: str, interval: Interval) -> Path:
        """The file holding `symbol`'s candles, or SymbolNotListedError naming where it looked."""
        override = self._overrides.get(symbol)
        if override:
            given = Path(override).expanduser()
            if given.is_file():
                return given
            candidates = _candidates(given, symbol, interval) if given.is_dir() else [given]
        else:
            candidates = _candidates(self.root, symbol, interval)
        for path in candidates:
            if path.is_file():
                return path
        looked = ", ".join(str(p) for p in candidates)
        raise SymbolNotListedError(
            f"csv has no file for {symbol} (looked in {looked})",
            provider=self.name,
            symbol=symbol,
            hint="put the candles in one of those files, or point at a file or folder with "
            f"`marketdata markets add {symbol} --provider-symbol csv=PATH`",
        )

    def requests_needed(self, interval: Interval, window: Window) -> int:
        """One file read per fetch."""
        return 1

    def fetch(self, symbol: str, interval: Interval, window: Window) -> Candles:
        """Read the symbol's file; ascending, one row per timestamp (last wins), in the window."""
        self.require_interval(interval)
        path = self.locate(symbol, interval)
        parsed = read_csv(path, self.name, symbol)
        return parsed.candles(symbol, interval, self.name).normalised(window.start, window.end)

    def check(self) -> float:
        """Nothing to reach: local files are read when fetched."""
        return 0.0


def _candidates(folder: Path, symbol: str, interval: Interval) -> list[Path]:
    return [folder / f"{symbol}_{interval.value}.csv", folder / f"{symbol}.csv"]


@dataclass
class ParsedCsv:
    """Columns read from one CSV file, in file order."""

    ts: list[int] = field(default_factory=list)
    open: list[float] = field(default_factory=list)
    high: list[float] = field(default_factory=list)
    low: list[float] = field(default_factory=list)
    close: list[float] = field(default_factory=list)
    volume: list[float] = field(default_factory=list)

    def candles(self, symbol: str, interval: Interval, provider: str) -> Candles:
        """The rows as a Candles batch (numpy columns), unsorted; the values are Python floats,
        which numpy stores as float64 (only the times need their dtype named, for no rows)."""
        return Candles(
            symbol,
            interval,
            provider,
            np.array(self.ts, dtype=np.int64),
            np.array(self.open),
            np.array(self.high),
            np.array(self.low),
            np.array(self.close),
            np.array(self.volume),
        )


class _BadValue(ValueError):
    """One field that cannot be read; its message names the column and value."""


@dataclass(frozen=True)
class _Layout:
    """Where each column is in a row (header-mapped or positional)."""

    time: int
    prices: tuple[int, int, int, int]
    volume: int | None
    clock: int | None = None  # a separate time-of-day column beside a date column
    width: int = 0  # fewest fields a row must have

    @classmethod
    def positional(cls) -> _Layout:
        """No header: ts, open, high, low, close and, when present, volume."""
        return cls(0, (1, 2, 3, 4), 5, width=5)


def read_csv(path: Path, provider: str, symbol: str) -> ParsedCsv:
    """Parse a CSV of candles; BadPayloadError names the first bad line and counts the rest."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise BadPayloadError(
            f"csv {path} is not UTF-8 text", provider=provider, symbol=symbol
        ) from None
    except OSError as exc:
        raise BadPayloadError(
            f"csv cannot read {path}: {exc.strerror or exc}", provider=provider, symbol=symbol
        ) from None
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), "")
    delimiter = max(_DELIMITERS, key=first.count)
    decimal_comma = delimiter != ","
    parsed = ParsedCsv()
    layout: _Layout | None = None
    errors: list[str] = []
    reader = csv.reader(lines, delimiter=delimiter)
    for fields in reader:
        if not fields or all(not f.strip() for f in fields):
            continue
        line = reader.line_num
        if layout is None:
            if _is_header(fields, decimal_comma):
                try:
                    layout = _layout_from_header(fields)
                except _BadValue as exc:
                    raise BadPayloadError(
                        f"csv {path} line {line}: {exc}", provider=provider, symbol=symbol
                    ) from None
                continue
            layout = _Layout.positional()
        try:
            _parse_row(fields, layout, decimal_comma, parsed)
        except _BadValue as exc:
            errors.append(f"line {line}: {exc}")
    if errors:
        more = f" (and {len(errors) - 1} more bad lines)" if len(errors) > 1 else ""
        raise BadPayloadError(f"csv {path} {errors[0]}{more}", provider=provider, symbol=symbol)
    return parsed


def _is_header(fields: list[str], decimal_comma: bool) -> bool:
    """A first line none of whose fields is a number or a timestamp names the columns."""
    for value in fields:
        try:
            _timestamp(value)
        except _BadValue:
            pass
        else:
            return False
        try:
            _number(value, "field", decimal_comma)
        except _BadValue:
            pass
        else:
            return False
    return True


def _layout_from_header(fields: list[str]) -> _Layout:
    names = [f.strip().lower() for f in fields]

    def position(name: str) -> int | None:
        return names.index(name) if name in names else None

    missing = [c for c in _PRICE_COLUMNS if c not in names]
    time_name = next((n for n in _TIME_NAMES if n in names), None)
    if time_name is None or missing:
        lacks = ", ".join(
            ([] if time_name else ["a time (ts, time, timestamp, date or datetime)"]) + missing
        )
        raise _BadValue(f"header lacks {lacks} column (it has: {', '.join(fields)})")
    clock = None
    if time_name == "time" and "date" in names:
        # Date and Time columns (MetaTrader-style exports): read them as one timestamp
        time_name, clock = "date", names.index("time")
    time_at = names.index(time_name)
    o, h, lo, c = (names.index(c) for c in _PRICE_COLUMNS)
    volume = position("volume")
    used = [time_at, o, h, lo, c, *(i for i in (volume, clock) if i is not None)]
    return _Layout(time_at, (o, h, lo, c), volume, clock, width=max(used) + 1)


def _parse_row(fields: list[str], layout: _Layout, decimal_comma: bool, out: ParsedCsv) -> None:
    if len(fields) < layout.width:
        raise _BadValue(f"expected at least {layout.width} fields, got {len(fields)}")
    raw_time = fields[layout.time]
    if layout.clock is not None and fields[layout.clock].strip():
        raw_time = f"{raw_time.strip()}T{fields[layout.clock].strip()}"
    ts = _timestamp(raw_time)
    o, h, lo, c = (
        _number(fields[i], name, decimal_comma)
        for i, name in zip(layout.prices, _PRICE_COLUMNS, strict=True)
    )
    volume = 0.0
    if layout.volume is not None and layout.volume < len(fields):
        raw = fields[layout.volume]
        # an empty volume field means none was recorded (indices, FX)
        volume = _number(raw, "volume", decimal_comma) if raw.strip() else 0.0
    out.ts.append(ts)
    out.open.append(o)
    out.high.append(h)
    out.low.append(lo)
    out.close.append(c)
    out.volume.append(volume)


def _number(raw: str, column: str, decimal_comma: bool) -> float:
    text = raw.strip()
    if decimal_comma and "," in text and "." not in text:
        text = text.replace(",", ".")  # 187,15 in semicolon-separated European exports
    try:
        value = float(text)
    except ValueError:
        raise _BadValue(f"{column} {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise _BadValue(f"{column} {raw!r} is not a finite number")
    return value


def _epoch_number(text: str) -> int | None:
    """Epoch seconds from a plain number of seconds, ms, us or ns; None if not a number."""
    try:
        integer = int(text)
    except ValueError:
        try:
            number = float(text)
        except ValueError:
            return None
        if not math.isfinite(number):
            return None
        for limit, scale in _EPOCH_SCALES:
            if abs(number) > limit:
                return math.floor(number / scale)
        return math.floor(number)
    for limit, scale in _EPOCH_SCALES:
        if abs(integer) > limit:
            return integer // int(scale)  # exact for integers of any size
    return integer


def _timestamp(raw: str) -> int:
    """Epoch seconds from ISO 8601 (naive is UTC), YYYYMMDD, or epoch s / ms / us / ns."""
    text = raw.strip()
    compact = _COMPACT_DATE.fullmatch(text)
    if compact:
        try:
            day = date(int(compact[1]), int(compact[2]), int(compact[3]))
        except ValueError:
            pass  # not a date: read it as an epoch number below
        else:
            return (day - _EPOCH.date()).days * 86_400
    epoch = _epoch_number(text)
    if epoch is not None:
        return epoch
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise _BadValue(
            f"time {raw!r} is not a timestamp (ISO 8601 or epoch seconds/milliseconds)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return math.floor((moment - _EPOCH).total_seconds())
