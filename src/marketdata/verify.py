"""Cross-checking stored candles against a fresh fetch from a second provider."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from marketdata.domain import DAY, Candles, Interval, Window, epoch_of, utc_from_epoch
from marketdata.errors import (
    ExitCode,
    InputError,
    MarketdataError,
    NoDataError,
    UnsupportedIntervalError,
)

if TYPE_CHECKING:
    from numpy.typing import NDArray
    from sqlalchemy import Connection

    from marketdata.context import AppContext

MAX_LOOKBACK_DAYS = 36_500
DEFAULT_LOOKBACK_DAYS = 30
# Prices of one market agree closely across exchanges; volumes legitimately differ more (each
# venue counts its own trades, some include auctions or off-book prints), hence a looser default.
DEFAULT_TOLERANCE = 0.005
DEFAULT_VOLUME_TOLERANCE = 0.05
PRICE_FIELDS = ("open", "high", "low", "close")
FIELDS = (*PRICE_FIELDS, "volume")
# A difference of exactly the tolerance must not be flagged because binary floating point
# computed it a hair above; this slack is far below any tolerance worth asking for.
_SLACK = 1e-12


class VerifyMismatch(MarketdataError):
    """Stored candles disagree with the second provider (raised after the report is shown)."""

    exit_code = ExitCode.FAILURE


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One value of one candle that differs beyond the tolerance."""

    ts: int
    field: str
    ours: float
    theirs: float
    diff: float  # |ours - theirs| / max(|ours|, |theirs|); NaN when one side has no value


@dataclass(frozen=True)
class Comparison:
    """Two batches aligned on their timestamps."""

    compared: int
    mismatches: tuple[Mismatch, ...]
    only_ours: tuple[int, ...]
    only_theirs: tuple[int, ...]


