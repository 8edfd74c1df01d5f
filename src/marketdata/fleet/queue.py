"""The fleet's procrastinate app: the connector on DATABASE_URL, the pair task (job lock and
queueing lock per pair, bounded retries with backoff) and the periodic tick."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from marketdata.errors import InputError
from marketdata.fleet.pairs import PairJob, ProviderChains, run_pair

if TYPE_CHECKING:
    import procrastinate

    from marketdata.context import AppContext
    from marketdata.pipeline import IngestRequest
    from marketdata.storage.locks import RunLease

QUEUE = "marketdata"
PAIR_TASK = "marketdata.ingest_pair"
TICK_TASK = "marketdata.tick"
TICK_LOCK = "marketdata:tick"


def require_postgres(app: AppContext, what: str) -> None:
    """InputError (exit 2) unless DATABASE_URL is PostgreSQL: the job queue is its tables."""
    if app.target.dialect != "postgresql":
        raise InputError(
            f"{what} needs PostgreSQL: the job queue lives in the database, and DATABASE_URL "
            f"is {app.target.dialect}",
            hint="set DATABASE_URL to a PostgreSQL server and run `marketdata db upgrade`",
        )


def conninfo(app: AppContext) -> str:
    """DATABASE_URL as libpq understands it (psycopg's own connection string)."""
    url = app.target.url.set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


@dataclass
class Fleet:
    """The procrastinate app of one command, with what its jobs share in this process."""

    app: AppContext
    queue: procrastinate.App
    chains: ProviderChains
    # set to roll back the pairs in flight (a second stop signal)
    cancel: threading.Event = field(default_factory=threading.Event)
    _locks: RunLease | None = None
    _locks_made: threading.Lock = field(default_factory=threading.Lock)

    @property
    def locks(self) -> RunLease:
        """The worker's lock session, shared by its jobs (made at the first job): the pairs'
        advisory locks, and the short reads of a job, one round trip each."""
        with self._locks_made:
            if self._locks is None:
                from marketdata.storage.locks import RunLease

                self._locks = RunLease(self.app.engine(), None, self.app.lock_dir())
            return self._locks

    def close(self) -> None:
        """Close the shared provider clients and the lock session."""
        self.chains.close()
        if self._locks is not None:
            self._locks.release()


def build_fleet(app: AppContext, *, tick: IngestRequest | None = None, jobs: int = 1) -> Fleet:
    """The app with its tasks; with `tick`, the periodic task that defers that request on
    INGESTION_CRON_EXPRESSION (procrastinate defers each tick once for the whole fleet).
    `jobs` is how many jobs run at once in this process: it bounds the queue's own pool."""
    import procrastinate

    require_postgres(app, "the worker fleet")
    settings = app.settings
    queue = procrastinate.App(
        connector=procrastinate.PsycopgConnector(
            conninfo=conninfo(app),
            kwargs={"connect_timeout": settings.db_connect_timeout},
            # psycopg's pool opens 4 connections by default: 4 workers with their own pools
            # and engines took ~40 of the server's 100. The listener holds one; fetching and
            # finishing a job take one per job at once; one for heartbeats and stall checks.
            min_size=1,
            max_size=jobs + 2,
        )
    )
    fleet = Fleet(app, queue, ProviderChains(app))
    attempts = settings.worker_retry_attempts
    retry: Any = (
        procrastinate.RetryStrategy(
            max_attempts=attempts, exponential_wait=settings.worker_retry_backoff
        )
        if attempts
        else False
    )

    @queue.task(name=PAIR_TASK, queue=QUEUE, retry=retry, pass_context=True)
    def ingest_pair(context: procrastinate.JobContext, /, **args: Any) -> None:
        job = PairJob(**args)
        assert context.job is not None
        tried = context.job.attempts  # earlier attempts: retries, or runs a dead worker began
        run_pair(
            app,
            job,
            fleet.chains,
            fleet.cancel,
            fleet.locks,
            final=tried >= attempts,
            retry=tried > 0,
        )

    if tick is not None:
        request = tick

        @queue.periodic(cron=settings.ingestion_cron_expression, periodic_id="tick")
        @queue.task(name=TICK_TASK, queue=QUEUE, queueing_lock=TICK_LOCK, pass_context=True)
        def periodic_tick(context: procrastinate.JobContext, timestamp: int) -> None:
            from marketdata.fleet.enqueue import enqueue

            enqueue(fleet, request)

    return fleet
