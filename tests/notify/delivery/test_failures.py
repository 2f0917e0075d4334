"""Providers misbehave: everything is delivered in the end, nothing twice, and permanent
refusals end the subscription with the reason recorded."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from pubwatch_notify.store.models import Subscription
from tests.fakes.twilio import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN
from tests.notify.delivery.helpers import (
    Clock,
    add_subscribers,
    article,
    deliveries,
    make_event,
    make_settings,
    migrated_sessions,
    running_worker,
)


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_smtp_refusing_20s_and_twilio_429s_still_deliver_everything_once(
    tmp_path, sqlite_url, redis_url, smtp_sink, fake_twilio
):
    settings = make_settings(
        tmp_path,
        sqlite_url,
        redis_url,
        smtp_url=smtp_sink.url,
        twilio_account_sid=DEFAULT_ACCOUNT_SID,
        twilio_auth_token=DEFAULT_AUTH_TOKEN,
        twilio_from="+15005550006",
        twilio_api_url=fake_twilio.url,
        twilio_max_per_second=None,
        fanout_page_size=50,
        retry_base_delay_s=1.0,
        retry_max_delay_s=6.0,
        send_max_tries=20,
    )
    engine, sessions = await migrated_sessions(settings)
    await add_subscribers(sessions, 150)
    await add_subscribers(sessions, 60, channel="sms")
    smtp_sink.refuse(451, "4.3.0 Try again later", duration_s=20)
    fake_twilio.fault_rate(1 / 3, kinds=["429"], seed=7)
    clock = Clock(datetime(2026, 11, 25, 15, 0, tzinfo=UTC))

    async with running_worker(settings, redis_url, clock) as worker:
        await worker.enqueue(make_event("f1", [article("1001", "rct")]))
        await worker.drain(timeout_s=120)

    emails = Counter(r for m in smtp_sink.messages for r in m.rcpt_tos)
    assert emails == {f"reader{n}@example.org": 1 for n in range(150)}
    assert smtp_sink.refused_count > 0
    texts = Counter(m["to"] for m in fake_twilio.messages)
    assert texts == {f"+1555{n:07d}": 1 for n in range(60)}
    assert {row.status for row in await deliveries(sessions)} == {"sent"}
    await engine.dispose()


@pytest.mark.timeout(60)
async def test_smtp_5xx_bounces_the_subscription_and_records_why(
    tmp_path, sqlite_url, redis_url, smtp_sink
):
    settings = make_settings(tmp_path, sqlite_url, redis_url, smtp_url=smtp_sink.url)
    engine, sessions = await migrated_sessions(settings)
    good, bad = await add_subscribers(sessions, 2)
    smtp_sink.refuse(550, "5.1.1 User unknown", recipients=["reader1@example.org"])
    async with running_worker(settings, redis_url) as worker:
        await worker.enqueue(make_event("f2", [article("1002")]))
        await worker.drain()
    assert [m.rcpt_tos for m in smtp_sink.messages] == [["reader0@example.org"]]
    rows = {row.subscription_id: row for row in await deliveries(sessions)}
    assert rows[good].status == "sent"
    assert rows[bad].status == "failed"
    last_error = rows[bad].last_error
    assert last_error is not None
    assert "550" in last_error
    async with sessions() as session:
        status = await session.scalar(select(Subscription.status).where(Subscription.id == bad))
    assert status == "bounced"
    await engine.dispose()
