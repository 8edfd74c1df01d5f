"""Domain values: symbols, intervals, candle batches (as columns) and run outcomes."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import TYPE_CHECKING, Any

import numpy as np

from marketdata.errors import InputError, UnsupportedIntervalError

if TYPE_CHECKING:
    from numpy.typing import NDArray

# Canonical symbols: BASE-QUOTE for crypto (BTC-USD), tickers for equities (AAPL, BRK.B, ^GSPC,
# EURUSD=X). Upper-case letters, digits and . ^ = - only; 1 to 24 characters.
SYMBOL_PATTERN = re.compile(r"^[A-Z0-9^][A-Z0-9.=^-]{0,23}$")
CRYPTO_PATTERN = re.compile(r"^[A-Z0-9]{2,10}-[A-Z0-9]{2,10}$")


def parse_symbol(raw: str) -> str:
    """Normalise one symbol to its canonical form, or raise InputError naming it."""
    symbol = raw.strip().upper()
    if not SYMBOL_PATTERN.fullmatch(symbol):
        raise InputError(
            f"invalid symbol {raw!r}",
            hint="use BASE-QUOTE for crypto (BTC-USD) or a ticker (AAPL); "
            "letters, digits and . ^ = - only, at most 24 characters",
        )
    return symbol


def parse_symbols(values: Sequence[str]) -> list[str]:
    """Split comma lists, normalise, and drop repeats while keeping the given order."""
    seen: dict[str, None] = {}
    for value in values:
        for part in value.split(","):
            if part.strip():
                seen.setdefault(parse_symbol(part), None)
    return list(seen)


def is_crypto(symbol: str) -> bool:
    """Crypto pairs trade every day; everything else is treated as an equity calendar."""
    return bool(CRYPTO_PATTERN.fullmatch(symbol))


class Interval(Enum):
    """Bar lengths the tool knows; each provider declares which of them it serves."""

    M1 = "1m"
    M5 = "5m"
    M15 = "15m"
    H1 = "1h"
    H6 = "6h"
    D1 = "1d"

    # members are singletons compared by identity: hash the identity in C, not the name in
    # Python (Enum's own __hash__), as every (symbol, interval) key of a run's bookkeeping is
    __hash__ = object.__hash__

    @property
    def seconds(self) -> int:
        """Length of one bar in seconds."""
        return _INTERVAL_SECONDS[self.value]

    @property
    def bars_per_day(self) -> int:
        """How many bars of this length make one 24-hour day."""
        return DAY // self.seconds

    @classmethod
    def parse(cls, raw: str) -> Interval:
        """Parse '1d', '1h' ... or raise an UnsupportedIntervalError listing the choices."""
        try:
            return cls(raw.strip().lower())
        except ValueError:
            choices = ", ".join(i.value for i in cls)
            raise UnsupportedIntervalError(
                f"unknown interval {raw!r}", hint=f"choose one of {choices}"
            ) from None

    def floor(self, epoch: int) -> int:
        """The start of the bar that contains `epoch` (seconds)."""
        return epoch - epoch % self.seconds

    def __str__(self) -> str:
        return self.value


DAY = 86_400
"""Seconds in a day: the one place this number is written."""

_INTERVAL_SECONDS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "6h": 21_600, "1d": DAY}


def utc_from_epoch(epoch: int | float) -> datetime:
    """An aware UTC datetime from epoch seconds."""
    return datetime.fromtimestamp(epoch, tz=UTC)


def epoch_of(moment: datetime) -> int:
    """Epoch seconds of an aware datetime (naive ones are refused: time is always UTC here)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: every time in marketdata is UTC-aware")
    return int(moment.timestamp())


