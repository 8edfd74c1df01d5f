"""Cron expressions: parsed and checked field by field, converted to systemd's OnCalendar=.

The language is standard cron: five fields (minute, hour, day of month, month, day of week)
with lists, ranges, steps, month and day names, and the macros @hourly, @daily, @weekly,
@monthly, @yearly. A sixth field in front gives seconds (as croniter reads it), which systemd
can express too; a foreground scheduler can use it for sub-minute schedules. When both day
fields are restricted (anything but `*`), a day matching either fires, as in cron; systemd
ANDs the weekday with the date, so such an expression becomes two OnCalendar= lines.
"""

from __future__ import annotations

import calendar
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from marketdata.domain import DAY
from marketdata.errors import InputError

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
SYSTEMD_DAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    names_start: int = 0


SECOND = _Field("second", 0, 59)
MINUTE = _Field("minute", 0, 59)
HOUR = _Field("hour", 0, 23)
MONTH_DAY = _Field("day-of-month", 1, 31)
MONTH = _Field("month", 1, 12, MONTH_NAMES, 1)
WEEKDAY = _Field("day-of-week", 0, 7, DAY_NAMES, 0)  # 0 and 7 are both Sunday
_ITEM = re.compile(r"^(?:(\*)|([a-z0-9]+)(?:-([a-z0-9]+))?)(?:/([0-9]+))?$")


class CronError(InputError):
    """A cron expression that is malformed, or that no calendar event can express."""


@dataclass(frozen=True)
class Cron:
    """A parsed cron expression: the set of values each field allows."""

    text: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday ... 6 = Saturday
    days_restricted: bool
    weekdays_restricted: bool
    has_seconds: bool

    def on_calendar(self) -> list[str]:
        """The OnCalendar= values that elapse exactly when this expression fires."""
        time = ":".join(
            _numbers(values, spec)
            for values, spec in ((self.hours, HOUR), (self.minutes, MINUTE), (self.seconds, SECOND))
        )
        months = _numbers(self.months, MONTH)
        if self.days_restricted and self.weekdays_restricted:
            return [
                f"{_weekdays(self.weekdays)} *-{months}-* {time}",
                f"*-{months}-{_numbers(self.days, MONTH_DAY)} {time}",
            ]
        days = _numbers(self.days, MONTH_DAY)
        prefix = f"{_weekdays(self.weekdays)} " if self.weekdays_restricted else ""
        return [f"{prefix}*-{months}-{days} {time}"]

    def shortest_gap(self) -> int:
        """Seconds between the two closest runs; a schedule that fires at most once a day
        counts as 86400 (its days may be further apart)."""
        times = sorted(
            h * 3600 + m * 60 + s
            for h, m, s in itertools.product(self.hours, self.minutes, self.seconds)
        )
        if len(times) == 1:
            return DAY
        gaps = [b - a for a, b in itertools.pairwise(times)]
        return min(*gaps, times[0] + DAY - times[-1])

    def next_after(self, moment: datetime) -> datetime:
        """The first time strictly after `moment` (aware, in its time zone) this fires."""
        return next(self.fires_after(moment))

    def fires_after(self, moment: datetime) -> Iterator[datetime]:
        """Every time after `moment` this fires, in order (croniter does the calendar work)."""
        from croniter import croniter

        text = _expand_macro(self.text)
        return croniter(text, moment, second_at_beginning=self.has_seconds).all_next(datetime)


def parse(text: str, *, source: str = "INGESTION_CRON_EXPRESSION") -> Cron:
    """Parse a cron expression; CronError (exit 2) names the field that is wrong.

    Args:
        text: the expression, e.g. `*/15 * * * *` or `@daily`.
        source: what to call it in errors (the setting or the option it came from).
    """
    stripped = " ".join(text.split())
    shown = f'{source} "{stripped}"'
    if stripped.startswith("@"):
        if stripped.lower() == "@reboot":
            raise CronError(
                f"{shown}: @reboot is not a calendar time and a timer cannot express it",
                hint="give a calendar schedule such as @hourly or '*/15 * * * *'",
            )
        if stripped.lower() not in MACROS:
            raise CronError(
                f"{shown}: unknown macro {stripped}",
                hint=f"use one of {', '.join(MACROS)} or five fields",
            )
    fields = _expand_macro(stripped).split()
    if len(fields) not in (5, 6):
        raise CronError(
            f"{shown} has {len(fields)} fields",
            hint="cron takes five: minute hour day-of-month month day-of-week",
        )
    seconds = {0}
    has_seconds = len(fields) == 6
    if has_seconds:
        seconds = _parse_field(fields.pop(0), SECOND, shown)
    minutes, hours, days, months, weekdays = (
        _parse_field(raw, spec, shown)
        for raw, spec in zip(fields, (MINUTE, HOUR, MONTH_DAY, MONTH, WEEKDAY), strict=True)
    )
    weekdays = {0 if day == 7 else day for day in weekdays}
    cron = Cron(
        stripped,
        frozenset(seconds),
        frozenset(minutes),
        frozenset(hours),
        frozenset(days),
        frozenset(months),
        frozenset(weekdays),
        days_restricted=fields[2] != "*",
        weekdays_restricted=fields[4] != "*",
        has_seconds=has_seconds,
    )
    if not cron.weekdays_restricted and not any(
        day <= _longest_month(month) for month in cron.months for day in cron.days
    ):
        raise CronError(
            f"{shown}: the day-of-month field {fields[2]} never falls in the month field "
            f"{fields[3]}, so it would never fire"
        )
    return cron


