"""Help text for people: examples for every command and value names instead of type names.

Applied to Typer's command tree once at start-up (`polish`); the contract test checks that
every command of the tree has examples here, so a new command cannot ship without them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# command path (without "marketdata") -> example command lines
EXAMPLES: dict[str, tuple[str, ...]] = {
    "cache rebuild": (
        "marketdata cache rebuild",
        "marketdata cache rebuild --symbols BTC-USD,ETH-USD --json",
    ),
    "rebuild-cache": ("marketdata rebuild-cache",),
    "cache invalidate": ("marketdata cache invalidate 'market:BTC-USD:*'",),
    "cache stats": ("marketdata cache stats", "marketdata cache stats --json"),
    "db stats": ("marketdata db stats", "marketdata db stats --json"),
    "db prune": ("marketdata db prune --dry-run", "marketdata db prune -i 1m --older-than 90d"),
    "db maintain": ("marketdata db maintain",),
    "worker": ("marketdata worker --concurrency 4",),
    "jobs": ("marketdata jobs", "marketdata jobs --json"),
    "jobs retry": ("marketdata jobs retry --all-failed", "marketdata jobs retry 42"),
    "jobs cancel": ("marketdata jobs cancel 42 43",),
    "ingest": (
        "marketdata ingest -s BTC-USD,ETH-USD -i 1h,1d",
        "marketdata ingest -s AAPL -p yahoo --since 2024-01-01 --dry-run",
    ),
    "replay": ("marketdata replay --lookback-days 7 -s BTC-USD",),
    "gaps": ("marketdata gaps -s BTC-USD -i 1h", "marketdata gaps --json"),
    "rejects": (
        "marketdata rejects -s BTC-USD --since 7d",
        "marketdata rejects purge --before 30d --yes",
    ),
    "rejects list": ("marketdata rejects list -s BTC-USD --since 7d --json",),
    "rejects purge": ("marketdata rejects purge --before 30d --yes",),
    "show": ("marketdata show BTC-USD -n 10", "marketdata show AAPL --aggregate month --chart"),
    "compare": ("marketdata compare BTC-USD ETH-USD -w 90",),
    "verify": ("marketdata verify -s BTC-USD --against kraken --lookback-days 7",),
    "metrics": ("marketdata metrics --since 7d", "marketdata metrics --format prometheus"),
    "runs": ("marketdata runs -n 5", "marketdata runs --status failed --json"),
    "status": ("marketdata status", "marketdata status -s BTC-USD --json"),
    "analytics rebuild": ("marketdata analytics rebuild -s BTC-USD --dry-run",),
    "markets list": ("marketdata markets list --json",),
    "markets add": (
        "marketdata markets add BTC-USD",
        "marketdata markets add AAPL --provider-symbol stooq=aapl.us",
    ),
    "markets disable": ("marketdata markets disable DOGE-USD",),
    "markets enable": ("marketdata markets enable DOGE-USD",),
    "providers list": ("marketdata providers list --json",),
    "providers check": ("marketdata providers check coinbase",),
    "db upgrade": ("marketdata db upgrade", "marketdata db upgrade --json"),
    "db downgrade": ("marketdata db downgrade 0003 --yes",),
    "db current": ("marketdata db current --json",),
    "db history": ("marketdata db history",),
    "db check": ("marketdata db check", "marketdata db check --json"),
    "db shell": ("marketdata db shell", "marketdata db shell -- -c 'select count(*) from candles'"),
    "config show": ("marketdata config show", "marketdata --env-file prod.env config show --json"),
    "config example": ("marketdata config example > marketdata.env",),
    "alert test": ("marketdata alert test --severity error",),
    "alert unit-failed": ("marketdata alert unit-failed marketdata-ingest.service",),
    "schedule render": ("marketdata schedule render --cron '0 * * * *'",),
    "schedule install": ("marketdata schedule install --dry-run",),
    "schedule status": ("marketdata schedule status --json",),
    "schedule run": ("marketdata schedule run --cron '*/15 * * * *' -- ingest -s BTC-USD",),
}

# option or argument name -> the value's name in help (instead of <str>, <int>, list[str])
VALUE_NAMES = {
    "symbols": "SYMBOLS",
    "symbol": "SYMBOL",
    "interval": "INTERVAL",
    "provider": "PROVIDER",
    "since": "WHEN",
    "until": "WHEN",
    "before": "WHEN",
    "lookback_days": "DAYS",
    "last": "N",
    "limit": "N",
    "window": "N",
    "env_file": "FILE",
    "database_url": "URL",
    "log_level": "LEVEL",
    "log_format": "text|json",
    "severity": "SEVERITY",
    "revision": "REVISION",
    "tolerance": "FRACTION",
    "volume_tolerance": "FRACTION",
}


def walk(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command of the tree, groups included, with its path below the root."""
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from walk(sub, (*path, name))


HELP_OPTION_NAMES = ["-h", "--help"]


def polish(root: Any) -> None:
    """Add the examples as each command's epilog and give every value a plain name."""
    import typer

    for path, command in walk(root):
        examples = EXAMPLES.get(" ".join(path))
        if examples and not command.epilog:
            command.epilog = "Examples:\n\n" + "\n\n".join(f"  $ {e}" for e in examples)
        # the help option is made on first use and then kept: make it now to name it too
        help_option = command.get_help_option(
            typer.Context(command, help_option_names=HELP_OPTION_NAMES)
        )
        params = [*command.params, help_option]
        for param in params:
            if param is None or param.metavar is not None:
                continue
            if param.param_type_name == "argument":
                # an argument is shown by its name; its type is not for people
                setattr(param, "display_type_rich", _no_type)  # noqa: B010
            elif getattr(param, "is_flag", False):
                param.metavar = ""
            elif not param.type_descriptor.is_choice:
                param.metavar = VALUE_NAMES.get(param.name or "", (param.name or "value").upper())


def _no_type(ctx: Any) -> None:
    return None
