"""Subscription state changes and the consent log, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from pubwatch_notify.store.engine import make_engine, make_sessionmaker
from pubwatch_notify.store.migrate import upgrade_to_head
from pubwatch_notify.store.models import (
    Channel,
    ConsentRecord,
    Delivery,
    Frequency,
    StoredEvent,
    Subscription,
)
from pubwatch_notify.subscriptions import service
from pubwatch_notify.subscriptions.addresses import address_hash
from pubwatch_notify.subscriptions.form import SubscribeRequest
from pubwatch_notify.subscriptions.schedule import next_digest_at
from pubwatch_notify.subscriptions.wording import Wording
from pubwatch_shared.events import EvidenceLevel

SECRET = "store-test-secret"
WORDING = Wording("v-test", "I agree.")


def _request(address: str, topic: str = "topic-a", channel: Channel = Channel.EMAIL):
    return SubscribeRequest(
        topic=topic,
        channel=channel,
        address=address,
        frequency=Frequency.DAILY,
        min_level=EvidenceLevel.RCT,
        timezone="Europe/Paris",
        source="web",
    )


async def _store(db_settings):
    engine = make_engine(db_settings.resolved_database_url)
    await upgrade_to_head(engine)
    return engine, make_sessionmaker(engine)


async def _subscribe(sessionmaker, address: str, topic: str = "topic-a"):
    async with sessionmaker() as session:
        return await service.subscribe(
            session,
            _request(address, topic),
            hashed_address=address_hash(SECRET, address),
            wording=WORDING,
            ip="198.51.100.1",
        )


async def test_subscribe_confirm_unsubscribe_resubscribe(db_settings):
    engine, sessionmaker = await _store(db_settings)
    try:
        first = await _subscribe(sessionmaker, "ann@example.org")
        again = await _subscribe(sessionmaker, "ann@example.org")
        assert (first.outcome, again.outcome) == ("created", "still-pending")
        assert first.subscription_id == again.subscription_id
        async with sessionmaker() as session:
            subscription = await session.get(Subscription, first.subscription_id)
            assert await service.confirm(session, subscription, ip="198.51.100.1")
            assert subscription.next_digest_at is not None
        confirmed = await _subscribe(sessionmaker, "ann@example.org")
        assert confirmed.outcome == "already-confirmed"
        assert not confirmed.needs_confirmation
        async with sessionmaker() as session:
            subscription = await session.get(Subscription, first.subscription_id)
            ended = await service.unsubscribe(
                session, subscription, every_topic=False, source="one-click", ip=None
            )
            assert ended == 1
        restarted = await _subscribe(sessionmaker, "ann@example.org")
        assert restarted.outcome == "restarted"
        assert restarted.token_version == first.token_version + 1
        async with sessionmaker() as session:
            log = list(
                await session.execute(
                    select(
                        ConsentRecord.action,
                        ConsentRecord.source,
                        ConsentRecord.wording_version,
                        ConsentRecord.ip,
                    ).order_by(ConsentRecord.id)
                )
            )
        assert [tuple(row) for row in log] == [
            ("subscribe", "web", "v-test", "198.51.100.1"),
            ("subscribe", "web", "v-test", "198.51.100.1"),
            ("confirm", "email-link", "v-test", "198.51.100.1"),
            ("unsubscribe", "one-click", "v-test", None),
            ("subscribe", "web", "v-test", "198.51.100.1"),
        ]
    finally:
        await engine.dispose()


async def test_unsubscribe_from_every_topic(db_settings):
    engine, sessionmaker = await _store(db_settings)
    try:
        a = await _subscribe(sessionmaker, "ann@example.org", "topic-a")
        await _subscribe(sessionmaker, "ann@example.org", "topic-b")
        other = await _subscribe(sessionmaker, "bob@example.org", "topic-a")
        async with sessionmaker() as session:
            subscription = await session.get(Subscription, a.subscription_id)
            count = await service.unsubscribe(
                session, subscription, every_topic=True, source="web", ip=None
            )
        assert count == 2
        async with sessionmaker() as session:
            still = await session.get(Subscription, other.subscription_id)
            assert still.status == "pending"
    finally:
        await engine.dispose()


async def test_delete_subscriber_data_keeps_only_hash_and_dates(db_settings):
    engine, sessionmaker = await _store(db_settings)
    try:
        kept = await _subscribe(sessionmaker, "bob@example.org")
        gone = await _subscribe(sessionmaker, "ann@example.org")
        async with sessionmaker() as session:
            subscription = await session.get(Subscription, gone.subscription_id)
            await service.confirm(session, subscription, ip="198.51.100.1")
            event = StoredEvent(
                event_id="e1",
                source="pubmed",
                type="evidence.new",
                topic="topic-a",
                occurred_at=datetime.now(UTC),
                strongest_level="rct",
                payload={},
            )
            session.add(event)
            await session.flush()
            session.add(
                Delivery(subscription_id=gone.subscription_id, event_id=event.id, channel="email")
            )
            await session.commit()
        async with sessionmaker() as session:
            assert await service.delete_subscriber_data(session, " ANN@example.org ") == 1
        async with sessionmaker() as session:
            assert await service.delete_subscriber_data(session, "ann@example.org") == 0
            assert await session.get(Subscription, gone.subscription_id) is None
            assert await session.get(Subscription, kept.subscription_id) is not None
            assert list(await session.scalars(select(Delivery))) == []
            hashed = address_hash(SECRET, "ann@example.org")
            rows = list(
                await session.scalars(
                    select(ConsentRecord).where(ConsentRecord.address_hash == hashed)
                )
            )
        assert [row.action for row in rows] == ["subscribe", "confirm", "delete"]
        for row in rows:
            assert row.subscription_id is None
            assert row.ip is None
            assert row.topic == ""
            assert row.created_at is not None
    finally:
        await engine.dispose()


def test_digest_schedule_follows_the_subscribers_clock():
    now = datetime(2026, 3, 7, 15, 0, tzinfo=UTC)  # a Saturday, 09:00 in Chicago
    assert next_digest_at("immediate", "UTC", now) is None
    daily = next_digest_at("daily", "America/Chicago", now)
    assert daily == datetime(2026, 3, 8, 13, 0, tzinfo=UTC)  # 08:00 CDT (DST began)
    weekly = next_digest_at("weekly", "Europe/Paris", now)
    assert weekly == datetime(2026, 3, 9, 7, 0, tzinfo=UTC)  # Monday 08:00 CET
