"""One event → each matching subscriber exactly one message; nobody else; repeats are no-ops."""

from __future__ import annotations

from collections import Counter

import pytest
from arq.jobs import Job, JobStatus

from tests.notify.delivery.helpers import (
    OTHER_TOPIC,
    add_subscribers,
    article,
    deliveries,
    make_event,
    make_settings,
    migrated_sessions,
    running_worker,
)

pytestmark = pytest.mark.timeout(120)


async def test_one_event_reaches_each_matching_subscriber_once(
    tmp_path, database_url, redis_url, smtp_sink
):
    settings = make_settings(
        tmp_path, database_url, redis_url, smtp_url=smtp_sink.url, fanout_page_size=7
    )
    engine, sessions = await migrated_sessions(settings)
    matching = await add_subscribers(sessions, 25, prefix="match")
    strict = await add_subscribers(sessions, 3, prefix="strict", min_level="guideline")
    rct_ok = await add_subscribers(sessions, 2, prefix="rctok", min_level="rct")
    await add_subscribers(sessions, 4, prefix="other", topic=OTHER_TOPIC)
    await add_subscribers(sessions, 3, prefix="pending", status="pending")
    await add_subscribers(sessions, 2, prefix="gone", status="unsubscribed")
    digest = await add_subscribers(sessions, 2, prefix="digest", frequency="daily")
    event = make_event("e1", [article("101", "rct"), article("102", "case_report")])

    async with running_worker(settings, redis_url) as worker:
        await worker.enqueue(event)
        await worker.drain()
        # The same event again (a re-poll, a re-post): stored once, nothing sent twice.
        await worker.redis.delete("arq:result:event:pubmed:e1")
        await worker.enqueue(event)
        await worker.drain()

    received = Counter(rcpt for mail in smtp_sink.messages for rcpt in mail.rcpt_tos)
    expected = {f"match{n}@example.org" for n in range(25)} | {
        "rctok0@example.org",
        "rctok1@example.org",
    }
    assert set(received) == expected
    assert set(received.values()) == {1}
    rows = await deliveries(sessions)
    by_sub = {row.subscription_id: row for row in rows}
    assert all(by_sub[s].status == "sent" for s in matching + rct_ok)
    assert all(s not in by_sub for s in strict)  # nothing at or above their threshold
    assert [by_sub[s].status for s in digest] == ["pending", "pending"]
    assert by_sub[rct_ok[0]].item_positions == [0]  # the case report was below threshold
    assert by_sub[matching[0]].item_positions == [0, 1]
    await engine.dispose()


async def test_baseline_events_are_stored_but_never_announced(
    tmp_path, sqlite_url, redis_url, smtp_sink
):
    settings = make_settings(tmp_path, sqlite_url, redis_url, smtp_url=smtp_sink.url)
    engine, sessions = await migrated_sessions(settings)
    await add_subscribers(sessions, 3)
    async with running_worker(settings, redis_url) as worker:
        await worker.enqueue(make_event("b1", [article("201")], type_="evidence.baseline"))
        await worker.drain()
    assert smtp_sink.messages == []
    assert await deliveries(sessions) == []
    await engine.dispose()


async def test_an_unknown_schema_version_fails_the_job_loudly(
    tmp_path, sqlite_url, redis_url, smtp_sink
):
    settings = make_settings(tmp_path, sqlite_url, redis_url, smtp_url=smtp_sink.url)
    engine, sessions = await migrated_sessions(settings)
    await add_subscribers(sessions, 1)
    payload = make_event("v2", [article("301")]).to_payload()
    payload["schema_version"] = 2
    async with running_worker(settings, redis_url) as worker:
        await worker.redis.enqueue_job("handle_event", payload, _job_id="v2", _queue_name="notify")
        await worker.drain()
        job = Job(
            "v2", worker.redis, _queue_name="notify", _deserializer=worker.worker.job_deserializer
        )
        assert await job.status() == JobStatus.complete
        info = await job.result_info()
    assert info is not None
    assert not info.success
    assert "schema_version" in str(info.result)
    assert smtp_sink.messages == []
    await engine.dispose()
