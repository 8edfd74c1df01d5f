"""Rendering in one place: tables for people, plain columns for pipes, JSON for scripts.

The output contract (README, "Output"): data on stdout, notes and logs on stderr. On a
terminal a table fits the window by wrapping text columns and, as a last resort, leaving
whole columns out (named on stderr); a number is never cut. Piped, a table is tab-separated
text with a header line, every cell in full. Times are ISO 8601 UTC with `Z`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from typing import Any

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

__all__ = [
    "confirm",
    "emit_json",
    "err",
    "escape",
    "fit_widths",
    "fmt",
    "iso",
    "note",
    "out",
    "reset",
    "table",
]

# a text column may be wrapped down to this width (or its longest header word), not less
MIN_TEXT_WIDTH = 10
# a column of cells this short and without spaces (a time, a symbol) is kept whole
ATOMIC_WIDTH = 24
# width for non-table output when stdout is not a terminal: long lines stay whole
PIPE_WIDTH = 10_000

out: Console
err: Console
quiet = False  # -q: notes are left out (errors still print)


def reset() -> None:
    """(Re)create the consoles for the current stdout and stderr (also after a fork)."""
    global out, err
    out = Console(highlight=False)
    if not out.is_terminal:
        out = Console(highlight=False, width=PIPE_WIDTH, soft_wrap=True)
    err = Console(stderr=True, highlight=False)


reset()


def emit_json(data: Any) -> None:
    """Machine-readable output on stdout: stable keys, ISO 8601 times, NaN as null."""
    print(json.dumps(_plain(data), indent=2, ensure_ascii=False))


def json_text(data: Any) -> str:
    """`data` as one line of JSON, with the same conversions as `emit_json`."""
    return json.dumps(_plain(data), ensure_ascii=False)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return _iso_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return _plain(value.item())
    return value


def _iso_datetime(value: datetime) -> str:
    if value.tzinfo is None:  # stored naive values are UTC (SQLite keeps no zone)
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def table(
    title: str | None,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    right: Sequence[str] = (),
) -> None:
    """A table on stdout: Rich on a terminal, tab-separated text with a header when piped.

    `right` names the numeric columns: right-aligned, and never narrower than their widest
    value (a number is never cut; a column that does not fit is left out and named).
    """
    values = [list(row) for row in rows]
    cells = [[fmt(v) for v in row] for row in values]
    if not out.is_terminal:
        if title:
            note(escape(title))
        print("\t".join(columns))
        for row in cells:
            print("\t".join(_one_line(c) for c in row))
        return
    numeric = [c in right for c in columns]
    widths, shown = fit_widths(list(columns), cells, numeric, out.width)
    grid = Table(
        title=title,
        title_justify="left",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        padding=0,
        pad_edge=False,
        show_edge=False,
        collapse_padding=True,
    )
    for index in shown:
        grid.add_column(
            escape(columns[index]),
            justify="right" if numeric[index] else "left",
            width=widths[index],
            no_wrap=numeric[index],
            overflow="fold",
        )
    for row, texts in zip(values, cells, strict=True):
        # a styled cell (rich Text) keeps its style; anything else is shown as plain text
        grid.add_row(*(row[i] if isinstance(row[i], Text) else escape(texts[i]) for i in shown))
    out.print(grid)
    dropped = [columns[i] for i in range(len(columns)) if i not in shown]
    if dropped:
        note(
            f"not shown at {out.width} columns: {escape(', '.join(dropped))} "
            "(widen the terminal, pipe the output or use --json)"
        )


def fit_widths(
    columns: list[str], cells: list[list[str]], numeric: list[bool], width: int
) -> tuple[list[int], list[int]]:
    """Column widths that fit `width` (one space between columns), and the indexes shown.

    Text columns wrap down to a floor; the first column (the row's key), numeric columns and
    columns of short words (times, states) keep their full width; when that is still too
    wide, columns are left out from the right.
    """
    natural = [
        max(
            [cell_len(h), *(max(cell_len(x) for x in row[i].splitlines() or [""]) for row in cells)]
        )
        for i, h in enumerate(columns)
    ]
    floor = [
        natural[i]
        if i == 0 or numeric[i] or _atomic(row[i] for row in cells)
        else min(natural[i], max(MIN_TEXT_WIDTH, *(cell_len(w) for w in h.split() or [""])))
        for i, h in enumerate(columns)
    ]
    shown = list(range(len(columns)))
    while True:
        widths = list(natural)
        excess = sum(widths[i] for i in shown) + len(shown) - 1 - width
        while excess > 0:
            shrinkable = [i for i in shown if widths[i] > floor[i]]
            if not shrinkable:
                break
            widest = max(shrinkable, key=lambda i: widths[i] - floor[i])
            widths[widest] -= 1
            excess -= 1
        if excess <= 0 or len(shown) == 1:
            return widths, shown
        shown.pop()


def _atomic(values: Iterable[str]) -> bool:
    """Cells without spaces and short (times, symbols, states): kept whole, never wrapped."""
    return all(len(v) <= ATOMIC_WIDTH and not any(c.isspace() for c in v) for v in values)


def _one_line(text: str) -> str:
    return " ".join(text.replace("\t", " ").splitlines())


def fmt(value: Any) -> str:
    """A cell: numbers compact, times ISO 8601 UTC, None empty."""
    if value is None:
        return ""
    if isinstance(value, Text):
        return value.plain
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        return f"{value:,.6g}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return str(value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return str(value)


def iso(epoch: int) -> str:
    """Epoch seconds as ISO 8601 UTC."""
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat().replace("+00:00", "Z")


def note(message: str) -> None:
    """A line for people on stderr (kept off stdout so pipes get only data); Rich markup."""
    if not quiet:
        err.print(message, soft_wrap=True)


def confirm(what: str, *, yes: bool) -> None:
    """Ask on a terminal before a destructive step; elsewhere `--yes` must say so (exit 2)."""
    import sys

    import typer

    from marketdata.errors import InputError

    if yes:
        return
    if sys.stdin.isatty() and err.is_terminal:
        if typer.confirm(f"{what}. Go on?", default=False, err=True):
            return
        raise InputError("cancelled: nothing was changed")
    raise InputError(f"{what}", hint="add --yes to go ahead")
