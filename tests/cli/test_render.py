"""Fitting a table to the terminal: text wraps, numbers and times stay whole, columns go."""

from __future__ import annotations

from marketdata.cli.render import fit_widths, fmt

COLUMNS = ["symbol", "close", "newest", "error"]
CELLS = [
    ["BTC-USD", "-7.71234%", "2026-12-02T00:00:00Z", "coinbase unreachable: connection refused"],
    ["ETH-USD", "1,234.5", "2026-12-01T00:00:00Z", ""],
]
NUMERIC = [False, True, False, False]


def test_a_wide_terminal_shows_every_column_at_its_natural_width():
    widths, shown = fit_widths(COLUMNS, CELLS, NUMERIC, 200)
    assert shown == [0, 1, 2, 3]
    assert widths == [7, 9, 20, 40]


def test_a_narrow_terminal_wraps_text_before_touching_numbers_or_times():
    widths, shown = fit_widths(COLUMNS, CELLS, NUMERIC, 60)
    assert shown == [0, 1, 2, 3]
    assert widths[:3] == [7, 9, 20]  # whole
    assert sum(widths) + len(shown) - 1 <= 60 and widths[3] >= 10


def test_when_wrapping_is_not_enough_columns_are_left_out_from_the_right():
    widths, shown = fit_widths(COLUMNS, CELLS, NUMERIC, 40)
    assert shown == [0, 1, 2]
    assert widths[:3] == [7, 9, 20]


def test_cells_are_iso_times_with_z_and_compact_numbers():
    from datetime import UTC, datetime

    assert fmt(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05Z"
    assert fmt(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05Z"  # naive is UTC
    assert fmt(float("nan")) == "" and fmt(None) == ""
    assert fmt(12_345_678.9) == "12,345,679"
