"""The admin commands, through the same click entry point operators run.

In-process (click's runner) rather than one subprocess each: a Python start-up per command
would make this file the slowest in the suite; the e2e tests cover the real processes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from redis import Redis
from sqlalchemy import select

from pubwatch_notify.store.engine import make_engine, make_sessionmaker
from pubwatch_notify.store.migrate import upgrade_to_head
from pubwatch_notify.store.models import Delivery, Subscription
from pubwatch_shared.cli import main
from pubwatch_shared.heartbeat import heartbeat_key
from pubwatch_shared.queue import NOTIFY_QUEUE, deserialize
from tests.e2e.processes import base_env
from tests.ops.helpers import EMAIL, PHONE, SECRET, add_history

TOPICS = '[[topic]]\nslug = "alpha"\nname = "Alpha condition"\nquery = "a[tiab]"\n'


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def pubwatch(env: dict[str, str], *args: str) -> Result:
    """``pubwatch *args`` with exactly ``env``'s PUBWATCH_* settings; logging restored after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    settings = {k: v for k, v in env.items() if k.startswith("PUBWATCH_")}
    unset: dict[str, str | None] = {
        k: None for k in os.environ if k.startswith("PUBWATCH_") and k not in settings
    }
    try:
        result = CliRunner().invoke(main, list(args), env={**unset, **settings})
    finally:
        root.handlers[:], root.level = handlers, level
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Result(result.exit_code, result.stdout, result.stderr)


async def _prepare(sqlite_url: str) -> dict[str, int]:
    engine = make_engine(sqlite_url)
    await upgrade_to_head(engine)
    async with make_sessionmaker(engine)() as session:
        ids = await add_history(session)
    await engine.dispose()
    return ids


@pytest.fixture
def setup(tmp_path: Path, redis_url: str, sqlite_url: str):
    topics = tmp_path / "topics.toml"
    topics.write_text(TOPICS)
    ids = asyncio.run(_prepare(sqlite_url))
    redis = Redis.from_url(redis_url)
    redis.flushdb()
    env = base_env(
        redis_url=redis_url,
        database_url=sqlite_url,
        topics_file=str(topics),
        secret_key=SECRET,
        var_dir=str(tmp_path / "var"),
    )
    yield env, ids, redis, sqlite_url
    redis.close()


def _delivery(sqlite_url: str, delivery_id: int) -> tuple[str, int]:
    async def read() -> tuple[str, int]:
        engine = make_engine(sqlite_url)
        async with make_sessionmaker(engine)() as session:
            delivery = await session.get(Delivery, delivery_id)
            assert delivery is not None
            found = (delivery.status, delivery.attempts)
        await engine.dispose()
        return found

    return asyncio.run(read())


def _end_phone_subscription(sqlite_url: str) -> None:
    async def write() -> None:
        engine = make_engine(sqlite_url)
        async with make_sessionmaker(engine)() as session:
            subscription = await session.scalar(
                select(Subscription).where(Subscription.address == PHONE)
            )
            assert subscription is not None
            subscription.status = "invalid"
            await session.commit()
        await engine.dispose()

    asyncio.run(write())


def test_check_worker_follows_the_heartbeat(setup) -> None:
    env, _, redis, _ = setup
    missing = pubwatch(env, "notify", "check-worker")
    assert missing.returncode == 1
    assert "no live notify worker heartbeat" in missing.stderr
    # A heartbeat from another host does not make this one healthy.
    redis.set(heartbeat_key("notify", "elsewhere:1"), time.time(), ex=30)
    assert pubwatch(env, "notify", "check-worker").returncode == 1
    redis.set(heartbeat_key("notify", f"{socket.gethostname()}:42"), time.time(), ex=30)
    found = pubwatch(env, "notify", "check-worker")
    assert found.returncode == 0, found.stderr
    assert "1 live notify worker" in found.stdout
    assert pubwatch(env, "ingest", "check-worker").returncode == 1
    redis.set(heartbeat_key("ingest", f"{socket.gethostname()}:43"), time.time(), ex=30)
    assert pubwatch(env, "ingest", "check-worker").returncode == 0
    down = pubwatch({**env, "PUBWATCH_REDIS_URL": "redis://127.0.0.1:1"}, "ingest", "check-worker")
    assert down.returncode == 1
    assert "cannot read heartbeats" in down.stderr


