from __future__ import annotations

from datetime import UTC, datetime

import pytest
from arq import create_pool

from pubwatch_shared.events import EXAMPLE_EVENT, ChangeEvent
from pubwatch_shared.queue import (
    HANDLE_EVENT_JOB,
    NOTIFY_QUEUE,
    deserialize,
    enqueue_event,
    redis_settings,
    serialize,
)


def test_serializer_is_json_not_pickle() -> None:
    data = serialize({"a": [1, "x"], "when": datetime(2026, 1, 2, tzinfo=UTC)})
    assert data.startswith(b"{")
    assert deserialize(data) == {"a": [1, "x"], "when": "2026-01-02T00:00:00+00:00"}
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        serialize({"x": {1, 2}})


async def test_enqueue_event_is_deduplicated_by_event_id(redis_url: str) -> None:
    pool = await create_pool(
        redis_settings(redis_url), job_serializer=serialize, job_deserializer=deserialize
    )
    try:
        event = ChangeEvent.model_validate(EXAMPLE_EVENT)
        assert await enqueue_event(pool, event) is True
        assert await enqueue_event(pool, event) is False
        jobs = await pool.queued_jobs(queue_name=NOTIFY_QUEUE)
        assert len(jobs) == 1
        assert jobs[0].function == HANDLE_EVENT_JOB
        assert ChangeEvent.model_validate(jobs[0].args[0]) == event
    finally:
        await pool.aclose()
