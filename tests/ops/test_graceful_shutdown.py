"""SIGTERM to a notify worker in the middle of a fan-out (issue 7, graceful shutdown).

The worker stops taking jobs, gives running ones PUBWATCH_SHUTDOWN_GRACE_S, cancels the
rest and exits 0. A cancelled job lets the message it has on the wire finish and be recorded
``sent``, hands back what it had not sent, and a new worker sends that at once (well within
the test's wait, without the minute's sweeper or the stale-claim timeout). Nothing is left
half-sent: every subscriber has exactly one email and no delivery stays ``sending``.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from tests.fakes.smtp import SmtpSink
from tests.ops.system import (
    GRACE_S,
    delivery_statuses,
    migrated_system,
    post_event,
    processes,
    start,
    start_api_and_worker,
    wait_ready,
    wait_until,
)

pytestmark = pytest.mark.slow

SUBSCRIBERS = 1000
MAX_JOBS = 4


def test_sigterm_mid_fan_out_exits_cleanly_and_leaves_nothing_half_sent(
    request: pytest.FixtureRequest, tmp_path: Path, redis_url: str, smtp_sink: SmtpSink
) -> None:
    addresses = [f"term{n:05d}@example.org" for n in range(SUBSCRIBERS)]
    system = migrated_system(
        request,
        tmp_path,
        redis_url=redis_url,
        smtp_url=smtp_sink.url,
        subscribers=addresses,
        worker_max_jobs=str(MAX_JOBS),
        shutdown_grace_s="2",
        # A claim left by a cancelled job is stale (claimable again) after this long.
        send_job_timeout_s="8",
    )
    env, database_url = system.env, system.database_url
    smtp_sink.slow(0.02)  # the fan-out takes several seconds: SIGTERM lands in the middle

    with processes() as started:
        api, first = start_api_and_worker(started, env, tmp_path, worker_name="worker-1")
        try:
            wait_ready(system.base_url)
            posted = post_event(system.base_url, "graceful-1")
            assert posted.status_code == 202, posted.text
            smtp_sink.wait_for(100, timeout_s=60)
            code, took_s = first.terminate(GRACE_S)
            sent_at_stop = smtp_sink.count()
            assert code == 0, first.log()
            assert took_s < 15, f"the worker took {took_s:.1f} s to stop"
            assert sent_at_stop < SUBSCRIBERS, "the fan-out ended before SIGTERM; nothing tested"
            statuses_at_stop = delivery_statuses(database_url)

            smtp_sink.slow(0)
            second = start(started, env, "notify", "worker", log_dir=tmp_path, name="worker-2")
            wanted = set(addresses)

            def everyone_reached() -> bool:
                return wanted <= {r for m in smtp_sink.messages for r in m.rcpt_tos}

            wait_until(everyone_reached, 90, "every subscriber's email after the restart")
            time.sleep(1)  # a duplicate, if any, has time to arrive
            statuses = delivery_statuses(database_url)
        except BaseException:
            print(api.log(), *(p.log() for p in started[1:]), sep="\n---\n")
            raise
        for process in (second, api):
            code, _ = process.terminate(GRACE_S)
            assert code == 0, process.log()

    received = Counter(r for m in smtp_sink.messages for r in m.rcpt_tos)
    doubled = {address: n for address, n in received.items() if n > 1}
    print(
        f"SIGTERM after {sent_at_stop} of {SUBSCRIBERS} sent (deliveries then: "
        f"{statuses_at_stop}); {len(doubled)} subscribers got a second copy"
    )
    assert set(received) == wanted
    # The message each cancelled job had on the wire was let finish and recorded `sent`
    # (the send and its record are one unit a cancellation does not cut): no second copy.
    assert doubled == {}, doubled
    # What the cancelled jobs handed back was sent by the new worker; nothing is left
    # `sending` for the sweeper to re-queue.
    assert statuses == {"sent": SUBSCRIBERS}, statuses