@dataclass(frozen=True, slots=True)
class Candles:
    """A batch of candles for one (symbol, interval), held as columns.

    `ts` is int64 epoch seconds (bar start, UTC); prices and volume are float64. Bulk data
    travels like this so the hot path never builds one object per row.
    """

    symbol: str
    interval: Interval
    provider: str
    ts: NDArray[np.int64]
    open: NDArray[np.float64]
    high: NDArray[np.float64]
    low: NDArray[np.float64]
    close: NDArray[np.float64]
    volume: NDArray[np.float64]
    # derived columns by public name ("return", "log_return", ...), row-aligned; None when
    # this batch carries none (intervals outside ANALYTICS_INTERVALS)
    indicators: Mapping[str, NDArray[np.float64]] | None = None

    @classmethod
    def from_columns(
        cls,
        symbol: str,
        interval: Interval,
        provider: str,
        ts: Any,
        open: Any,
        high: Any,
        low: Any,
        close: Any,
        volume: Any,
    ) -> Candles:
        """Build a batch from any array-likes; None in a price or volume becomes NaN."""
        return cls(
            symbol,
            interval,
            provider,
            np.asarray(ts, dtype=np.int64),
            _floats(open),
            _floats(high),
            _floats(low),
            _floats(close),
            _floats(volume),
        )

    @classmethod
    def from_rows(
        cls, symbol: str, interval: Interval, provider: str, rows: Sequence[Sequence[Any]]
    ) -> Candles:
        """Build a batch from (ts, open, high, low, close, volume) rows."""
        if not rows:
            return cls.empty(symbol, interval, provider)
        cols = list(zip(*rows, strict=True))
        return cls.from_columns(symbol, interval, provider, *cols)

    @classmethod
    def empty(cls, symbol: str, interval: Interval, provider: str) -> Candles:
        """A batch with no rows."""
        return cls.from_columns(symbol, interval, provider, [], [], [], [], [], [])

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def take(self, index: Any) -> Candles:
        """The rows selected by a boolean mask, slice or index array, as a new batch."""
        return Candles(
            self.symbol,
            self.interval,
            self.provider,
            self.ts[index],
            self.open[index],
            self.high[index],
            self.low[index],
            self.close[index],
            self.volume[index],
            None if self.indicators is None else {k: v[index] for k, v in self.indicators.items()},
        )

    def with_indicators(self, columns: Mapping[str, NDArray[np.float64]] | None) -> Candles:
        """The same rows carrying these derived columns."""
        return Candles(
            self.symbol,
            self.interval,
            self.provider,
            self.ts,
            self.open,
            self.high,
            self.low,
            self.close,
            self.volume,
            columns,
        )

    def normalised(self, start: int | None = None, end: int | None = None) -> Candles:
        """Sorted by time, one row per timestamp (the last one given wins), within [start, end)."""
        order = np.argsort(self.ts, kind="stable")
        batch = self.take(order)
        if len(batch) > 1:
            # keep the last of each run of equal timestamps
            keep = np.append(batch.ts[1:] != batch.ts[:-1], True)
            batch = batch.take(keep)
        mask = np.ones(len(batch), dtype=bool)
        if start is not None:
            mask &= batch.ts >= start
        if end is not None:
            mask &= batch.ts < end
        return batch if mask.all() else batch.take(mask)

    def concat(self, other: Candles) -> Candles:
        """This batch followed by another of the same pair (derived columns are dropped)."""
        return Candles(
            self.symbol,
            self.interval,
            self.provider,
            np.concatenate([self.ts, other.ts]),
            np.concatenate([self.open, other.open]),
            np.concatenate([self.high, other.high]),
            np.concatenate([self.low, other.low]),
            np.concatenate([self.close, other.close]),
            np.concatenate([self.volume, other.volume]),
        )

    @classmethod
    def joined(
        cls, symbol: str, interval: Interval, provider: str, parts: Sequence[Candles]
    ) -> Candles:
        """Batches of one pair one after another, each column concatenated once (derived
        columns are dropped): joining pages one at a time would copy the rows so far again
        for every page, quadratic over a long backfill."""
        if not parts:
            return cls.empty(symbol, interval, provider)

        def column(name: str) -> NDArray[Any]:
            return np.concatenate([getattr(part, name) for part in parts])

        return Candles(
            symbol,
            interval,
            provider,
            column("ts"),
            column("open"),
            column("high"),
            column("low"),
            column("close"),
            column("volume"),
        )

    def rows(self) -> Iterator[tuple[int, float, float, float, float, float]]:
        """Plain Python rows (ts, open, high, low, close, volume), for small batches and I/O."""
        return zip(
            self.ts.tolist(),
            self.open.tolist(),
            self.high.tolist(),
            self.low.tolist(),
            self.close.tolist(),
            self.volume.tolist(),
            strict=True,
        )


def _floats(values: Any) -> NDArray[np.float64]:
    if isinstance(values, np.ndarray) and values.dtype == np.float64:
        return values
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


