"""Sent records: each caller returns only once its own record is committed; records that
arrive together share one commit; a failed commit fails every record it carried."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import Engine, event, select, text

from pubwatch_notify.delivery.sent_records import SentRecord, SentRecorder
from pubwatch_notify.store.engine import WriteTurns
from pubwatch_notify.store.models import Delivery, Subscription
from tests.notify.delivery.helpers import (
    add_subscribers,
    article,
    make_event,
    make_settings,
    migrated_sessions,
    running_worker,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


async def _queued_deliveries(settings, redis_url, count: int):
    """``count`` daily subscribers each with one pending delivery, and their ids."""
    engine, sessions = await migrated_sessions(settings)
    await add_subscribers(sessions, count, frequency="daily")
    async with running_worker(settings, redis_url) as worker:
        await worker.enqueue(make_event("e1", [article("901", "rct")]))
        await worker.drain()
    async with sessions() as session:
        rows = (await session.execute(select(Delivery.id, Delivery.subscription_id))).all()
    assert len(rows) == count
    return engine, sessions, rows


async def test_records_arriving_together_share_a_commit_and_each_waits_for_it(
    tmp_path, database_url, redis_url
):
    settings = make_settings(tmp_path, database_url, redis_url)
    engine, sessions, rows = await _queued_deliveries(settings, redis_url, 8)
    commits = 0

    def count_commit(_connection) -> None:
        nonlocal commits
        commits += 1

    # Every engine: on SQLite the recorder commits through a blocking engine of its own.
    event.listen(Engine, "commit", count_commit)
    recorder = SentRecorder(engine, WriteTurns(engine))
    next_at = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    committed_when_returned: list[bool] = []

    async def send_and_record(delivery_id: int, subscription_id: int) -> None:
        await recorder.record(
            SentRecord(
                (delivery_id,),
                f"SM{delivery_id}",
                f"key{delivery_id}",
                NOW,
                (subscription_id, next_at),
            )
        )
        # Read on another connection: the record is already committed when record() returns.
        async with sessions() as session:
            status = await session.scalar(select(Delivery.status).where(Delivery.id == delivery_id))
        committed_when_returned.append(status == "sent")

    try:
        await asyncio.gather(*(send_and_record(d, s) for d, s in rows))
    finally:
        await recorder.close()
        event.remove(Engine, "commit", count_commit)
    assert committed_when_returned == [True] * 8
    assert 1 <= commits < 8  # eight records, fewer commits
    async with sessions() as session:
        sent = (await session.execute(select(Delivery.provider_id, Delivery.message_key))).all()
        dates = set(await session.scalars(select(Subscription.next_digest_at)))
    assert sorted(sent) == sorted((f"SM{d}", f"key{d}") for d, _ in rows)
    assert {date.replace(tzinfo=None) for date in dates} == {next_at.replace(tzinfo=None)}
    await engine.dispose()


async def test_a_failed_commit_fails_every_record_it_carried_and_the_next_one_recovers(
    tmp_path, sqlite_url, redis_url
):
    settings = make_settings(tmp_path, sqlite_url, redis_url)
    engine, sessions, rows = await _queued_deliveries(settings, redis_url, 3)
    recorder = SentRecorder(engine, WriteTurns(engine))
    async with engine.begin() as connection:
        # Every update of a delivery now fails, as a broken database would.
        await connection.execute(
            text(
                "CREATE TRIGGER refuse BEFORE UPDATE ON deliveries "
                "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
            )
        )
    try:
        outcomes = await asyncio.gather(
            *(recorder.record(SentRecord((d,), "SM", "k", NOW)) for d, _ in rows),
            return_exceptions=True,
        )
        assert all("disk on fire" in str(outcome) for outcome in outcomes)
        async with engine.begin() as connection:
            await connection.execute(text("DROP TRIGGER refuse"))
        await recorder.record(SentRecord((rows[0][0],), "SM", "k", NOW))
    finally:
        await recorder.close()
    async with sessions() as session:
        statuses = list(await session.scalars(select(Delivery.status).order_by(Delivery.id)))
    assert statuses == ["sent", "pending", "pending"]
    await engine.dispose()


async def test_close_waits_for_the_commit_under_way(tmp_path, sqlite_url, redis_url):
    settings = make_settings(tmp_path, sqlite_url, redis_url)
    engine, sessions, rows = await _queued_deliveries(settings, redis_url, 1)
    recorder = SentRecorder(engine, WriteTurns(engine))
    recording = asyncio.create_task(recorder.record(SentRecord((rows[0][0],), "SM", "k", NOW)))
    await asyncio.sleep(0)  # the commit has started
    await recorder.close()
    await asyncio.wait_for(recording, timeout=5)
    async with sessions() as session:
        assert await session.scalar(select(Delivery.status)) == "sent"
    await engine.dispose()
