"""What a reader accepts as a cached market value: JSON of the shape this version writes,
stamped with the reader's own database. Anything else under the prefix is a miss, said once.

Another program, a hand with redis-cli, an older version or another database sharing the
prefix may have written a key; a reader must then read the database, never fail or answer
with values that are not this database's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import chain
from typing import TYPE_CHECKING, Any

from marketdata.analytics.indicators import INDICATOR_NAMES
from marketdata.cache.base import Unreadable

if TYPE_CHECKING:
    from marketdata.cache.fallback import FallbackCache

PRICE_KEYS = ("open", "high", "low", "close", "volume")
COLUMNS = ("ts", *PRICE_KEYS, *INDICATOR_NAMES)
"""The columns of a `show` value, in the order they are written."""
VALUE_COLUMNS = COLUMNS[1:]
"""The columns of a `show` value but `ts`: prices, then indicators (all floats or nulls)."""
_SHOW_FIELDS: dict[str, type | tuple[type, ...]] = {
    "symbol": str,
    "interval": str,
    "complete": bool,
    "computed": bool,
    "provider": str,
    "stored_at": str,
    "columns": dict,
    "roi": dict,
}

_RECENT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "symbol": str,
    "interval": str,
    "after": int,
    "newest": int,
    "provider": str,
    "stored_at": str,
    "base_stored_at": str,
    "roi": dict,
    "fields": list,
}
RECENT_FIELDS = list(COLUMNS)
"""A `recent` value's `fields`: the names of its rows' entries, in order."""

Problem = Callable[[Any], "str | None"]


def usable(cache: FallbackCache, key: str, value: Any, problem: Problem) -> dict[str, Any] | None:
    """`value` when it is one this version writes for this database; else None, with one
    warning per command for each of the two reasons (unreadable, another database's)."""
    if value is None:
        return None
    why = problem(value)
    if why is not None:
        cache.warn_once(
            "unreadable",
            f"cache value {key} is {why}; reading the database instead "
            "(`marketdata cache rebuild` rewrites the market keys)",
        )
        return None
    if value.get("database") != cache.database:
        cache.warn_once(
            "foreign",
            f"cache value {key} was written for another database (or by an older version); "
            "reading the database instead (databases sharing one Redis need a CACHE_PREFIX "
            "each)",
        )
        return None
    result: dict[str, Any] = value
    return result


def show_problem(symbol: str, interval: str) -> Problem:
    """What is wrong with a `market:{symbol}:{interval}:show` value, None when nothing."""

    def problem(value: Any) -> str | None:
        if (why := _fields_problem(value, _SHOW_FIELDS, symbol, interval)) is not None:
            return why
        return _columns_problem(value["columns"], value.get("newest")) or _roi_problem(value["roi"])

    return problem


def _fields_problem(
    value: Any, fields: dict[str, type | tuple[type, ...]], symbol: str, interval: str
) -> str | None:
    """What is wrong with a pair's value before its columns: not an object, a field of
    another type, another pair's."""
    if (kind := _not_object(value)) is not None:
        return kind
    # every field's type in one pass in C (an incremental run checks the `recent` value of
    # each pair it extends): then find which one is wrong
    if not all(map(isinstance, map(value.get, fields), fields.values())):
        for name, kind_of in fields.items():
            if not isinstance(value.get(name), kind_of):
                return f"an object without a valid {name!r}"
    if (value["symbol"], value["interval"]) != (symbol, interval):
        return f"an object for {value['symbol']} {value['interval']}"
    return None


def recent_problem(symbol: str, interval: str) -> Problem:
    """What is wrong with a `market:{symbol}:{interval}:recent` value, None when nothing."""
    header = recent_header_problem(symbol, interval)

    def problem(value: Any) -> str | None:
        if (why := header(value)) is not None:
            return why
        return _rows_problem(value.get("rows"), value["after"], value["newest"])

    return problem


def recent_header_problem(symbol: str, interval: str) -> Problem:
    """What is wrong with a `recent` value's fields but its rows (all a writer that extends
    it reads: see `market._held`), None when nothing."""

    def problem(value: Any) -> str | None:
        if (why := _fields_problem(value, _RECENT_FIELDS, symbol, interval)) is not None:
            return why
        if type(value["after"]) is not int or type(value["newest"]) is not int:  # not bool
            return "an object without a valid 'after' or 'newest'"
        if value["fields"] != RECENT_FIELDS:
            return "an object without a valid 'fields'"
        return _roi_problem(value["roi"])

    return problem


_ROW_LENGTH = len(COLUMNS)


def _rows_problem(rows: Any, after: int, newest: int) -> str | None:
    """What is wrong with a `recent` value's rows (lists of COLUMNS' values, oldest first)."""
    if not isinstance(rows, list):
        return "an object without valid 'rows'"
    if not rows:  # no rows after its `show` value yet
        return None if newest == after else "an object whose 'newest' is not its last candle"
    # the usual case in a few passes in C: then find what is wrong
    if set(map(type, rows)) != {list} or set(map(len, rows)) != {_ROW_LENGTH}:
        return "an object with a row that is not a list of its 'fields'"
    if set(map(type, next(zip(*rows, strict=True)))) != {int}:
        return "an object with a row whose 'ts' is not an integer"
    if newest != rows[-1][0]:
        return "an object whose 'newest' is not its last candle"
    if not _numbers_or_nulls(chain.from_iterable(rows)):
        return "an object with a non-number in 'rows'"
    return None


def latest_problem(value: Any) -> str | None:
    """What is wrong with a `market:{symbol}:{interval}:latest` value, None when nothing."""
    if (kind := _not_object(value)) is not None:
        return kind
    if type(value.get("ts")) is not int:
        return "an object without a valid 'ts'"
    return None


def _not_object(value: Any) -> str | None:
    if isinstance(value, Unreadable):
        return value.reason
    if not isinstance(value, dict):
        return f"JSON of another shape (a {type(value).__name__}, not an object)"
    return None


def _columns_problem(columns: dict[str, Any], newest: Any) -> str | None:
    stamps = columns.get("ts")
    if not isinstance(stamps, list) or not stamps or set(map(type, stamps)) != {int}:
        return "an object without valid 'columns.ts'"
    if newest != stamps[-1] or type(newest) is not int:
        return "an object whose 'newest' is not its last candle"
    listed: list[Any] = list(map(columns.get, VALUE_COLUMNS))
    # the usual case in a few passes in C (an incremental run checks the `recent` value of
    # each pair it extends): then find what is wrong
    if (
        set(map(type, listed)) == {list}
        and set(map(len, listed)) == {len(stamps)}
        and _numbers_or_nulls(chain.from_iterable(listed))
    ):
        return None
    for name in VALUE_COLUMNS:
        column = columns.get(name)
        if not isinstance(column, list) or len(column) != len(stamps):
            return f"an object without a valid 'columns.{name}'"
        if not _numbers_or_nulls(column):
            return f"an object with a non-number in 'columns.{name}'"
    return None


def _roi_problem(roi: dict[str, Any]) -> str | None:
    if not _numbers_or_nulls(roi.values()):
        return "an object with a non-number in 'roi'"
    return None


_NUMBER_OR_NULL = frozenset({int, float, type(None)})


def _numbers_or_nulls(values: Iterable[Any]) -> bool:
    """Whether every value is a JSON number or null (the types, not each value in Python:
    an incremental run checks every column of every pair's cached value it extends)."""
    return set(map(type, values)) <= _NUMBER_OR_NULL
