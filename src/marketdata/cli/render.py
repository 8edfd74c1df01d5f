"""Rendering in one place: tables and panels for people, JSON for scripts."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

__all__ = ["emit_json", "err", "escape", "fmt", "iso", "note", "out", "table"]

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def emit_json(data: Any) -> None:
    """Machine-readable output on stdout: stable keys, ISO 8601 times, NaN as null."""
    print(json.dumps(_plain(data), indent=2, ensure_ascii=False))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return _plain(value.item())
    return value


def table(
    title: str | None,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    right: Sequence[str] = (),
) -> None:
    """A simple table on stdout."""
    # a rule under the header and one blank between columns: tables must fit 80 columns
    grid = Table(
        title=title,
        title_justify="left",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        padding=0,
        pad_edge=False,
        show_edge=False,
    )
    for index, column in enumerate(columns):
        grid.add_column(
            column,
            justify="right" if column in right else "left",
            no_wrap=index == 0,  # the row's key (a symbol) is never cut
        )
    for row in rows:
        grid.add_row(*(fmt(v) for v in row))
    out.print(grid)


def fmt(value: Any) -> str:
    """A cell: numbers compact, times ISO, None empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        return f"{value:,.6g}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%SZ")
    return str(value)


def iso(epoch: int) -> str:
    """Epoch seconds as ISO 8601 UTC."""
    from datetime import UTC

    return datetime.fromtimestamp(epoch, tz=UTC).isoformat().replace("+00:00", "Z")


def note(message: str) -> None:
    """A line for people on stderr (kept off stdout so pipes get only data)."""
    err.print(message)
