"""Provider drills: bursts of HTTP 500s, 429 with Retry-After, timeouts, connection resets and
garbage bodies from the fake Coinbase for one pair, each with and without a fallback chain
(coinbase,kraken: the fake Kraken serves the same candles); and transient ones that retries
ride out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.cli.helpers import run as cli
from tests.drills.common import (
    BARS,
    INGEST,
    Database,
    Row,
    Timed,
    World,
    error_lines,
    follow_up,
    tally,
)
from tests.fakes.server import Reply, Request

TARGET = "ETH-USD"  # the pair the fault hits; the five others are served as usual


@dataclass(frozen=True)
class Fault:
    """What the provider does wrong, the settings that make it quick, and the words the
    pair's failure must carry (the cause, as a user reads it)."""

    name: str
    reply: Reply
    cause: str
    settings: dict[str, Any] = field(default_factory=dict)
    spacing: float = 0.0  # the least time between two tries (Retry-After)


FAULTS = [
    Fault("HTTP 500s", Reply(500, "Internal Server Error"), "HTTP 500"),
    Fault(
        "429 with Retry-After: 1",
        Reply(429, {"message": "Public rate limit exceeded"}, headers={"Retry-After": "1"}),
        "HTTP 429",
        spacing=1.0,
    ),
    Fault("timeouts", Reply(200, [], delay=3.0), "timed out", {"http_timeout": 1}),
    Fault("connection resets", Reply(reset=True), "unreachable"),
    Fault("garbage bodies", Reply(200, "<html><body>oops</body></html>"), "not JSON"),
]

KEYS = ["500s", "429s", "timeouts", "resets", "garbage"]


def hitting(world: World, reply: Callable[[Request], Reply | None]) -> Timed:
    """The fake Coinbase, except for TARGET's requests when `reply` gives a fault for them."""

    def answer(request: Request) -> Reply:
        fault = reply(request) if TARGET in request.path else None
        return fault if fault is not None else world.fake(request)

    timed = Timed(answer)
    world.http.handler = timed
    return timed


def named(stderr: str, fault: Fault) -> list[str]:
    """The lines of the run's summary that name a failed pair with `fault`'s cause."""
    return [line for line in stderr.splitlines() if fault.cause in line and "\t" not in line]


def target_outcome(db: Database) -> tuple[str, str | None, str | None]:
    """TARGET's outcome in the last run: status, provider, error."""
    [row] = db.rows(
        "select status, provider, error from ingestion_outcomes where symbol = :s "
        "and run_id = (select max(id) from ingestion_runs)",
        s=TARGET,
    )
    return row[0], row[1], row[2]


def persistent(world: World, fault: Fault, chain: bool) -> Row:
    """`fault` on every request of TARGET for the whole run."""
    providers = "coinbase,kraken" if chain else "coinbase"
    expected = (
        f"exit 0, {TARGET} from kraken, nothing lost"
        if chain
        else f"exit 3, {TARGET} failed naming the cause, next run catches up"
    )
    row = Row(f"provider {fault.name} for one pair, INGESTION_PROVIDER={providers}", expected)
    db = world.database("sqlite")
    timed = hitting(world, lambda request: fault.reply)
    done = cli(INGEST, world.env(db.url, ingestion_provider=providers, **fault.settings))
    world.http.handler = world.fake
    row.exit_code = str(done.returncode)
    status, provider, error = target_outcome(db)
    tries = len([path for _, path in timed.seen if TARGET in path])
    if chain:
        [(from_kraken,)] = db.rows(
            "select count(*) from candles where symbol = :s and provider = 'kraken'", s=TARGET
        )
        row.observed = f"{db.statuses()[-1]}, {TARGET} {status} via {provider} ({from_kraken} bars)"
        tally(world, db, row)  # no next run: the chain filled it
        row.ok = done.returncode == 0 and provider == "kraken" and from_kraken == BARS
    else:
        said = error_lines(done.stderr)
        gaps = timed.gaps(TARGET)
        spaced = f" {min(gaps):.2f} s apart" if gaps else ""
        row.observed = f"{db.statuses()[-1]}, {tries} tries{spaced}; {error or '?'}"
        follow_up(world, db)
        tally(world, db, row)
        row.ok = (
            done.returncode == 3
            and status == "failed"
            and fault.cause in (error or "")
            and said == ["marketdata: error: run 1: 1 of 6 pairs failed"]
            and any(line.startswith(f"{TARGET} 1h: ") for line in named(done.stderr, fault))
            and "Traceback" not in done.stderr
            and all(gap >= fault.spacing for gap in gaps)
        )
    row.ok = row.ok and row.lost == 0 and row.duplicated == 0
    return row


def transient_500s(world: World) -> Row:
    """Two 500s for TARGET, then answers: the retries ride it out, no chain needed."""
    row = Row("provider burst of two HTTP 500s, then answers (no fallback)", "exit 0, retried")
    db = world.database("sqlite")
    burst = [Reply(500, "Internal Server Error")] * 2
    timed = hitting(world, lambda request: burst.pop(0) if burst else None)
    done = cli(INGEST, world.env(db.url, http_retry_attempts=3))
    world.http.handler = world.fake
    tries = len(timed.gaps(TARGET)) + 1
    row.exit_code = str(done.returncode)
    row.observed = f"{db.statuses()[-1]}, {TARGET} took {tries} tries"
    tally(world, db, row)
    row.ok = done.returncode == 0 and tries == 3 and row.lost == 0 and row.duplicated == 0
    return row


def retry_after_honoured(world: World) -> Row:
    """One 429 with Retry-After: 2 for TARGET: the retry comes 2 s later, not before."""
    row = Row("provider 429 with Retry-After: 2, once (no fallback)", "retry >= 2 s later, exit 0")
    db = world.database("sqlite")
    once = [Reply(429, {"message": "slow down"}, headers={"Retry-After": "2"})]
    timed = hitting(world, lambda request: once.pop(0) if once else None)
    done = cli(INGEST, world.env(db.url))
    world.http.handler = world.fake
    gaps = timed.gaps(TARGET)
    row.exit_code = str(done.returncode)
    row.observed = f"{db.statuses()[-1]}, retried after {gaps[0]:.2f} s" if gaps else "no retry"
    tally(world, db, row)
    # the upper bound only says the wait was Retry-After's, not a backoff of its own on top
    row.ok = done.returncode == 0 and len(gaps) == 1 and 2.0 <= gaps[0] < 4.0
    row.ok = row.ok and row.lost == 0 and row.duplicated == 0
    return row


def drills() -> list[tuple[str, Callable[[World], Row]]]:
    """Every provider drill, keyed, in table order."""
    made: list[tuple[str, Callable[[World], Row]]] = [
        ("provider-500-burst", transient_500s),
        ("provider-retry-after-once", retry_after_honoured),
    ]
    for key, fault in zip(KEYS, FAULTS, strict=True):
        made.append((f"provider-{key}", lambda w, f=fault: persistent(w, f, chain=False)))
        made.append((f"provider-{key}-chain", lambda w, f=fault: persistent(w, f, chain=True)))
    return made
