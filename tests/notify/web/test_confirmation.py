"""Confirmation messages: one per address per hour however often someone signs up; the SMS
text and its YES / STOP / START replies; provider failures."""

from __future__ import annotations

import re

import pytest
from arq.worker import Retry
from sqlalchemy import select

from pubwatch_notify.store.models import ConsentRecord, Subscription
from pubwatch_notify.subscriptions import service
from pubwatch_notify.subscriptions.confirmation import send_confirmation
from tests.notify.web.helpers import OTHER_TOPIC, TOPIC, app_client, job_runner, post_signup

NUMBER = "+12015550123"

# twilio's async HTTP client still uses aiohttp's deprecated basic auth; not ours to fix.
pytestmark = [
    pytest.mark.filterwarnings("ignore:BasicAuth is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The 'auth' parameter is deprecated:DeprecationWarning"),
]


async def _subscription(jobs, **where) -> Subscription:
    async with jobs.ctx["sessionmaker"]() as session:
        query = select(Subscription).filter_by(**where)
        subscription: Subscription = (await session.scalars(query)).one()
        return subscription


async def test_repeated_signups_send_one_email(settings_with_channels, smtp_sink):
    settings = settings_with_channels
    async with app_client(settings) as (_, client), job_runner(settings) as jobs:
        for _ in range(4):
            assert (await post_signup(client, email="ann@example.org")).status_code == 200
        # One job however often the form was sent, and it sends once.
        assert len(await jobs.queued()) == 1
        assert await jobs.run_queued() == ["sent"]
        await post_signup(client, email="ann@example.org")
        subscription = await _subscription(jobs, topic=TOPIC)
        # Even a job that runs again (arq is at-least-once) sends nothing more.
        assert await send_confirmation(jobs.ctx, subscription.id) == "sent recently"
        assert "sent" not in await jobs.run_queued()
    assert len(smtp_sink.messages_to("ann@example.org")) == 1


async def test_signups_for_several_topics_wait_for_the_hourly_slot(
    settings_with_channels, smtp_sink
):
    settings = settings_with_channels
    async with app_client(settings) as (_, client), job_runner(settings) as jobs:
        await post_signup(client, email="ann@example.org")
        await post_signup(client, topic=OTHER_TOPIC, email="ann@example.org")
        outcomes = sorted(await jobs.run_queued())
        other = await _subscription(jobs, topic=OTHER_TOPIC)
        with pytest.raises(Retry):
            await send_confirmation(jobs.ctx, other.id)
    assert outcomes == ["retry", "sent"]
    assert len(smtp_sink.messages_to("ann@example.org")) == 1


async def test_confirmation_email_content(settings_with_channels, smtp_sink):
    settings = settings_with_channels
    async with app_client(settings) as (_, client), job_runner(settings) as jobs:
        await post_signup(client, email="ann@example.org")
        await jobs.run_queued()
    mail = smtp_sink.wait_for(1)[0].message
    assert "Indolent systemic mastocytosis" in mail["Subject"]
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    link = re.search(r"http://127\.0\.0\.1:8000/confirm/(\S+)", text)
    assert link
    assert link.group(1) in html
    assert "ann@example.org" not in link.group(0)


async def test_sms_confirmation_and_replies(settings_with_channels, fake_twilio):
    settings = settings_with_channels
    async with app_client(settings) as (_, client), job_runner(settings) as jobs:
        response = await post_signup(client, channel="sms", phone="(201) 555-0123")
        assert "Check your phone" in response.text
        assert await jobs.run_queued() == ["sent"]
        (text,) = fake_twilio.messages_to(NUMBER)
        body = text["body"]
        for words in (
            "Reply YES to confirm",
            "Reply STOP to end, HELP for help",
            "Msg & data rates may apply",
            "PubWatch alerts",
        ):
            assert words in body
        sessionmaker = jobs.ctx["sessionmaker"]
        async with sessionmaker() as session:
            assert await service.confirm_by_sms_reply(session, NUMBER) is True
        async with sessionmaker() as session:
            assert await service.confirm_by_sms_reply(session, NUMBER) is False
            assert await service.confirm_by_sms_reply(session, "+12015550199") is False
        assert (await _subscription(jobs, channel="sms")).status == "confirmed"
        async with sessionmaker() as session:
            assert await service.unsubscribe_by_sms_reply(session, NUMBER) == 1
        assert (await _subscription(jobs, channel="sms")).status == "unsubscribed"
        async with sessionmaker() as session:
            assert await service.resubscribe_by_sms_reply(session, NUMBER) == 1
        assert (await _subscription(jobs, channel="sms")).status == "confirmed"
        async with sessionmaker() as session:
            sources = list(
                await session.execute(select(ConsentRecord.action, ConsentRecord.source))
            )
    assert [tuple(row) for row in sources] == [
        ("subscribe", "web"),
        ("confirm", "sms"),
        ("unsubscribe", "sms"),
        ("resubscribe", "sms"),
    ]


async def test_start_does_not_revive_what_the_web_page_ended(settings_with_channels):
    settings = settings_with_channels
    async with app_client(settings) as (_, client), job_runner(settings) as jobs:
        await post_signup(client, channel="sms", phone="+1 201 555 0123")
        sessionmaker = jobs.ctx["sessionmaker"]
        async with sessionmaker() as session:
            await service.confirm_by_sms_reply(session, NUMBER)
        async with sessionmaker() as session:
            subscription = await session.get(Subscription, 1)
            await service.unsubscribe(
                session, subscription, every_topic=False, source="web", ip=None
            )
        async with sessionmaker() as session:
            assert await service.resubscribe_by_sms_reply(session, NUMBER) == 0


async def test_invalid_number_marks_the_subscription(settings_with_channels, fake_twilio):
    settings = settings_with_channels
    fake_twilio.invalid.add(NUMBER)
    async with app_client(settings) as (_, client), job_runner(settings) as jobs:
        await post_signup(client, channel="sms", phone=NUMBER)
        assert await jobs.run_queued() == ["refused: invalid"]
        assert (await _subscription(jobs, channel="sms")).status == "invalid"


async def test_transient_failure_retries_and_frees_the_slot(settings_with_channels, smtp_sink):
    settings = settings_with_channels
    async with app_client(settings) as (_, client), job_runner(settings) as jobs:
        await post_signup(client, email="ann@example.org")
        smtp_sink.go_away()
        assert await jobs.run_queued() == ["retry"]
        smtp_sink.come_back()
        assert await jobs.run_queued() == ["sent"]
    assert len(smtp_sink.messages_to("ann@example.org")) == 1
