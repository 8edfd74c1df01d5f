"""RUNBOOK.md: every `marketdata ...` command in it exists with the options it shows."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

RUNBOOK = Path(__file__).resolve().parents[2] / "RUNBOOK.md"
SECTIONS = [
    "System overview",
    "On-call duties",
    "Monitoring",
    "Run procedures",
    "Manual ingestion",
    "Scheduled ingestion",
    "Metrics",
    "Alerting",
    "Failure scenarios",
    "Database connectivity",
    "Cache failures",
    "Provider outages",
    "High latency or timeouts",
    "Recovery",
    "Retry ingestion",
    "Rebuild the cache",
    "Replay historical data",
    "Maintenance",
    "Dependency updates",
    "Migrations",
    "Vacuum and analyze",
    "database-outage drill",
    "Escalation",
    "Useful commands",
]
# `marketdata` as a command word: at the start, after a space or a path (…/bin/marketdata)
_COMMAND = re.compile(r"(?:^|(?<=[\s/]))marketdata\s+(\S.*)$")


def commands_in(markdown: str) -> list[list[str]]:
    """Each `marketdata ...` command in code: shell blocks (```sh) line by line, and inline
    spans; pictures (plain ``` blocks) and HTML comments are not commands."""
    found: list[str] = []
    fence: str | None = None
    markdown = re.sub(r"<!--.*?-->", "", markdown, flags=re.DOTALL)
    for line in markdown.splitlines():
        if line.startswith("```"):
            fence = None if fence is not None else line[3:].strip()
            continue
        if fence is not None:
            if fence in ("sh", "shell", "console", "bash"):
                found.extend(_commands_in_code(line))
        else:
            for span in re.findall(r"`([^`]+)`", line):
                found.extend(_commands_in_code(span))
    return [shlex.split(text) for text in found]


def _commands_in_code(code: str) -> list[str]:
    code = re.split(r"\s+#\s", code, maxsplit=1)[0]  # a trailing comment
    match = _COMMAND.search(code.split("|")[0].split("&&")[-1])
    return [match.group(1).strip()] if match else []


def check_command(cli, args: list[str]) -> str | None:
    """None when `marketdata ARGS --help` shows the command's help, else what went wrong.

    `--help` goes before a `--` (what follows it belongs to another program); the command
    that `schedule run` runs, after its `--`, is checked the same way."""
    head, dash, tail = _split(args)
    checks = [head]
    if dash and head[:2] == ["schedule", "run"]:
        checks.append(tail)
    for part in checks:
        result = cli([*part, "--help"])
        if result.returncode != 0 or "Usage:" not in result.stdout:
            error = (result.stderr.strip().splitlines() or [""])[-2:]
            return f"marketdata {shlex.join(part)}: exit {result.returncode}: {error}"
    return None


def _split(args: list[str]) -> tuple[list[str], bool, list[str]]:
    if "--" not in args:
        return args, False, []
    at = args.index("--")
    return args[:at], True, args[at + 1 :]


def test_the_runbook_has_every_section_the_issue_asks_for():
    headings = [line for line in RUNBOOK.read_text().splitlines() if line.startswith("#")]
    for section in SECTIONS:
        assert any(section.lower() in h.lower() for h in headings), section


def test_every_marketdata_command_in_the_runbook_exists_with_its_options(cli):
    commands = commands_in(RUNBOOK.read_text())
    assert len(commands) >= 40
    assert {c[0] for c in commands} >= {"ingest", "schedule", "db", "replay", "providers"}
    unique = {tuple(args): args for args in commands}.values()
    problems = [p for args in unique if (p := check_command(cli, args))]
    assert problems == []


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("`marketdata ingest --no-such-option`", "No such option"),
        ("`marketdata frobnicate --now`", "No such command"),
        ("```sh\nmarketdata schedule explode\n```", "No such command"),
        ("```sh\n$ marketdata db shell --psql\n```", "No such option"),
        ("`/opt/marketdata/bin/marketdata db shell --pager`", "No such option"),
        ("`marketdata schedule run -- ingest --hourly`", "No such option"),
    ],
)
def test_the_check_catches_an_unknown_command_or_option(cli, line, problem):
    [args] = commands_in(line)
    found = check_command(cli, args)
    assert found is not None and problem in found


def test_commands_are_found_in_code_only_and_without_comments_or_pipes():
    text = (
        "prose about marketdata ingest is not a command\n"
        "```\npicture: marketdata ingest --> PostgreSQL\n```\n"
        "<!-- waits for `marketdata metrics` -->\n"
        "```sh\n$ marketdata ingest --dry-run   # what the next run does\n"
        "marketdata runs --json | jq .\n"
        "systemd-run -p X=1 /opt/marketdata/bin/marketdata replay --lookback-days 5\n```\n"
        "Run `marketdata db check` and `systemctl start marketdata-ingest.service`.\n"
    )
    assert commands_in(text) == [
        ["ingest", "--dry-run"],
        ["runs", "--json"],
        ["replay", "--lookback-days", "5"],
        ["db", "check"],
    ]
