"""Cron to OnCalendar: every conversion elapses when croniter says the cron fires."""

from __future__ import annotations

import os
import re
import subprocess
from datetime import UTC, datetime

import pytest
from croniter import croniter

from marketdata.cron import CronError, parse
from marketdata.errors import ExitCode

BASE = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday in a leap year
ITERATIONS = 25
TABLE = [
    "*/15 * * * *",
    "30 2 * * 1-5",
    "0 */6 * * *",
    "0 0 1 * *",
    "5 4 * * sun",
    "@hourly",
    "@daily",
    "@weekly",
    "@monthly",
    "@yearly",
    "*/7 * * * *",
    "5/20 * * * *",
    "0 9-17/2 * jan,jul sat,sun",
    "0 0 1 */3 *",
    "0 0 29 2 *",
    "0 0 31 * *",
    "0 12 * * 1,3,5",
    "0 0 * * 5-7",
    "15 14 1 * 1",  # both day fields: the 1st OR a Monday, as cron does
    "0 0 */2 * 1",
    "0 0 1,15 * mon-wed",
    "10-20/5 8 * * *",
    "*/20 * * * * *",  # a seconds field in front
    "0 30 9 * * mon",
]
_ELAPSE = re.compile(r"(?:Next elapse|Iter\. #\d+): \w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC")


def systemd_elapses(systemd_analyze: str, expressions: list[str]) -> list[datetime]:
    """The next ITERATIONS elapse times of the OnCalendar values, merged, from systemd."""
    result = subprocess.run(
        [
            systemd_analyze,
            "calendar",
            f"--iterations={ITERATIONS}",
            f"--base-time=@{int(BASE.timestamp())}",
            *expressions,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "TZ": "UTC"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    times = {
        datetime.strptime(m, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        for m in _ELAPSE.findall(result.stdout)
    }
    assert len(times) >= ITERATIONS, result.stdout
    return sorted(times)[:ITERATIONS]


def croniter_fires(expression: str, six_fields: bool) -> list[datetime]:
    it = croniter(expression, BASE, second_at_beginning=six_fields)
    return [it.get_next(datetime) for _ in range(ITERATIONS)]


@pytest.mark.parametrize("expression", TABLE)
def test_on_calendar_elapses_exactly_when_croniter_fires(expression, systemd_analyze):
    cron = parse(expression)
    assert systemd_elapses(systemd_analyze, cron.on_calendar()) == croniter_fires(
        expression, cron.has_seconds
    )


@pytest.mark.parametrize("expression", TABLE)
def test_the_scheduler_fires_when_croniter_does(expression):
    cron = parse(expression)
    moment, fires = BASE, []
    for _ in range(ITERATIONS):
        moment = cron.next_after(moment)
        fires.append(moment)
    assert fires == croniter_fires(expression, cron.has_seconds)


@pytest.mark.parametrize(
    ("expression", "on_calendar"),
    [
        ("*/15 * * * *", ["*-*-* *:00/15:00"]),
        ("30 2 * * 1-5", ["Mon..Fri *-*-* 02:30:00"]),
        ("0 */6 * * *", ["*-*-* 00/6:00:00"]),
        ("5 4 * * sun", ["Sun *-*-* 04:05:00"]),
        ("15 14 1 * 1", ["Mon *-*-* 14:15:00", "*-*-01 14:15:00"]),
        ("0 0 * * 0,6", ["Sat,Sun *-*-* 00:00:00"]),
    ],
)
def test_on_calendar_reads_like_what_a_person_would_write(expression, on_calendar):
    assert parse(expression).on_calendar() == on_calendar


@pytest.mark.parametrize(
    ("expression", "names"),
    [
        ("61 * * * *", 'the minute field "61" is out of range'),
        ("* 24 * * *", 'the hour field "24" is out of range'),
        ("* * 0 * *", 'the day-of-month field "0" is out of range'),
        ("* * * 13 *", 'the month field "13" is out of range'),
        ("* * * * 8", 'the day-of-week field "8" is out of range'),
        ("* * * foo *", 'the month field "foo" has an unknown value'),
        ("* * * * 5-1", 'the day-of-week field "5-1" has a range 5-1 that runs backwards'),
        ("*/0 * * * *", 'the minute field "*/0" has a step of 0'),
        ("15 10 L * *", 'the day-of-month field "L" has an unknown value'),
        ("0 0 1#2 * *", 'the day-of-month field "1#2" is malformed'),
        ("0 0 30 2 *", "the day-of-month field 30 never falls in the month field 2"),
        ("1 2 3", "has 3 fields"),
        ("@reboot", "@reboot is not a calendar time"),
        ("@fortnightly", "unknown macro"),
    ],
)
def test_a_bad_or_inexpressible_cron_is_one_usage_error_naming_the_field(expression, names):
    with pytest.raises(CronError) as caught:
        parse(expression, source="--cron")
    line = caught.value.one_line()
    assert names in line
    assert line.startswith(f'--cron "{expression}"')
    assert "\n" not in line
    assert caught.value.exit_code == ExitCode.USAGE
