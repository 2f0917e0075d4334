"""Twilio webhooks: signatures checked against PUBWATCH_PUBLIC_URL, keywords, status callbacks."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import select

from pubwatch_notify.api.app import create_app
from pubwatch_notify.store.models import Delivery, Subscription
from tests.fakes.twilio import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FakeTwilio
from tests.notify.delivery.helpers import (
    Clock,
    add_subscribers,
    article,
    make_event,
    make_settings,
    migrated_sessions,
    running_worker,
)

pytestmark = pytest.mark.timeout(60)
SENDER = "+15005550006"
NUMBER = "+15550000000"


@contextlib.asynccontextmanager
async def client_for(settings):
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://internal:8000"
        ) as client:
            yield client


async def post_signed(client, fake: FakeTwilio, path: str, params: dict[str, str], signature=None):
    # Signed over the public URL, as Twilio sees the service, not the address it serves on.
    url = f"https://pubwatch.example.org{path}"
    headers = {"X-Twilio-Signature": signature if signature is not None else fake.sign(url, params)}
    return await client.post(path, data=params, headers=headers)


async def test_inbound_keywords_and_signatures(tmp_path, sqlite_url, redis_url, fake_twilio):
    settings = make_settings(
        tmp_path, sqlite_url, redis_url,
        twilio_account_sid=DEFAULT_ACCOUNT_SID, twilio_auth_token=DEFAULT_AUTH_TOKEN,
        twilio_from=SENDER, twilio_api_url=fake_twilio.url,
    )  # fmt: skip
    engine, sessions = await migrated_sessions(settings)
    [sub] = await add_subscribers(sessions, 1, channel="sms", status="pending")

    async def status() -> str | None:
        async with sessions() as session:
            return await session.scalar(select(Subscription.status).where(Subscription.id == sub))

    path = "/webhooks/twilio/inbound"
    async with client_for(settings) as client:
        params = fake_twilio.inbound_message_params(NUMBER, SENDER, "YES")
        assert (await client.post(path, data=params)).status_code == 403
        assert (
            await post_signed(client, fake_twilio, path, params, signature="bm90IGl0")
        ).status_code == 403
        tampered = {**params, "Body": "STOP"}
        bad = fake_twilio.sign(f"https://pubwatch.example.org{path}", params)
        assert (
            await post_signed(client, fake_twilio, path, tampered, signature=bad)
        ).status_code == 403
        assert await status() == "pending"

        response = await post_signed(client, fake_twilio, path, params)
        assert response.status_code == 200
        assert "<Message>" in response.text
        assert await status() == "confirmed"

        stop = fake_twilio.inbound_message_params(NUMBER, SENDER, "stop")
        assert (await post_signed(client, fake_twilio, path, stop)).status_code == 200
        assert await status() == "unsubscribed"

        start = fake_twilio.inbound_message_params(NUMBER, SENDER, "START")
        assert (await post_signed(client, fake_twilio, path, start)).status_code == 200
        assert await status() == "confirmed"

        help_ = fake_twilio.inbound_message_params(NUMBER, SENDER, "HELP")
        response = await post_signed(client, fake_twilio, path, help_)
        assert "Reply STOP to end" in response.text
        assert "rates may apply" in response.text
    await engine.dispose()


async def test_status_callbacks_update_the_delivery(tmp_path, sqlite_url, redis_url, fake_twilio):
    settings = make_settings(
        tmp_path, sqlite_url, redis_url,
        twilio_account_sid=DEFAULT_ACCOUNT_SID, twilio_auth_token=DEFAULT_AUTH_TOKEN,
        twilio_from=SENDER, twilio_api_url=fake_twilio.url, twilio_max_per_second=None,
    )  # fmt: skip
    engine, sessions = await migrated_sessions(settings)
    first, second = await add_subscribers(sessions, 2, channel="sms")
    async with running_worker(
        settings, redis_url, Clock(datetime(2026, 11, 25, 15, tzinfo=UTC))
    ) as w:
        await w.enqueue(make_event("cb1", [article("1101")]))
        await w.drain()
    async with sessions() as session:
        sids = dict(
            (await session.execute(select(Delivery.subscription_id, Delivery.provider_id))).all()
        )
    first_sid, second_sid = sids[first], sids[second]
    assert first_sid is not None
    assert second_sid is not None

    path = "/webhooks/twilio/status"
    async with client_for(settings) as client:
        delivered = {
            "MessageSid": first_sid,
            "MessageStatus": "delivered",
            "AccountSid": DEFAULT_ACCOUNT_SID,
        }
        assert (await post_signed(client, fake_twilio, path, delivered)).status_code == 204
        failed = {
            "MessageSid": second_sid, "MessageStatus": "undelivered",
            "ErrorCode": "30003", "AccountSid": DEFAULT_ACCOUNT_SID,
        }  # fmt: skip
        assert (await post_signed(client, fake_twilio, path, failed)).status_code == 204
        assert (await client.post(path, data=delivered)).status_code == 403

    async with sessions() as session:
        rows = {d.subscription_id: d for d in await session.scalars(select(Delivery))}
    assert rows[first].status == "delivered"
    assert rows[second].status == "failed"
    last_error = rows[second].last_error
    assert last_error is not None
    assert "30003" in last_error
    await engine.dispose()