@dataclass(frozen=True, slots=True)
class Window:
    """A half-open time range [start, end) in epoch seconds."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if self.start > self.end:
            raise InputError(
                f"window starts after it ends ({utc_from_epoch(self.start).isoformat()} > "
                f"{utc_from_epoch(self.end).isoformat()})"
            )

    def bars(self, interval: Interval) -> int:
        """How many bars of `interval` start inside the window."""
        first = -(-self.start // interval.seconds) * interval.seconds
        return max(0, (self.end - first + interval.seconds - 1) // interval.seconds)


class RunStatus(Enum):
    """Outcome of one ingestion run."""

    SUCCESS = "success"
    PARTIAL = "partial"
    FAILURE = "failure"
    INTERRUPTED = "interrupted"
    # closed by a later run: its process died (SIGKILL, crash) without recording the end
    ABANDONED = "abandoned"


@dataclass(slots=True)
class PairOutcome:
    """What happened to one (symbol, interval) in a run."""

    symbol: str
    interval: str
    status: str  # ok | failed | skipped (its lock is held elsewhere) | disabled
    provider: str | None = None
    fetched: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, as stored in ingestion_runs.outcomes."""
        return {k: getattr(self, k) for k in self.__slots__}


@dataclass(slots=True)
class RunResult:
    """The outcome of one ingestion run, as recorded and reported."""

    run_id: int | None
    trigger: str
    providers: list[str]
    started_at: datetime
    finished_at: datetime | None = None
    status: RunStatus = RunStatus.SUCCESS
    outcomes: list[PairOutcome] = field(default_factory=list)
    error: str | None = None

    @property
    def rows_inserted(self) -> int:
        """Candles inserted over all pairs."""
        return sum(o.inserted for o in self.outcomes)

    @property
    def rows_updated(self) -> int:
        """Candles updated over all pairs."""
        return sum(o.updated for o in self.outcomes)

    @property
    def rows_written(self) -> int:
        """Candles inserted or updated over all pairs."""
        return self.rows_inserted + self.rows_updated

    @property
    def duration_ms(self) -> float | None:
        """Wall time of the run, once finished."""
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds() * 1000.0


def parse_time(raw: str, *, name: str = "time") -> int:
    """ISO 8601 date or timestamp (naive means UTC), or epoch seconds, as epoch seconds."""
    text = raw.strip()
    digits = text.lstrip("-")
    # ASCII digits only: str.isdigit() also accepts '¹' or '²', which int() refuses
    if digits.isascii() and digits.isdigit():
        seconds = int(text)
        try:
            utc_from_epoch(seconds)  # a date a datetime can hold (years 1 to 9999)
        except (OverflowError, OSError, ValueError):
            raise InputError(
                f"{name} {raw!r} is out of range", hint="use 2024-01-31 or epoch seconds"
            ) from None
        return seconds
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(
            f"{name} {raw!r} is not an ISO 8601 date or UTC timestamp",
            hint="use 2024-01-31 or 2024-01-31T12:00:00Z",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": DAY, "w": 7 * DAY}


def parse_duration(raw: str, *, name: str = "duration") -> int:
    """A duration such as '90s', '15m', '2h', '90d' or '2w' as whole seconds (above zero).

    Raises:
        InputError: Naming `name` when the text is not a number followed by s, m, h, d or w.
    """
    match = _DURATION.fullmatch(raw.strip().lower())
    seconds = int(match[1]) * _DURATION_UNITS[match[2]] if match else 0
    if seconds <= 0:
        raise InputError(
            f"{name} {raw!r} is not a duration",
            hint="use a whole number and a unit: 90s, 15m, 2h, 90d or 2w",
        )
    return seconds


def format_duration(seconds: float) -> str:
    """A duration for people, in the units `parse_duration` reads: '45s', '12m', '3h 20m',
    '2d 4h' (two units at most)."""
    left = round(seconds)
    if left < 60:
        return f"{left}s"
    parts = []
    for unit in ("w", "d", "h", "m", "s"):
        size = _DURATION_UNITS[unit]
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
        if len(parts) == 2 or (parts and not left):
            break
    return " ".join(parts)


def parse_since(raw: str, now: datetime, *, name: str = "--since") -> datetime:
    """A start time given as a duration back from `now` ('7d', '12h') or as an ISO 8601 date
    or UTC timestamp."""
    if _DURATION.fullmatch(raw.strip().lower()):
        return now - timedelta(seconds=parse_duration(raw, name=name))
    try:
        return utc_from_epoch(parse_time(raw, name=name))
    except InputError:
        raise InputError(
            f"{name} {raw!r} is neither a duration nor a date",
            hint="use a duration back from now such as 7d or 12h, or a date such as 2024-01-31",
        ) from None
