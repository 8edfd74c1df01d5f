"""`marketdata worker`: a procrastinate worker running pair jobs, deferring ticks on
INGESTION_CRON_EXPRESSION, and handing the jobs of dead workers to live ones."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from loguru import logger

from marketdata.fleet.queue import QUEUE, build_fleet

if TYPE_CHECKING:
    from marketdata.context import AppContext
    from marketdata.fleet.queue import Fleet
    from marketdata.pipeline import IngestRequest


def run_worker(
    app: AppContext,
    *,
    concurrency: int,
    queues: list[str],
    tick: IngestRequest | None,
    name: str | None = None,
) -> None:
    """Work until SIGTERM or SIGINT. The first signal stops fetching jobs and lets the pairs
    in flight finish; a second rolls them back (their jobs are retried by another worker)."""
    fleet = build_fleet(app, tick=tick, jobs=concurrency)
    try:
        asyncio.run(_work(fleet, concurrency, queues or [QUEUE], name))
    finally:
        fleet.close()


async def _work(fleet: Fleet, concurrency: int, queues: list[str], name: str | None) -> None:
    from procrastinate.worker import Worker

    settings = fleet.app.settings
    loop = asyncio.get_running_loop()
    # sync jobs run in the loop's default executor: give it a thread per job
    loop.set_default_executor(ThreadPoolExecutor(concurrency + 2, thread_name_prefix="job"))
    async with fleet.queue.open_async():
        worker = Worker(
            fleet.queue,
            queues=queues,
            name=name,
            concurrency=concurrency,
            install_signal_handlers=False,
            update_heartbeat_interval=settings.worker_heartbeat_seconds,
            stalled_worker_timeout=settings.worker_stall_seconds,
            fetch_job_polling_interval=min(5.0, settings.worker_heartbeat_seconds),
        )
        stops = 0

        def on_signal(signum: int) -> None:
            nonlocal stops
            stops += 1
            if stops == 1:
                logger.info(
                    "worker stopping ({}): no new jobs; the pairs in flight finish",
                    signal.Signals(signum).name,
                )
                worker.stop()  # type: ignore[no-untyped-call]
            else:
                logger.warning("worker stopping now: the pairs in flight roll back")
                fleet.cancel.set()
                fleet.app.cancel.set(signum)  # every wait of the pairs in flight ends now

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        rescue = asyncio.create_task(_retry_stalled(fleet), name="stalled jobs")
        prune = asyncio.create_task(_delete_old_jobs(fleet), name="old jobs")
        logger.info(
            "worker started: {} jobs at once on {}; ticks on {}",
            concurrency,
            ",".join(queues),
            settings.ingestion_cron_expression,
        )
        try:
            await worker.run()  # type: ignore[no-untyped-call]
        finally:
            rescue.cancel()
            prune.cancel()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
    logger.info("worker stopped")


async def _retry_stalled(fleet: Fleet) -> None:
    """Put the jobs of workers silent for WORKER_STALL_SECONDS back in the queue
    (procrastinate's stalled-job retrieval); every worker checks, the first one wins."""
    from procrastinate.exceptions import ConnectorException

    stall = fleet.app.settings.worker_stall_seconds
    manager = fleet.queue.job_manager
    while True:
        await asyncio.sleep(max(stall / 4, 0.25))
        try:
            stalled = await manager.get_stalled_jobs(seconds_since_heartbeat=stall, queue=QUEUE)
        except Exception as exc:  # noqa: BLE001 - a failed check is retried next period
            logger.warning("checking for stalled jobs failed: {}", exc)
            continue
        for job in stalled:
            try:
                await manager.retry_job(job)
            except ConnectorException as exc:  # another worker put it back first
                logger.debug("stalled job {} not retried here: {}", job.id, exc)
            else:
                logger.warning(
                    "job {} ({}) was stalled (its worker is silent for {}s): queued again",
                    job.id,
                    _pair_of(job.task_kwargs),
                    stall,
                )


async def _delete_old_jobs(fleet: Fleet) -> None:
    """Keep the queue small: 10,000 pairs every 15 minutes are a million jobs a day. The
    run history keeps every outcome; failed jobs stay until retried."""
    hours = fleet.app.settings.worker_keep_hours
    while True:
        try:
            await fleet.queue.job_manager.delete_old_jobs(
                nb_hours=hours, queue=QUEUE, include_cancelled=True
            )
        except Exception as exc:  # noqa: BLE001 - tried again next hour
            logger.warning("deleting old jobs failed: {}", exc)
        await asyncio.sleep(3600)


def _pair_of(args: Mapping[str, Any]) -> str:
    return f"{args.get('symbol', '?')} {args.get('interval', '?')}"
