"""POST /v1/events: every refusal, acceptance, and idempotent re-posts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from pubwatch_notify.store.models import EventItemRow, StoredEvent
from pubwatch_shared.queue import NOTIFY_QUEUE
from tests.notify.events_api.helpers import (
    GUIDELINES_KEY,
    OTHER_TOPIC,
    PUBLIC_URL,
    TRIALS_KEY,
    api_client,
    bearer,
    event,
    make_settings,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def settings(tmp_path, database_url, redis_url):
    return make_settings(tmp_path, database_url, redis_url)


async def stored_events(app) -> int:
    async with app.state.resources.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(StoredEvent)) or 0)


async def queued_jobs(app) -> int:
    return int(await app.state.resources.queue.zcard(NOTIFY_QUEUE))


async def test_accepted_event_is_stored_queued_and_answered_202(settings):
    async with api_client(settings) as (app, client):
        response = await client.post(
            "/v1/events", json=event("trial:1/a"), headers=bearer(TRIALS_KEY)
        )
        assert response.status_code == 202, response.text
        body = response.json()
        assert body["id"] == "trial:1/a"
        assert body["source"] == "trials"
        assert body["duplicate"] is False
        assert body["status_url"] == f"{PUBLIC_URL}/v1/events/trial%3A1%2Fa"
        assert response.headers["location"] == body["status_url"]
        assert await stored_events(app) == 1
        assert await queued_jobs(app) == 1
        async with app.state.resources.sessionmaker() as session:
            stored = await session.scalar(select(StoredEvent))
            items = await session.scalar(select(func.count()).select_from(EventItemRow))
        assert stored.posted_by == "trials"
        assert items == 1


async def test_x_api_key_header_works_too(settings):
    async with api_client(settings) as (_, client):
        response = await client.post("/v1/events", json=event(), headers={"X-API-Key": TRIALS_KEY})
    assert response.status_code == 202


async def test_same_id_again_answers_200_with_the_original_and_queues_nothing_new(settings):
    async with api_client(settings) as (app, client):
        first = await client.post("/v1/events", json=event(), headers=bearer(TRIALS_KEY))
        changed = event(items=[{**event()["items"][0], "title": "A changed title."}])
        again = await client.post("/v1/events", json=changed, headers=bearer(TRIALS_KEY))
        assert again.status_code == 200
        assert again.json() == {**first.json(), "duplicate": True}
        assert again.headers["location"] == first.headers["location"]
        assert await stored_events(app) == 1
        assert await queued_jobs(app) == 1
        status = await client.get(first.headers["location"], headers=bearer(TRIALS_KEY))
        assert status.json()["event"]["items"][0]["title"] != "A changed title."


async def test_identical_concurrent_posts_store_and_queue_one_event(settings):
    async with api_client(settings) as (app, client):
        responses = await asyncio.gather(
            *(
                client.post("/v1/events", json=event("race"), headers=bearer(TRIALS_KEY))
                for _ in range(8)
            )
        )
        codes = sorted(r.status_code for r in responses)
        assert codes == [200] * 7 + [202]
        assert len({r.json()["received_at"] for r in responses}) == 1
        assert await stored_events(app) == 1
        assert await queued_jobs(app) == 1


async def test_same_id_from_two_clients_is_two_events(settings):
    async with api_client(settings) as (app, client):
        a = await client.post("/v1/events", json=event("shared"), headers=bearer(TRIALS_KEY))
        b = await client.post(
            "/v1/events", json=event("shared", source="guidelines"), headers=bearer(GUIDELINES_KEY)
        )
        assert (a.status_code, b.status_code) == (202, 202)
        assert await stored_events(app) == 2


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "missing API key"),
        (bearer("not-a-key-0123456789"), "unknown API key"),
        ({"X-API-Key": "not-a-key-0123456789"}, "unknown API key"),
        ({"Authorization": f"Basic {TRIALS_KEY}"}, "missing API key"),
    ],
)
async def test_no_or_bad_key_is_401(settings, headers, detail):
    async with api_client(settings) as (app, client):
        response = await client.post("/v1/events", json=event(), headers=headers)
        assert response.status_code == 401
        assert response.json()["detail"].startswith(detail)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert await stored_events(app) == 0


async def test_validation_lists_every_problem_by_field(settings):
    body = event(occurred_at="2026-11-25T06:00:00", colour="blue")
    del body["type"]
    body["items"][0]["url"] = "not a url"
    body["items"].append(
        {"title": "", "url": "https://x.example/", "summary": "s", "published": "May 2026"}
    )
    async with api_client(settings) as (_, client):
        response = await client.post("/v1/events", json=body, headers=bearer(TRIALS_KEY))
    assert response.status_code == 422
    problems = {p["field"]: p for p in response.json()["errors"]}
    assert set(problems) == {
        "type",
        "occurred_at",
        "colour",
        "items[0].url",
        "items[1].title",
        "items[1].published",
    }
    assert problems["type"]["type"] == "missing"
    assert problems["colour"]["message"].startswith("unknown field")
    assert "time zone" in problems["occurred_at"]["message"]
    assert response.json()["detail"] == "the request has 6 problems; each is listed in errors"


@pytest.mark.parametrize(
    ("content", "field", "kind"),
    [
        (b'{"id": ', "body", "json_invalid"),
        (b"", "body", "missing"),
        (b"[1, 2]", "body", "model_attributes_type"),
        (b'{"id": "\xff\xfe"}', "body", "json_invalid"),
    ],
)
async def test_a_body_that_is_not_an_event_object_is_422(settings, content, field, kind):
    async with api_client(settings) as (_, client):
        response = await client.post(
            "/v1/events",
            content=content,
            headers={**bearer(TRIALS_KEY), "Content-Type": "application/json"},
        )
    assert response.status_code == 422
    [problem] = response.json()["errors"]
    assert (problem["field"], problem["type"]) == (field, kind)


async def test_unknown_topic_and_foreign_source_are_422_together(settings):
    async with api_client(settings) as (app, client):
        response = await client.post(
            "/v1/events",
            json=event(topic="no-such-topic", source="pubmed"),
            headers=bearer(TRIALS_KEY),
        )
        assert response.status_code == 422
        problems = {p["field"]: p["type"] for p in response.json()["errors"]}
        assert problems == {"topic": "unknown_topic", "source": "source_mismatch"}
        assert await stored_events(app) == 0


async def test_topic_the_client_may_not_post_to_is_403(settings):
    async with api_client(settings) as (app, client):
        allowed = await client.post(
            "/v1/events", json=event("g1", source="guidelines"), headers=bearer(GUIDELINES_KEY)
        )
        refused = await client.post(
            "/v1/events",
            json=event("g2", source="guidelines", topic=OTHER_TOPIC),
            headers=bearer(GUIDELINES_KEY),
        )
        assert allowed.status_code == 202
        assert refused.status_code == 403
        assert OTHER_TOPIC in refused.json()["detail"]
        assert await stored_events(app) == 1


def padded_event(size: int) -> bytes:
    body = event(
        items=[{**event()["items"][0], "summary": "x" * 1000} for _ in range(size // 1000)]
    )
    return json.dumps(body).encode()


async def test_body_over_64_kib_is_413_by_declared_length(settings):
    content = padded_event(70_000)
    assert len(content) > 64 * 1024
    async with api_client(settings) as (app, client):
        response = await client.post(
            "/v1/events",
            content=content,
            headers={**bearer(TRIALS_KEY), "Content-Type": "application/json"},
        )
        assert response.status_code == 413
        assert "65536 bytes" in response.json()["detail"]
        assert await stored_events(app) == 0


async def test_body_over_64_kib_is_413_when_streamed_without_a_length(settings):
    content = padded_event(70_000)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(content), 8192):
            yield content[start : start + 8192]

    async with api_client(settings) as (_, client):
        response = await client.post(
            "/v1/events",
            content=chunks(),
            headers={**bearer(TRIALS_KEY), "Content-Type": "application/json"},
        )
    assert "content-length" not in response.request.headers
    assert response.status_code == 413


async def test_a_lying_content_length_does_not_get_past_the_limit(settings):
    # The ASGI layer trusts no header: a small declared length over a large body is caught
    # by counting the stream.
    content = padded_event(70_000)

    async def chunks() -> AsyncIterator[bytes]:
        yield content

    async with api_client(settings) as (_, client):
        response = await client.post(
            "/v1/events",
            content=chunks(),
            headers={
                **bearer(TRIALS_KEY),
                "Content-Type": "application/json",
                "Content-Length": "100",
            },
        )
    assert response.status_code == 413


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"],
)
async def test_wrong_content_type_is_415(settings, content_type):
    headers = bearer(TRIALS_KEY)
    if content_type:
        headers["Content-Type"] = content_type
    async with api_client(settings) as (_, client):
        response = await client.post(
            "/v1/events", content=json.dumps(event()).encode(), headers=headers
        )
    assert response.status_code == 415


async def test_json_with_utf8_charset_is_accepted(settings):
    async with api_client(settings) as (_, client):
        response = await client.post(
            "/v1/events",
            content=json.dumps(event()).encode(),
            headers={**bearer(TRIALS_KEY), "Content-Type": "application/json; charset=UTF-8"},
        )
    assert response.status_code == 202


async def test_over_the_rate_limit_is_429_with_retry_after(tmp_path, sqlite_url, redis_url):
    settings = make_settings(
        tmp_path, sqlite_url, redis_url, events_api_rate_per_minute=1, events_api_burst=2
    )
    async with api_client(settings) as (_, client):
        codes = []
        for n in range(3):
            response = await client.post(
                "/v1/events", json=event(f"r{n}"), headers=bearer(TRIALS_KEY)
            )
            codes.append(response.status_code)
        assert codes == [202, 202, 429]
        assert 1 <= int(response.headers["retry-after"]) <= 60
        assert "rate limit" in response.json()["detail"]
        # The limit is per client: another client is not held back.
        other = await client.post(
            "/v1/events", json=event("g", source="guidelines"), headers=bearer(GUIDELINES_KEY)
        )
        assert other.status_code == 202
