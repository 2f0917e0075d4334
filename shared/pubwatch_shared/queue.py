"""Queue names, job names and the JSON serializer both sides of the arq queue use.

The producer enqueues by job *name* with a JSON payload, never pickle: the two services
share nothing but this module.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

from arq import ArqRedis
from arq.connections import RedisSettings

from pubwatch_shared.events import ChangeEvent

NOTIFY_QUEUE = "notify"
INGEST_QUEUE = "ingest"
HANDLE_EVENT_JOB = "handle_event"


def _json_default(value: object) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, BaseException):
        # arq stores a failed job's exception as its result; keep its text, not the object.
        return f"{type(value).__name__}: {value}"
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def serialize(obj: dict[str, Any]) -> bytes:
    """arq ``job_serializer``: compact JSON."""
    return json.dumps(obj, separators=(",", ":"), default=_json_default).encode()


def deserialize(data: bytes) -> dict[str, Any]:
    """arq ``job_deserializer``."""
    result: dict[str, Any] = json.loads(data)
    return result


def redis_settings(url: str) -> RedisSettings:
    settings = RedisSettings.from_dsn(url)
    # A restarting Redis (append-only file being replayed) should be waited for, not fatal.
    settings.conn_retries = 30
    settings.conn_retry_delay = 1
    return settings


def event_job_id(event: ChangeEvent) -> str:
    """Deterministic job id: a re-enqueue of the same event while it waits is a no-op."""
    return f"event:{event.source}:{event.id}"


async def enqueue_event(pool: ArqRedis, event: ChangeEvent) -> bool:
    """Put ``event`` on the notify queue. False when the same event is already queued.

    Either way the event is on the queue (or was handled) when this returns; the caller may
    advance its own watermark after it.
    """
    job = await pool.enqueue_job(
        HANDLE_EVENT_JOB,
        event.to_payload(),
        _job_id=event_job_id(event),
        _queue_name=NOTIFY_QUEUE,
    )
    return job is not None
