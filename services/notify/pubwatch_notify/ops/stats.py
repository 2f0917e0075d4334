"""Read-only views of the system for operators: the database, the arq queue, ingest's counters.

Everything here is a cheap aggregate (GROUP BY on indexed columns, a few Redis reads), so
``/metrics`` can be scraped every few seconds and ``/admin`` loads fast.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from arq.constants import in_progress_key_prefix
from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from pubwatch_notify.store.models import (
    Delivery,
    DeliveryStatus,
    EventItemRow,
    StoredEvent,
    Subscription,
)
from pubwatch_notify.subscriptions.addresses import mask_address
from pubwatch_shared.heartbeat import live_workers
from pubwatch_shared.opskeys import (
    FIELD_SEPARATOR,
    INGEST_ANNOUNCED,
    INGEST_LAST_POLL,
    NCBI_LATENCY,
    NCBI_REQUESTS,
)
from pubwatch_shared.queue import NOTIFY_QUEUE

WORKER_SERVICES = ("ingest", "notify")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# -- the database -------------------------------------------------------------------------


async def events_by_type_and_source(session: AsyncSession) -> dict[tuple[str, str], int]:
    rows = await session.execute(
        select(StoredEvent.type, StoredEvent.source, func.count()).group_by(
            StoredEvent.type, StoredEvent.source
        )
    )
    return {(kind, source): count for kind, source, count in rows.all()}


async def deliveries_by_channel_and_status(
    session: AsyncSession, since: datetime | None = None
) -> dict[tuple[str, str], int]:
    statement = select(Delivery.channel, Delivery.status, func.count()).group_by(
        Delivery.channel, Delivery.status
    )
    if since is not None:
        statement = statement.where(Delivery.created_at >= since)
    rows = await session.execute(statement)
    return {(channel, status): count for channel, status, count in rows.all()}


async def failed_attempts_by_channel(session: AsyncSession) -> dict[str, int]:
    """Send attempts that failed (transient or permanent), i.e. the retries so far."""
    rows = await session.execute(
        select(Delivery.channel, func.coalesce(func.sum(Delivery.attempts), 0)).group_by(
            Delivery.channel
        )
    )
    return {channel: int(total) for channel, total in rows.all()}


async def articles_by_topic(session: AsyncSession) -> dict[str, int]:
    """Distinct articles (by PMID, else by URL) notify has received per topic."""
    identity = func.coalesce(EventItemRow.pmid, EventItemRow.url)
    rows = await session.execute(
        select(StoredEvent.topic, func.count(func.distinct(identity)))
        .join(EventItemRow, EventItemRow.event_id == StoredEvent.id)
        .group_by(StoredEvent.topic)
    )
    return {topic: count for topic, count in rows.all()}


@dataclass(frozen=True)
class Failure:
    delivery_id: int
    channel: str
    topic: str
    masked_address: str
    event_id: str
    reason: str
    attempts: int
    at: datetime


async def recent_failures(session: AsyncSession, limit: int = 20) -> list[Failure]:
    rows = await session.execute(
        select(
            Delivery.id,
            Delivery.channel,
            Subscription.topic,
            Subscription.address,
            StoredEvent.event_id,
            Delivery.last_error,
            Delivery.attempts,
            Delivery.created_at,
            Delivery.claimed_at,
        )
        .join(Subscription, Subscription.id == Delivery.subscription_id)
        .join(StoredEvent, StoredEvent.id == Delivery.event_id)
        .where(Delivery.status == DeliveryStatus.FAILED.value)
        .order_by(Delivery.id.desc())
        .limit(limit)
    )
    return [
        Failure(
            delivery_id=row.id,
            channel=row.channel,
            topic=row.topic,
            masked_address=mask_address(row.address),
            event_id=row.event_id,
            reason=row.last_error or "(no reason recorded)",
            attempts=row.attempts,
            at=row.claimed_at or row.created_at,
        )
        for row in rows
    ]


# -- the queue ----------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueStats:
    queued: int  # every job in the queue, in progress and deferred included
    ready: int  # due now: waiting for a worker, or being worked on
    deferred: int  # scheduled for later (held SMS, retries backing off)
    in_progress: int
    oldest_ready_age_s: float  # how long the longest-waiting due job has been due


async def queue_stats(redis: Redis, queue: str = NOTIFY_QUEUE) -> QueueStats:
    # arq keeps its queue as a sorted set named after the queue, scored by the time (ms)
    # each job becomes due; a job stays in it while in progress.
    now_ms = time.time() * 1000
    queued = int(await redis.zcard(queue))
    ready = int(await redis.zcount(queue, "-inf", now_ms))
    oldest = await redis.zrange(queue, 0, 0, withscores=True)
    oldest_age_s = 0.0
    if oldest and oldest[0][1] <= now_ms:
        oldest_age_s = (now_ms - oldest[0][1]) / 1000
    in_progress = 0
    async for key in redis.scan_iter(match=f"{in_progress_key_prefix}*", count=1000):
        job_id = _text(key).removeprefix(in_progress_key_prefix)
        # In-progress keys exist for every queue (ingest's too): count ours only.
        if await redis.zscore(queue, job_id) is not None:
            in_progress += 1
    return QueueStats(
        queued=queued,
        ready=ready,
        deferred=queued - ready,
        in_progress=in_progress,
        oldest_ready_age_s=oldest_age_s,
    )


# -- ingest's counters and the workers' heartbeats ----------------------------------------


@dataclass
class IngestStats:
    last_poll: dict[str, float] = field(default_factory=dict)
    announced: dict[str, int] = field(default_factory=dict)
    ncbi_requests: dict[tuple[str, str], int] = field(default_factory=dict)
    ncbi_latency: dict[str, float] = field(default_factory=dict)


def _decode_hash(raw: dict[Any, Any]) -> dict[str, str]:
    return {_text(key): _text(value) for key, value in raw.items()}


async def ingest_stats(redis: Redis) -> IngestStats:
    stats = IngestStats()
    last_poll = _decode_hash(await redis.hgetall(INGEST_LAST_POLL))  # type: ignore[misc]
    stats.last_poll = {slug: float(value) for slug, value in last_poll.items()}
    announced = _decode_hash(await redis.hgetall(INGEST_ANNOUNCED))  # type: ignore[misc]
    stats.announced = {slug: int(value) for slug, value in announced.items()}
    requests = _decode_hash(await redis.hgetall(NCBI_REQUESTS))  # type: ignore[misc]
    for name, value in requests.items():
        endpoint, _, outcome = name.partition(FIELD_SEPARATOR)
        stats.ncbi_requests[(endpoint, outcome)] = int(value)
    latency = _decode_hash(await redis.hgetall(NCBI_LATENCY))  # type: ignore[misc]
    stats.ncbi_latency = {name: float(value) for name, value in latency.items()}
    return stats


async def live_worker_counts(redis: Redis) -> dict[str, int]:
    return {service: len(await live_workers(redis, service)) for service in WORKER_SERVICES}
