"""Ingest's operational counters, written to Redis for notify's ``/metrics`` and ``/admin``.

Key names are the contract in :mod:`pubwatch_shared.opskeys`. Recording never fails a poll:
a counter lost while Redis restarts is worth less than the poll it would interrupt.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis

from pubwatch_shared.opskeys import (
    INGEST_ANNOUNCED,
    INGEST_LAST_POLL,
    NCBI_LATENCY,
    NCBI_LATENCY_BUCKETS_S,
    NCBI_REQUESTS,
    latency_bucket_field,
    ncbi_request_field,
)

log = logging.getLogger(__name__)


def endpoint_name(endpoint: str) -> str:
    """``esearch.fcgi`` -> ``esearch``: the label an operator expects."""
    return endpoint.removesuffix(".fcgi")


class IngestMetrics:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def ncbi_request(self, endpoint: str, outcome: str, duration_s: float) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hincrby(NCBI_REQUESTS, ncbi_request_field(endpoint_name(endpoint), outcome))
                for upper_s in NCBI_LATENCY_BUCKETS_S:
                    if duration_s <= upper_s:
                        pipe.hincrby(NCBI_LATENCY, latency_bucket_field(upper_s))
                pipe.hincrby(NCBI_LATENCY, latency_bucket_field("+Inf"))
                pipe.hincrbyfloat(NCBI_LATENCY, "sum", duration_s)
                await pipe.execute()
        except Exception as exc:
            log.debug("could not record an NCBI request metric: %s", exc)

    async def poll_committed(self, slug: str, polled_at: float, announced: int) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hset(INGEST_LAST_POLL, slug, f"{polled_at:.3f}")
                if announced:
                    pipe.hincrby(INGEST_ANNOUNCED, slug, announced)
                await pipe.execute()
        except Exception as exc:
            log.debug("could not record a poll metric for %s: %s", slug, exc)
