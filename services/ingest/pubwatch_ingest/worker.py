"""The ingest worker: an arq worker on the ``ingest`` queue whose cron polls due topics.

The cron job runs every minute on one worker (arq makes cron jobs unique across workers)
and polls the topics whose ``poll_interval_min`` has passed since their last committed poll,
so a restart does not re-poll everything and a topic added to the file gets its baseline
within a minute. The per-topic locks keep it from colliding with ``pubwatch ingest poll``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from arq import Worker, cron

from pubwatch_ingest.poller import Poller
from pubwatch_ingest.runtime import build_poller, open_pool
from pubwatch_ingest.settings import IngestSettings
from pubwatch_shared.heartbeat import heartbeating
from pubwatch_shared.queue import INGEST_QUEUE, deserialize, redis_settings, serialize
from pubwatch_shared.topics import load_topics

log = logging.getLogger("pubwatch.ingest")

HEARTBEAT_SERVICE = "ingest"


async def poll_due_topics(ctx: dict[str, Any]) -> dict[str, int]:
    """Cron job: poll every topic whose interval has passed."""
    settings: IngestSettings = ctx["settings"]
    poller: Poller = ctx["poller"]
    # Re-read each time, so an operator's edit applies without a restart; a broken edit is
    # logged and the cycle skipped rather than polling half a file.
    topics = load_topics(settings.topics_file)
    reports = await poller.poll(topics, only_due=True)
    counts: dict[str, int] = {}
    for report in reports:
        counts[report.status] = counts.get(report.status, 0) + 1
    if any(status != "not-due" for status in counts):
        log.info("poll cycle done", extra=counts)
    return counts


def make_worker(settings: IngestSettings, redis_url: str) -> Worker:
    async def on_startup(ctx: dict[str, Any]) -> None:
        pool = await open_pool(redis_url)
        ctx["settings"] = settings
        ctx["ingest_pool"] = pool
        ctx["poller"] = build_poller(settings, pool)
        # Liveness for `pubwatch ingest check-worker` and /readyz: beats while the worker runs.
        heartbeat = contextlib.AsyncExitStack()
        await heartbeat.enter_async_context(heartbeating(pool, HEARTBEAT_SERVICE))
        ctx["heartbeat"] = heartbeat

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        heartbeat: contextlib.AsyncExitStack | None = ctx.pop("heartbeat", None)
        if heartbeat is not None:
            await heartbeat.aclose()
        poller: Poller | None = ctx.get("poller")
        if poller is not None:
            await poller.client.aclose()
        if "ingest_pool" in ctx:
            await ctx["ingest_pool"].aclose()

    return Worker(
        functions=[],
        cron_jobs=[
            cron(
                poll_due_topics,
                name="poll_due_topics",
                second=0,
                run_at_startup=True,
                timeout=settings.job_timeout_s,
            )
        ],
        queue_name=INGEST_QUEUE,
        redis_settings=redis_settings(redis_url),
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        job_serializer=serialize,
        job_deserializer=deserialize,
        job_timeout=settings.job_timeout_s,
        max_jobs=2,
        handle_signals=True,
    )


async def run_worker(settings: IngestSettings, redis_url: str) -> None:
    """Run until SIGTERM or SIGINT, then finish cleanly."""
    worker = make_worker(settings, redis_url)
    log.info(
        "ingest worker started",
        extra={"interval_min": settings.poll_interval_min, "rate_per_s": settings.requests_per_s},
    )
    try:
        await worker.async_run()
    except asyncio.CancelledError:
        # arq's signal handler cancels its main task; that is how a stop arrives here.
        pass
    finally:
        with contextlib.suppress(Exception):
            await worker.close()
        log.info("ingest worker stopped")
