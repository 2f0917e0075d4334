"""What the ingest admin commands show, read from ingest's own Redis state."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from pubwatch_ingest.state import TopicState, awaited
from pubwatch_shared.topics import Topic


@dataclass(frozen=True)
class TopicStatus:
    slug: str
    name: str
    polled_ago_s: float | None
    watermark: str | None
    seen: int
    announced: int
    locked: bool


async def topic_status(redis: Redis, topic: Topic, now: float) -> TopicStatus:
    state = TopicState(redis, topic.slug)
    polled_at = await state.polled_at()
    return TopicStatus(
        slug=topic.slug,
        name=topic.name,
        polled_ago_s=None if polled_at is None else max(0.0, now - polled_at),
        watermark=await state.watermark(),
        seen=int(await awaited(redis.scard(state.key("seen")))),
        announced=int(await awaited(redis.scard(state.key("announced")))),
        locked=bool(await redis.exists(state.key("lock"))),
    )


async def topic_statuses(redis_url: str, topics: Sequence[Topic]) -> list[TopicStatus]:
    redis = Redis.from_url(redis_url, socket_connect_timeout=5)
    try:
        now = time.time()
        return [await topic_status(redis, topic, now) for topic in topics]
    finally:
        await redis.aclose()
