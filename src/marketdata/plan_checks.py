"""Checks on an ingest plan before anything is fetched: bad requests are exit 2, not a run
that fails later or quietly does nothing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from marketdata.domain import utc_from_epoch
from marketdata.errors import InputError

if TYPE_CHECKING:
    from marketdata.domain import Interval, Window
    from marketdata.providers.base import Provider


def check_intervals(chain: Sequence[str], intervals: Sequence[Interval]) -> None:
    """UnsupportedIntervalError when no provider of the chain serves an asked interval."""
    from marketdata.providers.base import unsupported_interval
    from marketdata.providers.registry import provider_class

    classes = [provider_class(name) for name in chain]
    for interval in intervals:
        if classes and not any(interval in cls.intervals for cls in classes):
            # the class carries the name and intervals the message needs
            raise unsupported_interval(cast("Provider", classes[0]), interval)


def check_window(
    since: int | None,
    until: int | None,
    now: int,
    pairs: Sequence[tuple[str, Interval, Sequence[Window], str | None]],
) -> None:
    """InputError when --since lies in the future, or when the window selects nothing for
    every pair to fetch (symbol, interval, windows, skip reason)."""
    if since is not None and since > now:
        raise InputError(
            f"--since {_shown(since)} is in the future (now is {_shown(now)})",
            hint="give a past date, or leave --since out to fetch what is new",
        )
    if since is None and until is None:
        return
    fetched = [p for p in pairs if p[3] is None]
    if fetched and all(all(w.start >= w.end for w in p[2]) for p in fetched):
        symbol, interval = fetched[0][0], fetched[0][1]
        asked = " ".join(
            f"{flag} {_shown(v)}" for flag, v in (("--since", since), ("--until", until)) if v
        )
        raise InputError(
            f"the window {asked} selects no bars to fetch (for {symbol} {interval} and every "
            "other pair: it ends before the stored history does, or before it starts)",
            hint="widen the window: an earlier --since, or a later --until",
        )


def _shown(epoch: int) -> str:
    return utc_from_epoch(epoch).isoformat().replace("+00:00", "Z")
