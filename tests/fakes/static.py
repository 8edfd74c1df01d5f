"""A provider that hands the pipeline exactly the rows a test gives it, unfiltered.

Real providers normalise what they receive (sorted, one row per timestamp, inside the window),
so rows that only validation can stop (duplicates, future or off-grid timestamps, NaN from a
null in a payload) need a source that passes them on as they are. Register it for a test with
`monkeypatch.setitem(registry.PROVIDERS, "static", STATIC)`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from marketdata.domain import Candles, Interval, Window
from marketdata.providers.base import BaseProvider

STATIC = "tests.fakes.static:StaticProvider"


class StaticProvider(BaseProvider):
    """Serves `ROWS[(symbol, interval)]` for every window, as given."""

    name: ClassVar[str] = "static"
    intervals: ClassVar[frozenset[Interval]] = frozenset(Interval)
    ROWS: ClassVar[dict[tuple[str, Interval], list[tuple[Any, ...]]]] = {}

    def fetch(self, symbol: str, interval: Interval, window: Window) -> Candles:
        """The rows set for this pair, whatever the window (a misbehaving provider)."""
        return Candles.from_rows(symbol, interval, self.name, self.ROWS.get((symbol, interval), []))
