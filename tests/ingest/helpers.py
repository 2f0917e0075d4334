"""Helpers for the ingest tests: settings pointed at the fakes, and reading the notify queue."""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import redis

from pubwatch_ingest.settings import IngestSettings
from pubwatch_shared.events import ChangeEvent
from pubwatch_shared.queue import NOTIFY_QUEUE, deserialize
from pubwatch_shared.topics import Topic

TEST_EMAIL = "ops@pubwatch.test"
TEST_API_KEY = "test-key-0123456789"

# Small windows, timeouts and backoff: the suite must stay fast, and the fake is local.
FAST = {
    "ncbi_email": TEST_EMAIL,
    "overlap_days": 30,
    "retraction_check_interval_s": 0,
    "request_timeout_s": 0.5,
    "max_attempts": 8,
    "backoff_base_s": 0.02,
    "backoff_max_s": 0.2,
    "lock_ttl_s": 2.0,
    "article_cache_ttl_s": 600,
}


def write_topics(path: Path, topics: Iterable[Topic]) -> Path:
    lines = []
    for topic in topics:
        lines += [
            "[[topic]]",
            f'slug = "{topic.slug}"',
            f'name = "{topic.name}"',
            f"query = '{topic.query}'",
            "",
        ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def make_settings(
    eutils_url: str, redis_url: str, var_dir: Path, topics_file: Path, **overrides: Any
) -> IngestSettings:
    values: dict[str, Any] = {
        **FAST,
        "eutils_url": eutils_url,
        "redis_url": redis_url,
        "var_dir": var_dir,
        "topics_file": topics_file,
        **overrides,
    }
    return IngestSettings(**values)


def settings_env(settings: IngestSettings) -> dict[str, str]:
    """The environment a child ``pubwatch ingest ...`` process needs for ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUBWATCH_")}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"PUBWATCH_{name.upper()}"] = str(value)
    env["PUBWATCH_LOG_FORMAT"] = "text"
    return env


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pubwatch_shared.cli", *args]


def queued_events(redis_url: str) -> list[ChangeEvent]:
    """Every event job on the notify queue (nothing consumes it in these tests)."""
    client: redis.Redis = redis.Redis.from_url(redis_url)
    try:
        job_ids = [j.decode() for j in cast(list[bytes], client.zrange(NOTIFY_QUEUE, 0, -1))]
        events = []
        for job_id in job_ids:
            raw = cast(bytes | None, client.get(f"arq:job:{job_id}"))
            assert raw is not None, f"queued job {job_id} has no payload"
            job = deserialize(raw)
            assert job["f"] == "handle_event"
            event = ChangeEvent.model_validate(job["a"][0])
            assert job_id == f"event:{event.source}:{event.id}"
            events.append(event)
        return events
    finally:
        client.close()


def announcements(events: Iterable[ChangeEvent], event_type: str) -> Counter[tuple[str, str]]:
    """How many times each (topic, PMID) was carried by events of ``event_type``."""
    counts: Counter[tuple[str, str]] = Counter()
    for event in events:
        if event.type.value == event_type:
            for item in event.items:
                assert item.pmid is not None
                counts[(event.topic, item.pmid)] += 1
    return counts
