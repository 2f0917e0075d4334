"""SMS through the fake Twilio: one short text each, quiet hours, the weekly cap, and what
Twilio's permanent errors do to a subscription."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from pubwatch_notify.delivery import jobs
from pubwatch_notify.messages.gsm7 import segment_count
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

pytestmark = pytest.mark.timeout(90)
SENDER = "+15005550006"
NEW_YORK = ZoneInfo("America/New_York")


def sms_settings(tmp_path, database_url, redis_url, fake_twilio, **overrides):
    return make_settings(
        tmp_path,
        database_url,
        redis_url,
        twilio_account_sid=DEFAULT_ACCOUNT_SID,
        twilio_auth_token=DEFAULT_AUTH_TOKEN,
        twilio_from=SENDER,
        twilio_api_url=fake_twilio.url,
        twilio_max_per_second=None,
        **overrides,
    )


async def test_each_sms_subscriber_gets_one_short_text_and_twilio_errors_end_subscriptions(
    tmp_path, database_url, redis_url, fake_twilio
):
    settings = sms_settings(tmp_path, database_url, redis_url, fake_twilio)
    engine, sessions = await migrated_sessions(settings)
    ok, opted_out, invalid = await add_subscribers(sessions, 3, channel="sms")
    numbers = {sub: f"+1555{n:07d}" for n, sub in enumerate((ok, opted_out, invalid))}
    fake_twilio.opted_out.add(numbers[opted_out])
    fake_twilio.invalid.add(numbers[invalid])
    clock = Clock(datetime(2026, 11, 25, 15, 0, tzinfo=UTC))

    async with running_worker(settings, redis_url, clock) as worker:
        await worker.enqueue(make_event("s1", [article("501", "rct"), article("502", "review")]))
        await worker.drain()

    [text] = fake_twilio.messages_to(numbers[ok])
    assert text["body"].startswith("PubWatch: 2 new studies on Indolent systemic mastocytosis")
    assert "incl. 1 randomized trial" in text["body"]
    assert text["body"].endswith("Reply STOP to end")
    assert "https://pubwatch.example.org/e/" in text["body"]
    assert segment_count(text["body"]) <= 2
    assert len(fake_twilio.messages) == 1
    async with sessions() as session:
        status = dict((await session.execute(select(Subscription.id, Subscription.status))).all())
    assert status == {ok: "confirmed", opted_out: "unsubscribed", invalid: "invalid"}
    rows = {row.subscription_id: row for row in await deliveries(sessions)}
    assert rows[ok].status == "sent"
    provider_id = rows[ok].provider_id
    assert provider_id is not None
    assert provider_id.startswith("SM")
    assert rows[opted_out].status == "failed"
    opted_out_error = rows[opted_out].last_error
    assert opted_out_error is not None
    assert "21610" in opted_out_error
    invalid_error = rows[invalid].last_error
    assert invalid_error is not None
    assert "21211" in invalid_error
    await engine.dispose()


async def test_quiet_hours_hold_texts_until_8_and_merge_them(
    tmp_path, sqlite_url, redis_url, fake_twilio
):
    settings = sms_settings(tmp_path, sqlite_url, redis_url, fake_twilio)
    engine, sessions = await migrated_sessions(settings)
    [sub] = await add_subscribers(sessions, 1, channel="sms", timezone="America/New_York")
    clock = Clock(datetime(2026, 11, 24, 22, 30, tzinfo=NEW_YORK).astimezone(UTC))

    async with running_worker(settings, redis_url, clock) as worker:
        await worker.enqueue(make_event("q1", [article("601", "rct")]))
        await worker.drain()
        clock.advance(hours=1)
        await worker.enqueue(make_event("q2", [article("602", "observational")]))
        await worker.drain()
        assert len(fake_twilio.messages) == 0
        rows = await deliveries(sessions)
        eight_am = datetime(2026, 11, 25, 8, 0, tzinfo=NEW_YORK)
        assert {row.not_before for row in rows} == {eight_am.astimezone(UTC)}

        clock.now = datetime(2026, 11, 25, 7, 59, tzinfo=NEW_YORK).astimezone(UTC)
        await jobs.sweep(worker.ctx)
        await worker.drain()
        assert len(fake_twilio.messages) == 0

        clock.now = datetime(2026, 11, 25, 8, 0, 30, tzinfo=NEW_YORK).astimezone(UTC)
        await jobs.sweep(worker.ctx)
        await worker.drain()

    [text] = fake_twilio.messages
    assert "2 new studies" in text["body"]
    assert {row.status for row in await deliveries(sessions)} == {"sent"}
    assert sub
    await engine.dispose()


async def test_weekly_cap_holds_extra_texts_and_merges_them_into_the_next(
    tmp_path, sqlite_url, redis_url, fake_twilio
):
    settings = sms_settings(tmp_path, sqlite_url, redis_url, fake_twilio, sms_weekly_cap=2)
    engine, sessions = await migrated_sessions(settings)
    await add_subscribers(sessions, 1, channel="sms")
    monday_noon = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    clock = Clock(monday_noon)

    async with running_worker(settings, redis_url, clock) as worker:
        for day, pmid in enumerate(("701", "702", "703", "704")):
            clock.now = monday_noon.replace(day=23 + day)
            await worker.enqueue(make_event(f"c{pmid}", [article(pmid, "rct")]))
            await worker.drain()
        assert len(fake_twilio.messages) == 2  # Monday and Tuesday; Wednesday and Thursday held

        clock.now = monday_noon.replace(day=30, minute=1)  # a week after the first text
        await jobs.sweep(worker.ctx)
        await worker.drain()

    assert len(fake_twilio.messages) == 3
    assert "2 new studies" in fake_twilio.messages[-1]["body"]
    assert {row.status for row in await deliveries(sessions)} == {"sent"}
    await engine.dispose()
