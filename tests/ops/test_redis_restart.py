"""Restarting Redis (append-only on) loses no event and no delivery (issue 7, done-when 2).

A real `pubwatch notify worker` fans one event out to 1,500 email subscribers; Redis is
stopped and started again on the same port (its append-only file kept) while the messages
are going out. Every subscriber ends with exactly one email. A second test posts an event
through the API while Redis is down: the API refuses it (503 with Retry-After) or takes it,
and once Redis is back the event reaches its subscribers, once each.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from pubwatch_shared.embedded_redis import RedisServer
from tests.fakes.smtp import SmtpSink
from tests.ops.system import (
    GRACE_S,
    delivery_statuses,
    migrated_system,
    post_event,
    processes,
    start_api_and_worker,
    wait_ready,
)

pytestmark = pytest.mark.slow

FAN_OUT_SUBSCRIBERS = 1500


def _addresses(count: int, prefix: str) -> list[str]:
    return [f"{prefix}{n:05d}@example.org" for n in range(count)]


def _per_recipient(sink: SmtpSink) -> Counter[str]:
    return Counter(r.lower() for m in sink.messages for r in m.rcpt_tos)


def _wait_for_everyone(
    sink: SmtpSink, addresses: list[str], timeout_s: float, logs: str | None = None
) -> Counter[str]:
    deadline = time.monotonic() + timeout_s
    wanted = {a.lower() for a in addresses}
    while time.monotonic() < deadline:
        received = _per_recipient(sink)
        if wanted <= set(received):
            return received
        time.sleep(0.25)
    missing = wanted - set(_per_recipient(sink))
    raise AssertionError(f"{len(missing)} subscribers got nothing, e.g. {sorted(missing)[:3]}")


def test_redis_restart_mid_fan_out_loses_and_doubles_nothing(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    redis_server: RedisServer,
    redis_url: str,
    smtp_sink: SmtpSink,
) -> None:
    addresses = _addresses(FAN_OUT_SUBSCRIBERS, "fan")
    system = migrated_system(
        request,
        tmp_path,
        redis_url=redis_url,
        smtp_url=smtp_sink.url,
        subscribers=addresses,
        fanout_page_size="250",
        worker_max_jobs="4",
        shutdown_grace_s="10",
    )
    database_url = system.database_url
    # Slow enough that the fan-out is still sending when Redis goes away.
    smtp_sink.slow(0.01)

    with processes() as started:
        api, worker = start_api_and_worker(started, system.env, tmp_path)
        try:
            wait_ready(system.base_url)
            posted = post_event(system.base_url, "redis-restart-1")
            assert posted.status_code == 202, posted.text
            smtp_sink.wait_for(150, timeout_s=60)
            sent_before_restart = smtp_sink.count()
            redis_server.stop()
            time.sleep(2)  # down for a while, as a real restart would be
            redis_server.start()
            smtp_sink.slow(0)
            received = _wait_for_everyone(smtp_sink, addresses, timeout_s=120)
            time.sleep(2)  # a duplicate, if any, has time to arrive
            received = _per_recipient(smtp_sink)
            assert worker.alive(), worker.log()
        except BaseException:
            print(api.log(), worker.log(), sep="\n---\n")
            raise
        code, _ = worker.terminate(GRACE_S)
        assert code == 0, worker.log()
        api.terminate(GRACE_S)

    doubled = {address: n for address, n in received.items() if n > 1}
    print(
        f"redis restart after {sent_before_restart} of {FAN_OUT_SUBSCRIBERS} sent; "
        f"{len(received)} subscribers reached, {len(doubled)} twice or more"
    )
    assert set(received) == {a.lower() for a in addresses}
    assert not doubled, f"{len(doubled)} subscribers got more than one email: {doubled}"
    statuses = delivery_statuses(database_url)
    assert statuses == {"sent": FAN_OUT_SUBSCRIBERS}, statuses


def test_event_posted_while_redis_is_down_is_not_lost(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    redis_server: RedisServer,
    redis_url: str,
    smtp_sink: SmtpSink,
) -> None:
    addresses = _addresses(20, "down")
    system = migrated_system(
        request,
        tmp_path,
        redis_url=redis_url,
        smtp_url=smtp_sink.url,
        subscribers=addresses,
        shutdown_grace_s="10",
    )
    base_url = system.base_url

    with processes() as started:
        api, worker = start_api_and_worker(started, system.env, tmp_path)
        try:
            wait_ready(base_url)
            redis_server.stop()
            asked = time.monotonic()
            down = post_event(base_url, "redis-down-1", timeout=60)
            answered_s = time.monotonic() - asked
            print(f"with Redis down the API answered {down.status_code} in {answered_s:.1f} s")
            assert down.status_code in {202, 503}, down.text
            if down.status_code == 503:
                assert int(down.headers["Retry-After"]) > 0
            assert answered_s < 15, f"the API took {answered_s:.1f} s to answer"
            ready = httpx.get(f"{base_url}/readyz", timeout=30)
            assert ready.status_code == 503, ready.text
            redis_server.start()
            # The client retries as told (a 202 before is also safe to repeat: 200, no resend).
            wait_ready(base_url)
            again = post_event(base_url, "redis-down-1")
            assert again.status_code in {200, 202}, again.text
            received = _wait_for_everyone(smtp_sink, addresses, timeout_s=60)
            time.sleep(2)
            received = _per_recipient(smtp_sink)
            assert worker.alive(), worker.log()
        except BaseException:
            print(api.log(), worker.log(), sep="\n---\n")
            raise
        for process in (worker, api):
            code, _ = process.terminate(GRACE_S)
            assert code == 0, process.log()

    assert received == Counter({a.lower(): 1 for a in addresses}), received
    assert delivery_statuses(system.database_url) == {"sent": len(addresses)}