def test_queue_and_ingest_topics(setup) -> None:
    env, _, redis, _ = setup
    redis.zadd(NOTIFY_QUEUE, {"a": time.time() * 1000 - 5000})
    redis.set("pubwatch:ingest:topic:{alpha}:polled_at", time.time() - 600)
    redis.sadd("pubwatch:ingest:topic:{alpha}:seen", "1", "2", "3")
    redis.sadd("pubwatch:ingest:topic:{alpha}:announced", "2")
    queue = pubwatch(env, "notify", "queue")
    assert queue.returncode == 0, queue.stderr
    assert "jobs on the queue:   1" in queue.stdout
    topics = pubwatch(env, "ingest", "topics")
    assert topics.returncode == 0, topics.stderr
    (row,) = [line for line in topics.stdout.splitlines() if line.startswith("alpha")]
    assert row.split()[1:6] == ["10", "min", "ago", "3", "1"]


def test_export_then_delete_a_subscriber(setup) -> None:
    env, _, _, _ = setup
    exported = pubwatch(env, "notify", "export-subscriber", "(201) 555-0123")
    assert exported.returncode == 0, exported.stderr
    data = json.loads(exported.stdout)
    assert [s["address"] for s in data["subscriptions"]] == [PHONE]
    assert data["deliveries"][0]["last_error"].startswith("Twilio 21211")

    deleted = pubwatch(env, "notify", "delete-subscriber", "--yes", EMAIL)
    assert deleted.returncode == 0, deleted.stderr
    assert "deleted 1 subscription(s) of p•••@example.org" in deleted.stdout
    assert EMAIL not in deleted.stdout + deleted.stderr
    again = pubwatch(env, "notify", "delete-subscriber", "--yes", EMAIL)
    assert again.returncode == 1
    assert "no subscriptions found" in again.stderr
    assert EMAIL not in again.stderr
    # What remains is the consent log's hash-only record of the deletion.
    after = json.loads(pubwatch(env, "notify", "export-subscriber", EMAIL).stdout)
    assert after["subscriptions"] == []
    assert after["deliveries"] == []
    assert pubwatch(env, "notify", "export-subscriber", "nobody@example.org").returncode == 1


def test_resend_requeues_a_failed_delivery_and_enqueues_its_job(setup) -> None:
    env, ids, redis, sqlite_url = setup
    not_failed = pubwatch(env, "notify", "resend", str(ids["sent"]))
    assert not_failed.returncode == 1
    assert "only failed ones" in not_failed.stderr
    assert pubwatch(env, "notify", "resend", "999999").returncode == 1

    done = pubwatch(env, "notify", "resend", str(ids["failed"]))
    assert done.returncode == 0, done.stderr
    assert _delivery(sqlite_url, ids["failed"]) == ("queued", 0)
    (job_id,) = [j.decode() for j in redis.zrange(NOTIFY_QUEUE, 0, -1)]
    job = deserialize(redis.get(f"arq:job:{job_id}"))
    assert job["f"] == "send_to_subscriptions"
    assert job["a"] == [[ids["sms_subscription"]]]


def test_resend_refuses_when_the_subscription_ended(setup) -> None:
    env, ids, _, sqlite_url = setup
    _end_phone_subscription(sqlite_url)
    refused = pubwatch(env, "notify", "resend", str(ids["failed"]))
    assert refused.returncode == 1
    assert "invalid" in refused.stderr
    assert "•••0123" in refused.stderr
    assert PHONE not in refused.stderr


def test_run_digests_enqueues_the_digest_pass(setup) -> None:
    env, _, redis, _ = setup
    result = pubwatch(env, "notify", "run-digests")
    assert result.returncode == 0, result.stderr
    (job_id,) = [j.decode() for j in redis.zrange(NOTIFY_QUEUE, 0, -1)]
    assert deserialize(redis.get(f"arq:job:{job_id}"))["f"] == "enqueue_due_digests"
    down = pubwatch({**env, "PUBWATCH_REDIS_URL": "redis://127.0.0.1:1"}, "notify", "run-digests")
    assert down.returncode == 1
    assert "error: ConnectionError" in down.stderr
