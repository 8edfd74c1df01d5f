"""Options shared by several commands, declared once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from marketdata.cli import completion

if TYPE_CHECKING:
    from marketdata.domain import Interval

Symbols = Annotated[
    list[str] | None,
    typer.Option(
        "--symbols",
        "-s",
        help="Symbols, comma-separated or repeated (default: INGESTION_SYMBOLS, else every "
        "enabled market).",
        show_default=False,
        autocompletion=completion.stored_symbols,
    ),
]
StoredSymbols = Annotated[
    list[str] | None,
    typer.Option(
        "--symbols",
        "-s",
        help="Only these symbols, comma-separated or repeated (default: every stored market).",
        show_default=False,
        autocompletion=completion.stored_symbols,
    ),
]
Intervals = Annotated[
    list[str] | None,
    typer.Option(
        "--interval",
        "-i",
        help="Bar interval: 1m, 5m, 15m, 1h, 6h or 1d; repeat or comma-separate for several.",
        show_default="1d",
        autocompletion=completion.intervals,
    ),
]
Provider = Annotated[
    str | None,
    typer.Option(
        "--provider",
        "-p",
        help="Provider or fallback chain such as coinbase,kraken (default: INGESTION_PROVIDER).",
        show_default=False,
        autocompletion=completion.providers,
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON on stdout (logs stay on stderr).")]
LookbackDays = Annotated[
    int | None,
    typer.Option(
        "--lookback-days",
        help="Days of history (1 to 36500; default INGESTION_LOOKBACK_DAYS), for this run only.",
        show_default=False,
    ),
]


def parse_intervals(values: list[str] | None, default: str = "1d") -> list[Interval]:
    """Interval flags to Interval values (comma lists allowed); exit 2 on an unknown one."""
    from marketdata.domain import Interval
    from marketdata.errors import UnsupportedIntervalError

    raw = [p for v in (values or [default]) for p in v.split(",") if p.strip()]
    if not raw:
        raise UnsupportedIntervalError(
            "--interval is empty", hint="give one of 1m, 5m, 15m, 1h, 6h, 1d"
        )
    seen: dict[Interval, None] = {}
    for part in raw:
        seen.setdefault(Interval.parse(part), None)
    return list(seen)


def parse_symbol_flags(values: list[str] | None) -> list[str]:
    """Symbol flags to canonical symbols; exit 2 naming the first bad one."""
    from marketdata.domain import parse_symbols

    return parse_symbols(values or [])