@dataclass(frozen=True)
class VerifyReport:
    """What verifying one (symbol, interval) found."""

    symbol: str
    interval: Interval
    ours: tuple[str, ...]  # the provider(s) the stored candles of the window came from
    against: str
    window: Window
    still_open: int  # start of the bar still forming at `now`: fetched but never compared
    tolerance: float
    volume_tolerance: float
    compared: int
    mismatches: tuple[Mismatch, ...]
    only_ours: tuple[int, ...]
    only_theirs: tuple[int, ...]

    @property
    def agrees(self) -> bool:
        """True when every compared value is within tolerance and no candle is one-sided."""
        return not (self.mismatches or self.only_ours or self.only_theirs)

    @property
    def mismatching_candles(self) -> int:
        """How many candles have at least one value beyond the tolerance."""
        return len({m.ts for m in self.mismatches})

    def summary(self) -> str:
        """One line: the pair and what disagrees."""
        head = f"{self.symbol} {self.interval}"
        if self.agrees:
            return f"{head}: all {self.compared} candles agree with {self.against}"
        values = len(self.mismatches)
        counted = "1 value differs" if values == 1 else f"{values} values differ"
        return (
            f"{head}: {counted} in {self.mismatching_candles} of {self.compared} candles "
            f"from {self.against}, {len(self.only_ours)} only in ours, "
            f"{len(self.only_theirs)} only in {self.against}"
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (times as aware datetimes; `diff` is a fraction, not a percentage)."""
        return {
            "symbol": self.symbol,
            "interval": self.interval.value,
            "ours": list(self.ours),
            "against": self.against,
            "window": {
                "start": utc_from_epoch(self.window.start),
                "end": utc_from_epoch(self.window.end),
            },
            "still_open": utc_from_epoch(self.still_open),
            "tolerance": {"price": self.tolerance, "volume": self.volume_tolerance},
            "compared": self.compared,
            "mismatches": [
                {
                    "ts": utc_from_epoch(m.ts),
                    "field": m.field,
                    "ours": m.ours,
                    "theirs": m.theirs,
                    "diff": m.diff,
                }
                for m in self.mismatches
            ],
            "only_ours": [utc_from_epoch(ts) for ts in self.only_ours],
            "only_theirs": [utc_from_epoch(ts) for ts in self.only_theirs],
        }


def parse_tolerance(raw: str, *, name: str = "--tolerance") -> float:
    """'0.5%' or '0.005' as the fraction 0.005; InputError naming the flag otherwise."""
    text = raw.strip()
    percent = text.endswith("%")
    try:
        value = float(text[:-1].strip() if percent else text)
    except ValueError:
        raise InputError(
            f"{name} {raw!r} is not a number", hint="use a percentage such as 0.5% or a fraction"
        ) from None
    if percent:
        value /= 100
    elif value > 1 and math.isfinite(value):
        # a bare 5 is far more likely to mean 5% than 500%: refuse rather than guess
        raise InputError(
            f"{name} {raw!r} is more than 100%", hint=f"write {text}% for a percentage"
        )
    return check_tolerance(value, name=name)


def check_tolerance(value: float, *, name: str) -> float:
    """A relative tolerance between 0 and 1 (100%), or InputError."""
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise InputError(f"{name} must be between 0% and 100%, not {value:g}")
    return value


def verify_window(interval: Interval, now: int, lookback_days: int) -> Window:
    """The last `lookback_days` up to the end of the bar open at `now` (as ingestion plans)."""
    if not 0 < lookback_days <= MAX_LOOKBACK_DAYS:
        raise InputError(
            f"--lookback-days must be between 1 and {MAX_LOOKBACK_DAYS}, not {lookback_days}"
        )
    return Window(interval.floor(now - lookback_days * DAY), interval.floor(now) + interval.seconds)


def relative_difference(
    ours: NDArray[np.float64], theirs: NDArray[np.float64]
) -> NDArray[np.float64]:
    """|a-b| / max(|a|,|b|) elementwise; 0 where both are 0, NaN where either is NaN."""
    scale = np.maximum(np.abs(ours), np.abs(theirs))
    # a zero scale means both are zero: 0/0, whose NaN np.where replaces
    with np.errstate(invalid="ignore"):
        return np.where(scale == 0, 0.0, np.abs(ours - theirs) / scale)


def compare(
    ours: Candles, theirs: Candles, *, tolerance: float, volume_tolerance: float
) -> Comparison:
    """Align two batches on timestamps; the values beyond tolerance and the one-sided bars.

    Both batches must be sorted without duplicate timestamps (as stored and as fetched).
    """
    common, in_ours, in_theirs = np.intersect1d(ours.ts, theirs.ts, return_indices=True)
    a = np.column_stack([getattr(ours, name)[in_ours] for name in FIELDS])
    b = np.column_stack([getattr(theirs, name)[in_theirs] for name in FIELDS])
    diff = relative_difference(a, b)
    limits = np.array([tolerance] * len(PRICE_FIELDS) + [volume_tolerance]) + _SLACK
    # a value present on one side only (NaN on the other) is a disagreement too
    bad = (diff > limits) | (np.isnan(a) != np.isnan(b))
    mismatches = tuple(
        Mismatch(int(common[r]), FIELDS[c], float(a[r, c]), float(b[r, c]), float(diff[r, c]))
        for r, c in np.argwhere(bad).tolist()  # row-major: by time, then in FIELDS order
    )
    only_ours = np.setdiff1d(ours.ts, theirs.ts)
    only_theirs = np.setdiff1d(theirs.ts, ours.ts)
    return Comparison(
        len(common), mismatches, tuple(only_ours.tolist()), tuple(only_theirs.tolist())
    )


def stored_providers(
    conn: Connection, symbol: str, interval: Interval, window: Window
) -> tuple[str, ...]:
    """The providers the stored candles of a pair inside `window` came from, sorted."""
    from sqlalchemy import select

    from marketdata.storage.schema import candles

    c = candles.c
    query = (
        select(c.provider)
        .distinct()
        .where(
            c.symbol == symbol,
            c.interval == interval.value,
            c.ts >= utc_from_epoch(window.start),
            c.ts < utc_from_epoch(window.end),
        )
        .order_by(c.provider)
    )
    return tuple(conn.execute(query).scalars())


def default_symbols(app: AppContext) -> list[str]:
    """INGESTION_SYMBOLS, else every enabled market, less the disabled ones."""
    from marketdata.pipeline import IngestRequest, resolve_symbols

    symbols, disabled = resolve_symbols(app, IngestRequest())
    return [s for s in symbols if s not in disabled]


def verify(
    app: AppContext,
    symbols: Sequence[str],
    interval: Interval,
    against: str,
    lookback_days: int = DEFAULT_LOOKBACK_DAYS,
    tolerance: float = DEFAULT_TOLERANCE,
    volume_tolerance: float = DEFAULT_VOLUME_TOLERANCE,
) -> list[VerifyReport]:
    """Compare stored candles of each symbol with a fresh fetch from provider `against`.

    The window is the last `lookback_days` up to the end of the bar open now; that still-open
    bar is left out of the comparison (its values are still moving, and some providers, such
    as Kraken, do not serve it). Empty `symbols` means INGESTION_SYMBOLS, else enabled markets.

    Raises NoDataError (before any request) when nothing is stored for a symbol in the window,
    and lets the `against` provider's ProviderError through.
    """
    from marketdata.providers.registry import build_provider, parse_chain, provider_class
    from marketdata.storage.candles import last_ts, read_candles
    from marketdata.storage.engine import connect
    from marketdata.storage.markets import symbol_overrides

    chain = parse_chain([against])
    if len(chain) != 1:
        raise InputError(f"--against takes one provider, not {against!r}")
    name = chain[0]
    cls = provider_class(name)
    if interval not in cls.intervals:
        served = ", ".join(i.value for i in sorted(cls.intervals, key=lambda i: i.seconds))
        raise UnsupportedIntervalError(
            f"{name} does not serve {interval.value} candles", hint=f"it serves {served}"
        )
    check_tolerance(tolerance, name="--tolerance")
    check_tolerance(volume_tolerance, name="--volume-tolerance")
    now = epoch_of(app.clock())
    window = verify_window(interval, now, lookback_days)
    symbols = list(symbols) or default_symbols(app)
    if not app.database_exists():  # do not create the embedded database just to find it empty
        raise _nothing_stored(symbols[0], interval)

    stored: list[tuple[Candles, tuple[str, ...]]] = []
    with connect(app.engine(), app.target) as conn:
        overrides = symbol_overrides(conn)
        for symbol in symbols:
            ours = read_candles(conn, symbol, interval, window.start, window.end)
            if len(ours) == 0:
                newest = last_ts(conn, symbol, interval)
                raise _nothing_stored(symbol, interval, newest, since=window.start)
            stored.append((ours, stored_providers(conn, symbol, interval, window)))

    still_open = interval.floor(now)
    reports = []
    with app.provider_context(overrides) as ctx:
        provider = build_provider(name, ctx)
        for ours, providers in stored:
            theirs = provider.fetch(ours.symbol, interval, window).normalised()
            found = compare(
                ours.take(ours.ts < still_open),
                theirs.take(theirs.ts < still_open),
                tolerance=tolerance,
                volume_tolerance=volume_tolerance,
            )
            reports.append(
                VerifyReport(
                    ours.symbol,
                    interval,
                    providers,
                    name,
                    window,
                    still_open,
                    tolerance,
                    volume_tolerance,
                    found.compared,
                    found.mismatches,
                    found.only_ours,
                    found.only_theirs,
                )
            )
    return reports


def _nothing_stored(
    symbol: str, interval: Interval, newest: int | None = None, *, since: int = 0
) -> NoDataError:
    flags = f"--symbols {symbol}" + ("" if interval is Interval.D1 else f" --interval {interval}")
    where = "" if newest is None else f" since {_day(since)} (the newest is {_day(newest)})"
    return NoDataError(
        f"nothing stored for {symbol} {interval}{where}",
        hint=f"run `marketdata ingest {flags}` first",
    )


def _day(epoch: int) -> str:
    return utc_from_epoch(epoch).isoformat().replace("+00:00", "Z")


def raise_on_disagreement(reports: Sequence[VerifyReport]) -> None:
    """VerifyMismatch (exit 1) summarising every pair that disagrees; nothing when all agree."""
    bad = [r.summary() for r in reports if not r.agrees]
    if bad:
        raise VerifyMismatch("verify found disagreements: " + "; ".join(bad))
