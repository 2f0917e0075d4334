"""Everything a delivery job needs, built once per worker and kept in the arq ``ctx``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from pubwatch_notify.channels.factory import Channels
from pubwatch_notify.delivery.clock import Clock
from pubwatch_notify.delivery.ratelimit import RateLimiter
from pubwatch_notify.delivery.sent_records import SentRecorder
from pubwatch_notify.links import Links
from pubwatch_notify.settings import NotifySettings
from pubwatch_notify.store.engine import WriteTurns
from pubwatch_shared.topics import TopicsFileError, load_topics

RUNTIME_KEY = "pubwatch"


@dataclass
class Runtime:
    settings: NotifySettings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    channels: Channels
    redis: Any  # arq's ArqRedis
    limiter: RateLimiter
    links: Links
    clock: Clock
    topic_names: dict[str, str]
    # Per-message writes (a send's outcome) queue here: see WriteTurns.
    write_turns: WriteTurns
    # Accepted messages, recorded in commits shared by the worker's jobs.
    sent_records: SentRecorder

    def topic_name(self, slug: str) -> str:
        return self.topic_names.get(slug) or slug.replace("-", " ").capitalize()


def read_topic_names(settings: NotifySettings) -> dict[str, str]:
    """Display names from the topics file; events for other topics fall back to the slug."""
    try:
        return {topic.slug: topic.name for topic in load_topics(settings.topics_file)}
    except TopicsFileError:
        return {}


def runtime_from(ctx: dict[str, Any]) -> Runtime:
    runtime = ctx[RUNTIME_KEY]
    assert isinstance(runtime, Runtime)
    return runtime
