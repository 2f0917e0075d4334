"""Builds the ingest parts from settings: Redis pool, rate limiter, E-utilities client, poller."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from arq import ArqRedis, create_pool

from pubwatch_ingest.articles import use_dtd_cache
from pubwatch_ingest.eutils import EutilsClient
from pubwatch_ingest.opsmetrics import IngestMetrics
from pubwatch_ingest.poller import Poller
from pubwatch_ingest.ratelimit import RateLimiter, identity_key
from pubwatch_ingest.settings import IngestSettings
from pubwatch_shared.queue import NOTIFY_QUEUE, deserialize, redis_settings, serialize


async def open_pool(redis_url: str) -> ArqRedis:
    return await create_pool(
        redis_settings(redis_url),
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name=NOTIFY_QUEUE,
    )


def build_poller(
    settings: IngestSettings,
    pool: ArqRedis,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Poller:
    use_dtd_cache(settings.resolved_dtd_cache_dir)
    limiter = RateLimiter(
        pool,
        identity_key(settings.ncbi_api_key),
        limit=settings.requests_per_s,
        window_s=settings.rate_window_s,
        lease_s=settings.rate_slot_lease_s,
    )
    client = EutilsClient(settings, limiter, transport=transport, metrics=IngestMetrics(pool))
    return Poller(settings, pool, client)


@contextlib.asynccontextmanager
async def poller_for(settings: IngestSettings, redis_url: str) -> AsyncIterator[Poller]:
    """A ready poller; its HTTP client and Redis pool are closed on exit."""
    pool = await open_pool(redis_url)
    poller = build_poller(settings, pool)
    try:
        yield poller
    finally:
        await poller.client.aclose()
        await pool.aclose()
