"""`python -m tests.benchmarks [NAME...]` (what `make bench` runs): start-up, ingest,
analytics, metrics and cache figures; names pick some of them (`make bench BENCH=cache`), and
`instructions` (the cache's cost in instructions, under valgrind) runs only when named."""

from __future__ import annotations

import os
import platform
import sys
import time

from tests.benchmarks import (
    analytics,
    cache,
    ingest,
    instructions,
    metrics,
    partitioned,
    startup,
)
from tests.benchmarks.common import BenchError, Report, Server, log, render


def main() -> int:
    """Run every benchmark on fresh databases, print the table; 0 unless something broke."""
    started = time.perf_counter()
    server = Server.from_env()
    report = Report()
    chosen = set(sys.argv[1:]) or {
        "startup",
        "ingest",
        "analytics",
        "metrics",
        "cache",
        "partitioned",
    }
    try:
        version = server.version()
        if "startup" in chosen:
            startup.run(report)
        if "ingest" in chosen or "analytics" in chosen:
            first_ingest_seconds = ingest.run(server, report)
            analytics.run(report, first_ingest_seconds)
        if "metrics" in chosen:
            metrics.run(server, report)
        if "cache" in chosen:
            cache.run(server, report)
        if "partitioned" in chosen:
            partitioned.run(server, report)
        if "instructions" in chosen:  # long (valgrind): only when named
            instructions.run(server, report)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    finally:
        server.drop_all()
    title = (
        f"marketdata benchmarks: PostgreSQL {version} at {server.url.host}:{server.url.port}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{time.perf_counter() - started:.0f} s in all"
    )
    print(render(report, title))
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
