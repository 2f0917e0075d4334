"""A posted event reaches a subscriber's inbox through the real SMTP server, once."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import select

from pubwatch_notify.api import event_writer
from pubwatch_notify.delivery import jobs
from pubwatch_notify.store.models import StoredEvent
from pubwatch_shared.queue import NOTIFY_QUEUE
from tests.notify.delivery.helpers import Clock, add_subscribers, running_worker
from tests.notify.events_api.helpers import (
    TOPIC,
    TRIALS_KEY,
    api_client,
    bearer,
    event,
    make_settings,
)

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]


async def test_posted_event_arrives_in_the_inbox_once(tmp_path, database_url, redis_url, smtp_sink):
    settings = make_settings(tmp_path, database_url, redis_url, smtp_url=smtp_sink.url)
    async with api_client(settings) as (app, client):
        [subscriber] = await add_subscribers(app.state.resources.sessionmaker, 1, topic=TOPIC)
        assert subscriber
        posted = await client.post("/v1/events", json=event("nct-1"), headers=bearer(TRIALS_KEY))
        assert posted.status_code == 202
        async with running_worker(settings, redis_url) as worker:
            await worker.drain()
            [mail] = smtp_sink.wait_for(1, timeout_s=10)
            assert mail.rcpt_tos == ["reader0@example.org"]
            assert "drug X" in mail.raw.decode()

            status = (
                await client.get(posted.headers["location"], headers=bearer(TRIALS_KEY))
            ).json()
            assert status["deliveries"] == {
                "matched": 1,
                "sent": 1,
                "failed": 0,
                "pending": 0,
                "skipped": 0,
            }
            assert status["fanned_out_at"] is not None

            # The client retries (it never saw the answer): nothing is sent twice.
            again = await client.post("/v1/events", json=event("nct-1"), headers=bearer(TRIALS_KEY))
            assert again.status_code == 200
            await worker.drain()
    assert len(smtp_sink.messages) == 1


async def test_event_stored_but_not_queued_is_fanned_out_by_the_sweeper(
    tmp_path, database_url, redis_url, smtp_sink, monkeypatch
):
    """Redis fails after the commit: the 503 says the event was stored, and the client never
    retries. The sweeper finds the event not fanned out a minute later and queues it, once."""
    settings = make_settings(tmp_path, database_url, redis_url, smtp_url=smtp_sink.url)
    clock = Clock(datetime.now(UTC))
    async with api_client(settings) as (app, client):
        await add_subscribers(app.state.resources.sessionmaker, 1, topic=TOPIC)

        async def redis_down(self: event_writer.EventWriter, payloads: object) -> None:
            raise RedisConnectionError("connection refused")

        with monkeypatch.context() as patched:
            patched.setattr(event_writer.EventWriter, "_enqueue", redis_down)
            posted = await client.post(
                "/v1/events", json=event("lost-1"), headers=bearer(TRIALS_KEY)
            )
        assert posted.status_code == 503
        assert "was stored" in posted.json()["detail"], posted.json()
        assert await app.state.resources.queue.zcard(NOTIFY_QUEUE) == 0

        async with running_worker(settings, redis_url, clock=clock) as worker:
            # Younger than a minute: its own job may still be coming; left alone.
            assert await jobs.sweep(worker.ctx) == 0
            clock.advance(minutes=2)
            assert await jobs.sweep(worker.ctx) == 1
            assert await jobs.sweep(worker.ctx) == 0  # already queued: not twice
            await worker.drain()
            [mail] = smtp_sink.wait_for(1, timeout_s=10)
            assert mail.rcpt_tos == ["reader0@example.org"]
            async with app.state.resources.sessionmaker() as session:
                stored = await session.scalar(
                    select(StoredEvent).where(StoredEvent.event_id == "lost-1")
                )
            assert stored is not None
            assert stored.fanned_out_at is not None
            clock.advance(minutes=1)
            assert await jobs.sweep(worker.ctx) == 0  # fanned out: nothing more to do
            await worker.drain()
    assert len(smtp_sink.messages) == 1
