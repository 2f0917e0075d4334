"""The notify worker: consumes events from the ``notify`` queue and delivers messages.

One arq worker runs every job (see :mod:`.delivery.jobs`) plus two crons each minute
(digests due, the sweeper). Engine, session factory, channel pools and the rate limiter are
built in ``on_startup`` and kept in ``ctx``; ``on_shutdown`` closes them.

SIGTERM/SIGINT: the worker stops taking jobs and gives running ones ``shutdown_grace_s`` to
finish; any still running are then cancelled. A cancelled send job lets the message it has
on the wire finish and be recorded (a cancellation lands only between messages), gives back
what it had not sent (due at once), and arq re-queues it. A worker starting up runs one
sweep at once, so what was given back goes out without waiting for the minute's sweeper.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from arq import Retry
from arq.cron import cron
from arq.worker import Function, Worker, func
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, OperationalError

from pubwatch_notify.channels.factory import build_channels
from pubwatch_notify.delivery import jobs
from pubwatch_notify.delivery.clock import Clock, system_clock
from pubwatch_notify.delivery.job_names import (
    SEND_DIGESTS_JOB,
    SEND_EVENT_PAGE_JOB,
    SEND_TO_SUBSCRIPTIONS_JOB,
)
from pubwatch_notify.delivery.ratelimit import RateLimiter
from pubwatch_notify.delivery.runtime import RUNTIME_KEY, Runtime, read_topic_names
from pubwatch_notify.delivery.sender import backoff_s
from pubwatch_notify.delivery.sent_records import SentRecorder
from pubwatch_notify.links import Links
from pubwatch_notify.settings import NotifySettings
from pubwatch_notify.store.engine import WriteTurns, make_engine, make_sessionmaker
from pubwatch_notify.store.migrate import upgrade_to_head
from pubwatch_notify.subscriptions.confirmation import SEND_CONFIRMATION_JOB, send_confirmation
from pubwatch_notify.tokens import TokenSigner
from pubwatch_shared.embedded_redis import redis_url_or_embedded
from pubwatch_shared.heartbeat import heartbeating
from pubwatch_shared.queue import (
    HANDLE_EVENT_JOB,
    NOTIFY_QUEUE,
    deserialize,
    redis_settings,
    serialize,
)

log = logging.getLogger("pubwatch.notify.worker")

CLOCK_KEY = "pubwatch_clock"
HEARTBEAT_KEY = "pubwatch_heartbeat"
HEARTBEAT_SERVICE = "notify"
# A job that cannot reach the database or Redis retries this often before arq gives up;
# an event is never dropped because the store was briefly away.
INFRASTRUCTURE_TRIES = 30

JobFunction = Callable[..., Awaitable[Any]]


def _retry_when_infrastructure_fails(job: JobFunction, settings: NotifySettings) -> Any:
    """``job``, retried with backoff when the database or Redis is unreachable."""

    @functools.wraps(job)
    async def wrapper(ctx: dict[str, Any], *args: Any) -> Any:
        try:
            return await job(ctx, *args)
        except (OperationalError, DBAPIError, ConnectionError, OSError) as exc:
            delay_s = backoff_s(
                ctx.get("job_try", 1),
                settings.retry_base_delay_s,
                settings.retry_max_delay_s,
                random.random(),
            )
            log.warning(
                "job hit an infrastructure error, will retry",
                extra={
                    "job": job.__name__,
                    "error": type(exc).__name__,
                    "defer_s": round(delay_s, 2),
                },
            )
            raise Retry(defer=delay_s) from exc

    return wrapper


def job_functions(settings: NotifySettings) -> list[Function]:
    send_tries = settings.send_max_tries + 1  # our own bound acts first (see sender)
    timeout_s = settings.send_job_timeout_s

    def wrap(job: JobFunction) -> Any:
        return _retry_when_infrastructure_fails(job, settings)

    return [
        func(
            wrap(jobs.handle_event),
            name=HANDLE_EVENT_JOB,
            max_tries=INFRASTRUCTURE_TRIES,
            timeout=timeout_s,
        ),
        func(
            wrap(jobs.send_event_page),
            name=SEND_EVENT_PAGE_JOB,
            max_tries=send_tries,
            timeout=timeout_s,
        ),
        func(
            wrap(jobs.send_to_subscriptions),
            name=SEND_TO_SUBSCRIPTIONS_JOB,
            max_tries=send_tries,
            timeout=timeout_s,
        ),
        func(
            wrap(jobs.send_digests), name=SEND_DIGESTS_JOB, max_tries=send_tries, timeout=timeout_s
        ),
        func(
            wrap(send_confirmation),
            name=SEND_CONFIRMATION_JOB,
            max_tries=send_tries,
            timeout=timeout_s,
        ),
    ]


_REDIS_AWAY = (RedisConnectionError, RedisTimeoutError, BusyLoadingError, ConnectionError, OSError)
REDIS_RETRY_S = 1.0


class ResilientWorker(Worker):
    """An arq worker that rides out a Redis restart instead of exiting.

    arq's poll loop lets a connection error end the worker; here the poll is logged and
    tried again a second later, and a job slot taken for a job that could not be started
    is given back. Jobs whose bookkeeping failed while Redis was away stay on the queue and
    run again (they are idempotent).
    """

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except _REDIS_AWAY as exc:
            log.warning("redis unreachable, will retry", extra={"error": type(exc).__name__})
            await asyncio.sleep(REDIS_RETRY_S)

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        for job_id in job_ids:
            counted = self.job_counter
            try:
                await super().start_jobs([job_id])
            except _REDIS_AWAY:
                if self.job_counter > counted and job_id.decode() not in self.tasks:
                    self.job_counter -= 1
                    self.sem.release()
                raise


def build_worker(
    settings: NotifySettings,
    redis_url: str,
    *,
    clock: Clock = system_clock,
    burst: bool = False,
    poll_delay_s: float = 0.5,
    handle_signals: bool = True,
) -> Worker:
    """An arq worker for notify's queue. Tests pass ``clock`` and ``burst=True``."""

    async def on_startup(ctx: dict[str, Any]) -> None:
        engine = make_engine(settings.resolved_database_url)
        await upgrade_to_head(engine)
        write_turns = WriteTurns(engine)
        ctx[RUNTIME_KEY] = Runtime(
            settings=settings,
            engine=engine,
            sessions=make_sessionmaker(engine),
            channels=build_channels(settings),
            redis=ctx["redis"],
            limiter=RateLimiter(ctx["redis"]),
            links=Links(settings.public_url, TokenSigner(settings.secret_key)),
            clock=ctx.get(CLOCK_KEY, system_clock),
            topic_names=read_topic_names(settings),
            write_turns=write_turns,
            sent_records=SentRecorder(engine, write_turns),
        )
        # Liveness for `pubwatch notify check-worker` and /readyz, closed in on_shutdown.
        heartbeat = contextlib.AsyncExitStack()
        await heartbeat.enter_async_context(heartbeating(ctx["redis"], HEARTBEAT_SERVICE))
        ctx[HEARTBEAT_KEY] = heartbeat
        log.info("notify worker started", extra={"max_jobs": settings.worker_max_jobs})
        # What a stopped worker's cancelled jobs handed back (and any stale claim or lost
        # job) is queued now, not at the sweeper's next minute.
        try:
            queued = await jobs.recover_at_startup(ctx[RUNTIME_KEY])
        except (OperationalError, DBAPIError, *_REDIS_AWAY) as exc:
            log.warning(
                "start-up sweep failed; the sweeper will catch up",
                extra={"error": type(exc).__name__},
            )
        else:
            if queued:
                log.info("start-up sweep queued jobs", extra={"jobs": queued})

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        heartbeat = ctx.pop(HEARTBEAT_KEY, None)
        if isinstance(heartbeat, contextlib.AsyncExitStack):
            await heartbeat.aclose()
        runtime = ctx.pop(RUNTIME_KEY, None)
        if isinstance(runtime, Runtime):
            await runtime.channels.close()
            await runtime.sent_records.close()
            await runtime.engine.dispose()
        log.info("notify worker stopped")

    return ResilientWorker(
        functions=job_functions(settings),
        cron_jobs=[
            cron(jobs.enqueue_due_digests, name="enqueue_due_digests", second=0),
            cron(jobs.sweep, name="sweep", second=30),
        ],
        redis_settings=redis_settings(redis_url),
        queue_name=NOTIFY_QUEUE,
        job_serializer=serialize,
        job_deserializer=deserialize,
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        max_jobs=settings.worker_max_jobs,
        job_timeout=settings.send_job_timeout_s,
        keep_result=3600,
        burst=burst,
        poll_delay=poll_delay_s,
        handle_signals=handle_signals,
        job_completion_wait=settings.shutdown_grace_s,
        ctx={CLOCK_KEY: clock},
    )


def run_worker(settings: NotifySettings) -> int:
    """``pubwatch notify worker``: run until SIGTERM/SIGINT. Returns the exit code."""
    with redis_url_or_embedded(settings.redis_url, settings.var_dir) as url:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            build_worker(settings, url).run()
        finally:
            asyncio.set_event_loop(None)
            loop.close()
    return 0
