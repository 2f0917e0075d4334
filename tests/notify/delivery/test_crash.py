"""kill -9 a notify worker in the middle of a fan-out to 5,000 subscribers, start another:
every subscriber ends up with exactly one message, except at most the ones in flight."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from arq import create_pool
from sqlalchemy import func, select

from pubwatch_notify.store.models import Delivery
from pubwatch_shared.queue import deserialize, enqueue_event, redis_settings, serialize
from tests.notify.delivery.helpers import (
    REPO_ROOT,
    add_subscribers,
    article,
    make_event,
    make_settings,
    migrated_sessions,
)

SUBSCRIBERS = 5000
MAX_JOBS = 4
JOB_TIMEOUT_S = 6  # short, so the killed worker's jobs come back within seconds

WORKER_CODE = (
    "from pubwatch_notify.settings import NotifySettings\n"
    "from pubwatch_notify.worker import run_worker\n"
    "raise SystemExit(run_worker(NotifySettings()))\n"
)


def start_worker(env: dict[str, str], log_path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-c", WORKER_CODE], env=env, cwd=REPO_ROOT, stdout=log, stderr=log
        )


async def wait_until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_kill_9_mid_fanout_then_restart_sends_each_message_once(
    tmp_path, sqlite_url, redis_url, smtp_sink
):
    settings = make_settings(tmp_path, sqlite_url, redis_url, smtp_url=smtp_sink.url)
    engine, sessions = await migrated_sessions(settings)
    await add_subscribers(sessions, SUBSCRIBERS)
    env = {
        **os.environ,
        "PUBWATCH_DATABASE_URL": sqlite_url,
        "PUBWATCH_REDIS_URL": redis_url,
        "PUBWATCH_SMTP_URL": smtp_sink.url,
        "PUBWATCH_VAR_DIR": str(tmp_path / "var"),
        "PUBWATCH_TOPICS_FILE": str(REPO_ROOT / "topics.toml"),
        "PUBWATCH_FANOUT_PAGE_SIZE": "100",
        "PUBWATCH_WORKER_MAX_JOBS": str(MAX_JOBS),
        "PUBWATCH_SEND_JOB_TIMEOUT_S": str(JOB_TIMEOUT_S),
        "PUBWATCH_LOG_FORMAT": "text",
    }
    pool = await create_pool(
        redis_settings(redis_url), job_serializer=serialize, job_deserializer=deserialize
    )
    await enqueue_event(pool, make_event("crash1", [article("1201", "rct")]))
    log_path = tmp_path / "worker.log"

    first = start_worker(env, log_path)
    try:
        await wait_until(
            lambda: smtp_sink.count() >= SUBSCRIBERS // 3, 60, "first worker sent too little"
        )
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        sent_before_kill = smtp_sink.count()
        assert sent_before_kill < SUBSCRIBERS, "the worker finished before it could be killed"

        second = start_worker(env, log_path)
        try:

            def everyone_has_mail() -> bool:
                return len({r for m in smtp_sink.messages for r in m.rcpt_tos}) >= SUBSCRIBERS

            await wait_until(everyone_has_mail, 120, "not every subscriber got their message")
            async with sessions() as session:
                for _ in range(100):
                    unsent = await session.scalar(
                        select(func.count()).where(Delivery.status != "sent")
                    )
                    if unsent == 0:
                        break
                    await asyncio.sleep(0.1)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
        await pool.aclose()

    received = Counter(r for m in smtp_sink.messages for r in m.rcpt_tos)
    duplicates = sum(count - 1 for count in received.values())
    print(
        f"\ncrash test: {sent_before_kill} sent before kill -9, "
        f"{len(received)} subscribers reached, {duplicates} duplicate(s) "
        f"(in-flight bound {MAX_JOBS})"
    )
    assert len(received) == SUBSCRIBERS
    # One message per concurrent job can have been accepted but not yet recorded at the kill.
    assert duplicates <= MAX_JOBS
    assert unsent == 0
    await engine.dispose()
