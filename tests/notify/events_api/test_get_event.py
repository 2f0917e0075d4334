"""GET /v1/events/{id} (only for the client that posted it) and GET /v1/topics."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi import FastAPI
from sqlalchemy import insert, select

from pubwatch_notify.api.app import create_app
from pubwatch_notify.api.clients import ClientConfigError
from pubwatch_notify.store.models import Delivery, StoredEvent, Subscription
from tests.notify.events_api.helpers import (
    GUIDELINES_KEY,
    TOPIC,
    TRIALS_KEY,
    api_client,
    bearer,
    event,
    make_settings,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def settings(tmp_path, sqlite_url, redis_url):
    return make_settings(tmp_path, sqlite_url, redis_url)


async def add_deliveries(app: FastAPI, statuses: list[str]) -> None:
    """Deliveries as the worker would leave them, one subscriber each."""
    async with app.state.resources.sessionmaker.begin() as session:
        event_pk = await session.scalar(select(StoredEvent.id))
        for n, status in enumerate(statuses):
            sub_id = (
                await session.execute(
                    insert(Subscription)
                    .values(
                        topic=TOPIC,
                        channel="email",
                        address=f"r{n}@example.org",
                        address_hash=f"hash{n}",
                        status="confirmed",
                        created_at=datetime.now(UTC),
                    )
                    .returning(Subscription.id)
                )
            ).scalar_one()
            await session.execute(
                insert(Delivery).values(
                    subscription_id=sub_id,
                    event_id=event_pk,
                    channel="email",
                    status=status,
                    created_at=datetime.now(UTC),
                    item_positions=[0],
                )
            )


async def test_the_poster_sees_the_event_and_its_delivery_counts(settings):
    async with api_client(settings) as (app, client):
        posted = await client.post("/v1/events", json=event("a/b?c#d"), headers=bearer(TRIALS_KEY))
        url = posted.headers["location"]
        fresh = (await client.get(url, headers=bearer(TRIALS_KEY))).json()
        assert fresh["id"] == "a/b?c#d"
        assert fresh["fanned_out_at"] is None
        assert fresh["deliveries"] == {
            "matched": 0,
            "sent": 0,
            "failed": 0,
            "pending": 0,
            "skipped": 0,
        }
        assert fresh["event"]["items"][0]["summary"].startswith("A phase 3 trial")
        assert fresh["event"]["source"] == "trials"

        await add_deliveries(
            app, ["sent", "delivered", "failed", "queued", "sending", "pending", "skipped"]
        )
        status = (await client.get(url, headers=bearer(TRIALS_KEY))).json()
    assert status["deliveries"] == {
        "matched": 7,
        "sent": 2,
        "failed": 1,
        "pending": 3,
        "skipped": 1,
    }


async def test_another_client_gets_404_and_no_key_gets_401(settings):
    async with api_client(settings) as (_, client):
        posted = await client.post("/v1/events", json=event("mine"), headers=bearer(TRIALS_KEY))
        url = posted.headers["location"]
        other = await client.get(url, headers=bearer(GUIDELINES_KEY))
        unknown = await client.get("/v1/events/never-posted", headers=bearer(TRIALS_KEY))
        anonymous = await client.get(url)
    assert other.status_code == 404
    assert other.json()["detail"] == "no event with this id was posted by this client"
    assert unknown.status_code == 404
    assert anonymous.status_code == 401


async def test_an_id_outside_the_contract_is_422(settings):
    async with api_client(settings) as (_, client):
        response = await client.get("/v1/events/" + "x" * 201, headers=bearer(TRIALS_KEY))
        spaced = await client.get("/v1/events/a%20b", headers=bearer(TRIALS_KEY))
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "path.event_id"
    assert spaced.status_code == 422


async def test_topics_lists_slugs_and_names_without_a_key(settings):
    async with api_client(settings) as (_, client):
        response = await client.get("/v1/topics")
    assert response.status_code == 200
    topics = {t["slug"]: t["name"] for t in response.json()["topics"]}
    assert topics[TOPIC] == "Indolent systemic mastocytosis"


async def test_bad_client_settings_stop_the_app_at_start_up(tmp_path, sqlite_url, redis_url):
    settings = make_settings(tmp_path, sqlite_url, redis_url, events_api_topics="nobody:*")
    app = create_app(settings)
    with pytest.raises(ClientConfigError, match="'nobody' is not a client"):
        async with app.router.lifespan_context(app):
            pass