def _expand_macro(text: str) -> str:
    return MACROS.get(text.lower(), text)


def _parse_field(raw: str, spec: _Field, shown: str) -> set[int]:
    values: set[int] = set()
    for item in raw.split(","):
        match = _ITEM.match(item.lower())
        if not match:
            raise CronError(
                f'{shown}: the {spec.name} field "{raw}" is malformed at "{item}"',
                hint="use numbers, names, lists a,b ranges a-b and steps */n or a-b/n",
            )
        star, first, last, step_text = match.groups()
        step = int(step_text) if step_text else 1
        if step < 1:
            raise CronError(f'{shown}: the {spec.name} field "{raw}" has a step of 0')
        if star:
            low, high = spec.low, spec.high
        else:
            low = _value(first, spec, raw, shown)
            # "a/n" runs from a to the end of the field, as in croniter and cronie
            default_high = spec.high if step_text else low
            high = _value(last, spec, raw, shown) if last else default_high
            if high < low:
                raise CronError(
                    f'{shown}: the {spec.name} field "{raw}" has a range {item} that runs backwards'
                )
        values.update(range(low, high + 1, step))
    return values


def _value(token: str, spec: _Field, raw: str, shown: str) -> int:
    if token.isdigit():
        value = int(token)
    elif token in spec.names:
        value = spec.names.index(token) + spec.names_start
    else:
        raise CronError(
            f'{shown}: the {spec.name} field "{raw}" has an unknown value "{token}"',
            hint="standard cron has numbers and, for months and days, names (L, W and # are "
            "not standard)",
        )
    if not spec.low <= value <= spec.high:
        raise CronError(
            f'{shown}: the {spec.name} field "{raw}" is out of range: {value} is not in '
            f"{spec.low}-{spec.high}"
        )
    return value


def _longest_month(month: int) -> int:
    return 29 if month == 2 else calendar.monthrange(2023, month)[1]


def _numbers(values: frozenset[int], spec: _Field) -> str:
    """One field as systemd writes it: `*`, `start/step`, `a..b/step`, or a list of runs."""
    if values == set(range(spec.low, spec.high + 1)):
        return "*"
    ordered = sorted(values)
    if len(ordered) >= 3:
        step = ordered[1] - ordered[0]
        if step > 1 and all(b - a == step for a, b in itertools.pairwise(ordered)):
            # systemd repeats "start/step" up to the end of the field, like cron's */step
            if ordered[-1] + step > spec.high:
                return f"{ordered[0]:02d}/{step}"
            return f"{ordered[0]:02d}..{ordered[-1]:02d}/{step}"
    return ",".join(f"{a:02d}" if a == b else f"{a:02d}..{b:02d}" for a, b in _runs(ordered))


def _weekdays(values: frozenset[int]) -> str:
    # systemd's week runs Monday to Sunday and its ranges cannot wrap around
    monday_first = sorted((day - 1) % 7 for day in values)
    names = [SYSTEMD_DAYS[(day + 1) % 7] for day in range(7)]
    return ",".join(
        names[a] if a == b else f"{names[a]}..{names[b]}" for a, b in _runs(monday_first)
    )


def _runs(ordered: list[int]) -> list[tuple[int, int]]:
    """Consecutive values grouped as (first, last); runs of two stay two single values."""
    runs: list[tuple[int, int]] = []
    for value in ordered:
        if runs and value == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], value)
        else:
            runs.append((value, value))
    split: list[tuple[int, int]] = []
    for first, last in runs:
        if last == first + 1:
            split.extend([(first, first), (last, last)])
        else:
            split.append((first, last))
    return split
