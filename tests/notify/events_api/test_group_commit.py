"""The accepting path under load: group commit, the fast path, and their failure modes."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import func, select

from pubwatch_notify.api import event_writer
from pubwatch_notify.delivery import intake
from pubwatch_notify.store.models import EventItemRow, StoredEvent
from pubwatch_shared.queue import NOTIFY_QUEUE
from tests.notify.events_api.helpers import (
    GUIDELINES_KEY,
    TRIALS_KEY,
    api_client,
    bearer,
    event,
    make_settings,
    signed,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def settings(tmp_path, database_url, redis_url):
    return make_settings(tmp_path, database_url, redis_url)


async def counts(app) -> tuple[int, int, int]:
    async with app.state.resources.sessionmaker() as session:
        events = await session.scalar(select(func.count()).select_from(StoredEvent))
        items = await session.scalar(select(func.count()).select_from(EventItemRow))
    return (
        int(events or 0),
        int(items or 0),
        int(await app.state.resources.queue.zcard(NOTIFY_QUEUE)),
    )


def two_items(event_id: str, source: str) -> dict[str, object]:
    body = event(event_id, source=source)
    body["items"] = [body["items"][0], {**body["items"][0], "title": "A second item."}]
    return body


async def test_concurrent_posts_are_each_stored_with_their_items_and_queued_once(settings):
    async with api_client(settings) as (app, client):
        posts = [
            client.post("/v1/events", json=two_items(f"e-{n}", source), headers=bearer(key))
            for n in range(30)
            for source, key in (("trials", TRIALS_KEY), ("guidelines", GUIDELINES_KEY))
        ]
        # Repeats inside the same burst: stored and queued once, answered as repeats.
        posts += [
            client.post("/v1/events", json=two_items("e-0", "trials"), headers=bearer(TRIALS_KEY))
            for _ in range(3)
        ]
        responses = await asyncio.gather(*posts)
        codes = [r.status_code for r in responses]
        assert sorted(codes) == [200] * 3 + [202] * 60
        assert await counts(app) == (60, 120, 60)
        jobs = await app.state.resources.queue.queued_jobs(queue_name=NOTIFY_QUEUE)
        assert sorted(job.args[0]["id"] for job in jobs if job.args[0]["source"] == "trials") == (
            sorted(f"e-{n}" for n in range(30))
        )
        assert {job.function for job in jobs} == {"handle_event"}
        async with app.state.resources.sessionmaker() as session:
            stored = await session.scalar(
                select(StoredEvent).where(
                    StoredEvent.source == "guidelines", StoredEvent.event_id == "e-7"
                )
            )
            positions = (
                await session.scalars(
                    select(EventItemRow.position).where(EventItemRow.event_id == stored.id)
                )
            ).all()
        assert stored.posted_by == "guidelines"
        assert sorted(positions) == [0, 1]


async def test_the_fast_path_and_the_route_answer_alike(settings):
    async with api_client(settings) as (_, client):
        # A client that signs goes through the route; one that does not, the fast path.
        raw, headers = signed(event("same-shape", source="signer"))
        routed = await client.post("/v1/events", content=raw, headers=headers)
        fast = await client.post(
            "/v1/events", json=event("same-shape", source="trials"), headers=bearer(TRIALS_KEY)
        )
    assert routed.status_code == fast.status_code == 202
    assert routed.json().keys() == fast.json().keys()
    for name in (
        "content-type",
        "location",
        "content-security-policy",
        "x-frame-options",
        "x-content-type-options",
        "referrer-policy",
    ):
        assert name in routed.headers, name
        assert name in fast.headers, name
        if name != "location":
            assert routed.headers[name] == fast.headers[name], name


async def test_redis_down_after_the_commit_is_503_and_a_retry_queues_it(settings, monkeypatch):
    async with api_client(settings) as (app, client):
        real_enqueue = event_writer.EventWriter._enqueue

        async def redis_down(self, payloads):
            raise RedisConnectionError("connection refused")

        monkeypatch.setattr(event_writer.EventWriter, "_enqueue", redis_down)
        down = await client.post("/v1/events", json=event("r-1"), headers=bearer(TRIALS_KEY))
        assert down.status_code == 503
        assert down.headers["retry-after"]
        # Truthful: the event is stored (and will be queued by the sweeper if not retried).
        assert "the event was stored" in down.json()["detail"]
        assert await counts(app) == (1, 1, 0)  # stored, but never answered as accepted
        monkeypatch.setattr(event_writer.EventWriter, "_enqueue", real_enqueue)
        again = await client.post("/v1/events", json=event("r-1"), headers=bearer(TRIALS_KEY))
        assert again.status_code == 200
        assert await counts(app) == (1, 1, 1)


async def test_one_bad_event_does_not_fail_the_others_of_its_batch(settings, monkeypatch):
    real_store = intake.store_events_core

    async def store_refusing_poison(conn, events):
        if any(e.id == "poison" for e, _ in events):
            raise ValueError("a row the database refuses")
        return await real_store(conn, events)

    monkeypatch.setattr(event_writer, "store_events_core", store_refusing_poison)
    async with api_client(settings) as (app, client):
        ids = [f"ok-{n}" for n in range(5)] + ["poison"]
        results = await asyncio.gather(
            *(client.post("/v1/events", json=event(i), headers=bearer(TRIALS_KEY)) for i in ids),
            return_exceptions=True,
        )
        ok = [r for i, r in zip(ids, results, strict=True) if i != "poison"]
        assert [getattr(r, "status_code", r) for r in ok] == [202] * 5
        poisoned = results[-1]
        assert isinstance(poisoned, ValueError) or (
            isinstance(poisoned, httpx.Response) and poisoned.status_code == 500
        )
        assert await counts(app) == (5, 5, 5)
