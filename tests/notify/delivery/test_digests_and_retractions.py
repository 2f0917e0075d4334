"""Digests merge a period's events into one message per subscriber; a retraction reaches
exactly the people who received the article, whatever their threshold or frequency."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from pubwatch_notify.delivery import jobs
from pubwatch_notify.store.models import Delivery, Subscription
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


async def test_daily_and_weekly_digests_merge_events_into_one_message(
    tmp_path, database_url, redis_url, smtp_sink
):
    settings = make_settings(tmp_path, database_url, redis_url, smtp_url=smtp_sink.url)
    engine, sessions = await migrated_sessions(settings)
    await add_subscribers(sessions, 3, prefix="daily", frequency="daily", timezone="Europe/Paris")
    await add_subscribers(sessions, 2, prefix="weekly", frequency="weekly")
    wednesday = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    clock = Clock(wednesday)

    async with running_worker(settings, redis_url, clock) as worker:
        await worker.enqueue(make_event("d1", [article("801", "rct")]))
        await worker.drain()
        clock.advance(seconds=1)  # a second apart: still one digest
        await worker.enqueue(make_event("d2", [article("802", "observational")]))
        await worker.drain()
        await jobs.enqueue_due_digests(worker.ctx)
        await worker.drain()
        assert smtp_sink.messages == []  # not 08:00 yet

        clock.now = datetime(2026, 11, 26, 7, 0, 30, tzinfo=UTC)  # 08:00 in Paris
        for _ in range(2):  # the cron firing twice in one period sends nothing twice
            await jobs.enqueue_due_digests(worker.ctx)
            await worker.drain()
        daily = Counter(r for m in smtp_sink.messages for r in m.rcpt_tos)
        assert daily == {f"daily{n}@example.org": 1 for n in range(3)}
        subject = smtp_sink.messages[0].message["Subject"]
        assert subject.startswith("Your daily PubWatch digest: 2 new studies")

        await worker.enqueue(make_event("d3", [article("803", "guideline")]))
        await worker.drain()
        clock.now = datetime(2026, 11, 30, 8, 0, 30, tzinfo=UTC)  # Monday 08:00 UTC
        await jobs.enqueue_due_digests(worker.ctx)
        await worker.drain()

    received = Counter(r for m in smtp_sink.messages for r in m.rcpt_tos)
    assert received == {
        **{f"daily{n}@example.org": 2 for n in range(3)},
        **{f"weekly{n}@example.org": 1 for n in range(2)},
    }
    weekly = [m for m in smtp_sink.messages if m.rcpt_tos == ["weekly0@example.org"]]
    assert "3 new studies" in weekly[0].message["Subject"]
    assert {row.status for row in await deliveries(sessions)} == {"sent"}
    await engine.dispose()


async def test_nothing_new_moves_the_date_on_and_a_digest_in_flight_is_left_alone(
    tmp_path, database_url, redis_url, smtp_sink
):
    settings = make_settings(tmp_path, database_url, redis_url, smtp_url=smtp_sink.url)
    engine, sessions = await migrated_sessions(settings)
    # Digests go out at 08:00 local: 23:00 UTC the day before, in Tokyo.
    daily = {"frequency": "daily", "timezone": "Asia/Tokyo"}
    due = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)
    reader, busy = await add_subscribers(sessions, 2, next_digest_at=due, **daily)
    # Wants trials only: the observational study below gives it nothing this period.
    (idle,) = await add_subscribers(
        sessions, 1, prefix="idle", min_level="rct", next_digest_at=due, **daily
    )
    clock = Clock(datetime(2026, 11, 25, 12, 0, tzinfo=UTC))

    async with running_worker(settings, redis_url, clock) as worker:
        await worker.enqueue(make_event("quiet", [article("811", "observational")]))
        await worker.drain()
        clock.now = datetime(2026, 11, 26, 0, 0, 30, tzinfo=UTC)  # 09:00 in Tokyo
        async with sessions.begin() as session:
            # Another job's claim, fresh: its digest may be on the wire right now.
            await session.execute(
                update(Delivery)
                .where(Delivery.subscription_id == busy)
                .values(status="sending", claimed_at=clock.now)
            )
        await jobs.enqueue_due_digests(worker.ctx)
        await worker.drain()

    assert [m.rcpt_tos for m in smtp_sink.messages] == [["reader0@example.org"]]
    async with sessions() as session:
        rows = (await session.execute(select(Subscription.id, Subscription.next_digest_at))).all()
    # Compared naive: SQLite gives the stored UTC time back without its zone.
    dates = {sub_id: due_at.replace(tzinfo=None) for sub_id, due_at in rows if due_at}
    next_due = datetime(2026, 11, 26, 23, 0)  # 08:00 tomorrow in Tokyo
    assert dates[reader] == next_due
    assert dates[idle] == next_due  # no message, the date moved on
    assert dates[busy] == due.replace(tzinfo=None)  # its own job moves it
    await engine.dispose()


async def test_a_retraction_reaches_exactly_those_who_received_the_article(
    tmp_path, database_url, redis_url, smtp_sink
):
    settings = make_settings(tmp_path, database_url, redis_url, smtp_url=smtp_sink.url)
    engine, sessions = await migrated_sessions(settings)
    await add_subscribers(sessions, 3, prefix="all")
    await add_subscribers(sessions, 2, prefix="strict", min_level="rct")  # got 901 only
    await add_subscribers(sessions, 2, prefix="daily", frequency="daily")  # nothing sent yet
    clock = Clock(datetime(2026, 11, 25, 12, 0, tzinfo=UTC))

    async with running_worker(settings, redis_url, clock) as worker:
        await worker.enqueue(
            make_event("r1", [article("901", "rct"), article("902", "case_report")])
        )
        await worker.drain()
        await add_subscribers(sessions, 2, prefix="late")  # joined after the article went out
        smtp_sink.clear()
        retraction = make_event(
            "r2",
            [article("902", "case_report", title="Retracted: study 902")],
            type_="evidence.retracted",
        )
        await worker.enqueue(retraction)
        await worker.drain()

    received = Counter(r for m in smtp_sink.messages for r in m.rcpt_tos)
    assert received == {f"all{n}@example.org": 1 for n in range(3)}
    message = smtp_sink.messages[0].message
    assert message["Subject"].startswith("Correction: a study on Indolent systemic mastocytosis")
    assert "was retracted" in message.get_body(preferencelist=("plain",)).get_content()
    await engine.dispose()


async def test_a_dead_jobs_digest_claim_goes_back_to_the_digest_not_to_a_message_of_its_own(
    tmp_path, database_url, redis_url, smtp_sink
):
    settings = make_settings(tmp_path, database_url, redis_url, smtp_url=smtp_sink.url)
    engine, sessions = await migrated_sessions(settings)
    due = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    (daily,) = await add_subscribers(
        sessions, 1, prefix="daily", frequency="daily", next_digest_at=due
    )
    clock = Clock(datetime(2026, 11, 25, 12, 0, tzinfo=UTC))

    async with running_worker(settings, redis_url, clock) as worker:
        await worker.enqueue(make_event("d1", [article("821", "rct")]))
        await worker.drain()
        async with sessions.begin() as session:
            # Claimed by a digest job that died an hour ago (its claim is stale).
            await session.execute(
                update(Delivery)
                .where(Delivery.subscription_id == daily)
                .values(status="sending", claimed_at=clock.now - timedelta(hours=1))
            )
        await jobs.sweep(worker.ctx)
        await worker.drain()
        assert smtp_sink.messages == []
        assert {row.status for row in await deliveries(sessions)} == {"pending"}

        clock.now = due + timedelta(seconds=30)
        await jobs.enqueue_due_digests(worker.ctx)
        await worker.drain()

    assert [m.rcpt_tos for m in smtp_sink.messages] == [["daily0@example.org"]]
    assert smtp_sink.messages[0].message["Subject"].startswith("Your daily PubWatch digest")
    assert {row.status for row in await deliveries(sessions)} == {"sent"}
    await engine.dispose()
