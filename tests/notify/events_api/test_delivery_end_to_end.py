"""A posted event reaches a subscriber's inbox through the real SMTP server, once."""

from __future__ import annotations

import pytest

from tests.notify.delivery.helpers import add_subscribers, running_worker
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
