"""`python -m tests.benchmarks` (what `make bench` runs): ingest, analytics and metrics figures."""

from __future__ import annotations

import os
import platform
import sys
import time

from tests.benchmarks import analytics, ingest, metrics, partitioned
from tests.benchmarks.common import BenchError, Report, Server, log, render


def main() -> int:
    """Run every benchmark on fresh databases, print the table; 0 unless something broke."""
    started = time.perf_counter()
    server = Server.from_env()
    report = Report()
    try:
        version = server.version()
        first_ingest_seconds = ingest.run(server, report)
        analytics.run(report, first_ingest_seconds)
        metrics.run(server, report)
        partitioned.run(server, report)
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
