"""The notify worker's arq jobs. Each is safe to run twice: arq may, and a crash will.

- ``handle_event``: store the event (a repeat is a no-op), fan out page by page, enqueue one
  send job per page with a deterministic id;
- ``send_event_page``: send one page's queued deliveries of one event;
- ``send_to_subscriptions``: send every due queued delivery of some subscribers (held SMS,
  deliveries whose job was lost);
- ``send_digests``: one digest per due subscriber;
- crons ``enqueue_due_digests`` and ``sweep`` (each minute).
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Coroutine, Sequence
from datetime import datetime, timedelta
from typing import Any

from arq import Retry
from arq.constants import job_key_prefix
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from pubwatch_notify.delivery import claims
from pubwatch_notify.delivery.fanout import (
    SILENT_TYPES,
    FanoutPage,
    fan_out_page,
    load_event_facts,
)
from pubwatch_notify.delivery.intake import parse_event, store_event
from pubwatch_notify.delivery.job_names import (
    SEND_DIGESTS_JOB,
    SEND_EVENT_PAGE_JOB,
    SEND_TO_SUBSCRIPTIONS_JOB,
    digest_job_id,
    event_page_job_id,
    sweep_job_id,
    unfanned_event_job_id,
)
from pubwatch_notify.delivery.runtime import Runtime, runtime_from
from pubwatch_notify.delivery.sender import (
    BatchResult,
    BatchSender,
    Recipient,
    SendOptions,
    backoff_s,
    give_back_at_shutdown,
    group_by_subscription,
    load_recipients,
    stale_before,
    uninterruptible,
)
from pubwatch_notify.store.models import (
    Channel,
    Delivery,
    DeliveryStatus,
    Frequency,
    StoredEvent,
    Subscription,
    SubscriptionStatus,
)
from pubwatch_notify.subscriptions.schedule import next_digest_at
from pubwatch_shared.queue import HANDLE_EVENT_JOB, NOTIFY_QUEUE, event_job_id

log = logging.getLogger(__name__)

DIGEST_BATCH_SIZE = 200
SWEEP_BATCH_SIZE = 200
# Subscribers per send job: a fan-out page is split so that every connection of the pool
# has work while a page is being sent, and the last jobs of a fan-out are short.
SEND_JOB_SIZE = 250
# A queued delivery younger than this still has its own job coming; the sweeper leaves it.
ORPHAN_AFTER = timedelta(minutes=2)
# A stored event not fanned out this long after it arrived had its job lost.
UNFANNED_AFTER = timedelta(minutes=1)


async def handle_event(ctx: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    runtime = runtime_from(ctx)
    event = parse_event(payload)
    async with runtime.sessions.begin() as session:
        stored, created = await store_event(session, event, posted_by=None)
        event_pk, fanned_out = stored.id, stored.fanned_out_at is not None
    if fanned_out or event.type.value in SILENT_TYPES:
        if not fanned_out:
            await _mark_fanned_out(runtime, event_pk)
        return {"event_pk": event_pk, "created": created, "deliveries": 0}
    deliveries = await fan_out(runtime, event_pk)
    return {"event_pk": event_pk, "created": created, "deliveries": deliveries}


async def fan_out(runtime: Runtime, event_pk: int) -> int:
    """Walk the event's audience page by page; returns the deliveries recorded now."""
    async with runtime.sessions() as session:
        facts = await load_event_facts(session, event_pk)
    after_id, inserted = 0, 0
    while True:
        async with runtime.sessions.begin() as session:
            page = await fan_out_page(
                session, facts, after_id, runtime.settings.fanout_page_size, runtime.clock()
            )
        if page is None:
            break
        inserted += page.inserted
        for start, end in send_ranges(page, SEND_JOB_SIZE):
            # Enqueued after the page's deliveries are committed; a crash before this line
            # re-runs the page on retry, and the job id makes a second enqueue a no-op.
            # (Were the ranges to differ on a re-run, the claim still hands each delivery
            # to one job only.)
            await runtime.redis.enqueue_job(
                SEND_EVENT_PAGE_JOB,
                event_pk,
                start,
                end,
                _job_id=event_page_job_id(event_pk, start, facts.key),
                _queue_name=NOTIFY_QUEUE,
            )
        after_id = page.last_id
    await _mark_fanned_out(runtime, event_pk)
    log.info("event fanned out", extra={"event_pk": event_pk, "deliveries": inserted})
    return inserted


def send_ranges(page: FanoutPage, size: int) -> list[tuple[int, int]]:
    """The page's subscription range ``(after, last]`` cut into send jobs of at most
    ``size`` immediate deliveries each; none when the page has nothing to send now."""
    ids = page.immediate_ids
    if not page.immediate:
        return []
    if not ids:  # a page that did not list its ids: one job for all of it
        return [(page.after_id, page.last_id)]
    ranges: list[tuple[int, int]] = []
    start = page.after_id
    for index in range(size, len(ids), size):
        end = ids[index - 1]
        ranges.append((start, end))
        start = end
    ranges.append((start, page.last_id))
    return ranges


async def _mark_fanned_out(runtime: Runtime, event_pk: int) -> None:
    async with runtime.sessions.begin() as session:
        await session.execute(
            update(StoredEvent)
            .where(StoredEvent.id == event_pk, StoredEvent.fanned_out_at.is_(None))
            .values(fanned_out_at=runtime.clock())
        )


async def send_event_page(
    ctx: dict[str, Any], event_pk: int, after_subscription_id: int, last_subscription_id: int
) -> dict[str, int]:
    runtime = runtime_from(ctx)
    now = runtime.clock()
    stale = stale_before(now, runtime.settings.send_job_timeout_s)

    async def claim_page() -> list[claims.ClaimedDelivery]:
        async with runtime.sessions.begin() as session:
            claimed = await claims.claim(
                session,
                [
                    Delivery.event_id == event_pk,
                    Delivery.subscription_id > after_subscription_id,
                    Delivery.subscription_id <= last_subscription_id,
                ],
                now,
                stale,
            )
            # An SMS subscriber's other due items (held by quiet hours or the cap) ride
            # along in this message instead of costing another one.
            sms_subscribers = sorted(
                {d.subscription_id for d in claimed if d.channel == Channel.SMS}
            )
            if sms_subscribers:
                claimed += await claims.claim(
                    session,
                    [
                        Delivery.subscription_id.in_(sms_subscribers),
                        Delivery.channel == Channel.SMS.value,
                    ],
                    now,
                    stale,
                )
        return claimed

    claimed = await _claim(runtime, claim_page())
    return await _send_claimed(ctx, runtime, claimed, SendOptions())


async def _claim(
    runtime: Runtime, claiming: Coroutine[Any, Any, list[claims.ClaimedDelivery]]
) -> list[claims.ClaimedDelivery]:
    """Run a claim to its commit even when the job is cancelled meanwhile (at shutdown);
    what it claimed is then handed straight back instead of waiting to go stale."""

    async def hand_back(claimed: list[claims.ClaimedDelivery]) -> None:
        await give_back_at_shutdown(runtime, claimed)

    return await uninterruptible(claiming, on_cancelled=hand_back)


async def send_to_subscriptions(ctx: dict[str, Any], subscription_ids: list[int]) -> dict[str, int]:
    runtime = runtime_from(ctx)
    now = runtime.clock()

    async def claim_due() -> list[claims.ClaimedDelivery]:
        async with runtime.sessions.begin() as session:
            return await claims.claim(
                session,
                [Delivery.subscription_id.in_(subscription_ids)],
                now,
                stale_before(now, runtime.settings.send_job_timeout_s),
            )

    claimed = await _claim(runtime, claim_due())
    return await _send_claimed(ctx, runtime, claimed, SendOptions())


async def _send_claimed(
    ctx: dict[str, Any],
    runtime: Runtime,
    claimed: list[claims.ClaimedDelivery],
    options: SendOptions,
) -> dict[str, int]:
    if not claimed:
        return {"sent": 0}
    options.final_try = ctx.get("job_try", 1) >= runtime.settings.send_max_tries
    try:
        async with runtime.sessions() as session:
            recipients = await load_recipients(session, [d.subscription_id for d in claimed])
        groups, orphans = group_by_subscription(claimed, recipients)
        if orphans:
            async with runtime.sessions.begin() as session:
                await claims.mark_skipped(session, orphans, "subscription deleted")
    except asyncio.CancelledError:
        # Shutting down before anything was sent: hand the claims back at once.
        await asyncio.shield(give_back_at_shutdown(runtime, claimed, options.release_status))
        raise
    # From here the sender hands back what it does not send when cancelled.
    result = await BatchSender(runtime, options).send(groups)
    _retry_if_needed(ctx, runtime, result)
    return _summary(result)


def _retry_if_needed(ctx: dict[str, Any], runtime: Runtime, result: BatchResult) -> None:
    if result.continue_now and result.retry_later == result.continue_now:
        raise Retry(defer=0)
    if not result.retry_later:
        return
    settings = runtime.settings
    delay_s = backoff_s(
        ctx.get("job_try", 1),
        settings.retry_base_delay_s,
        settings.retry_max_delay_s,
        random.random(),
    )
    if result.retry_after_s:
        delay_s = max(delay_s, result.retry_after_s)
    log.info(
        "send job backing off",
        extra={
            "retry_later": result.retry_later,
            "defer_s": round(delay_s, 2),
            "reason": result.last_error,
        },
    )
    raise Retry(defer=delay_s)


def _summary(result: BatchResult) -> dict[str, int]:
    return {
        "sent": result.sent,
        "failed": result.failed,
        "skipped": result.skipped,
        "held": result.held,
        "retry_later": result.retry_later,
    }


async def send_digests(ctx: dict[str, Any], subscription_ids: list[int]) -> dict[str, int]:
    """One digest per due subscriber: their pending items, merged; then the next date."""
    runtime = runtime_from(ctx)
    now = runtime.clock()
    due_ids = await _still_due(runtime, subscription_ids)
    if not due_ids:
        return {"sent": 0}
    async with runtime.sessions() as session:
        recipients = await load_recipients(session, due_ids)

    async def claim_due() -> list[claims.ClaimedDelivery]:
        # One claim for the whole page, not a transaction per subscriber (that was a fifth
        # of a digest run's time): what this job does not get to send, the sender hands
        # back as pending.
        async with runtime.write_turns.turn(), runtime.sessions.begin() as session:
            claimed = await claims.claim(
                session,
                [Delivery.subscription_id.in_(due_ids)],
                now,
                stale_before(now, runtime.settings.send_job_timeout_s),
                source_status=DeliveryStatus.PENDING,
            )
            with_items = {delivery.subscription_id for delivery in claimed}
            await _advance_idle_digests(
                session,
                [recipients[i] for i in due_ids if i in recipients and i not in with_items],
                now,
            )
        return claimed

    claimed = await _claim(runtime, claim_due())
    options = SendOptions(digest=True, release_status=DeliveryStatus.PENDING)
    return await _send_claimed(ctx, runtime, claimed, options)


async def _advance_idle_digests(
    session: AsyncSession, idle: Sequence[Recipient], now: datetime
) -> None:
    """Nothing new this period for ``idle``: move their dates on (one UPDATE per frequency
    and time zone, which share the next date), except for a subscriber whose digest another
    job has in flight: that job moves it once it is settled."""
    if not idle:
        return
    in_flight = set(
        await session.scalars(
            select(Delivery.subscription_id)
            .distinct()
            .where(
                Delivery.subscription_id.in_([recipient.id for recipient in idle]),
                Delivery.status == DeliveryStatus.SENDING.value,
            )
        )
    )
    by_schedule: dict[tuple[str, str], list[int]] = {}
    for recipient in idle:
        if recipient.id not in in_flight:
            key = (recipient.frequency, recipient.timezone)
            by_schedule.setdefault(key, []).append(recipient.id)
    for (frequency, timezone), ids in by_schedule.items():
        await session.execute(
            update(Subscription)
            .where(Subscription.id.in_(ids))
            .values(next_digest_at=next_digest_at(frequency, timezone, now), last_digest_at=now)
            .execution_options(synchronize_session=False)
        )


async def _still_due(runtime: Runtime, subscription_ids: Sequence[int]) -> list[int]:
    # Re-checked here, not trusted from the cron: a digest already sent this period has
    # moved next_digest_at on, so a second job for the same period finds nothing due.
    async with runtime.sessions() as session:
        rows = await session.scalars(
            select(Subscription.id)
            .where(
                Subscription.id.in_(subscription_ids),
                Subscription.status == SubscriptionStatus.CONFIRMED.value,
                Subscription.next_digest_at <= runtime.clock(),
            )
            .order_by(Subscription.id)
        )
        return list(rows)


async def enqueue_due_digests(ctx: dict[str, Any]) -> int:
    """Cron, each minute: a ``send_digests`` job per page of subscribers whose digest is due."""
    runtime = runtime_from(ctx)
    now = runtime.clock()
    minute = now.replace(second=0, microsecond=0)
    after_id, jobs = 0, 0
    while True:
        async with runtime.sessions() as session:
            ids = list(
                await session.scalars(
                    select(Subscription.id)
                    .where(
                        Subscription.status == SubscriptionStatus.CONFIRMED.value,
                        Subscription.frequency.in_((Frequency.DAILY.value, Frequency.WEEKLY.value)),
                        Subscription.next_digest_at <= now,
                        Subscription.id > after_id,
                    )
                    .order_by(Subscription.id)
                    .limit(DIGEST_BATCH_SIZE)
                )
            )
        if not ids:
            return jobs
        await runtime.redis.enqueue_job(
            SEND_DIGESTS_JOB, ids, _job_id=digest_job_id(minute, ids[0]), _queue_name=NOTIFY_QUEUE
        )
        jobs += 1
        after_id = ids[-1]


async def sweep(ctx: dict[str, Any]) -> int:
    """Cron, each minute: nothing waits forever.

    Claims gone stale (their job died) go back to ``queued``, due at once (a digest
    subscriber's to ``pending``, for their next digest run); queued
    deliveries that are due and have no job coming (held ones now due, ones a cancelled
    job handed back, or a lost job's) get one; an event stored but never fanned out (its
    ``handle_event`` was never queued, or gave up) is handed to ``handle_event`` again.
    Returns the jobs queued.
    """
    runtime = runtime_from(ctx)
    minute = runtime.clock().replace(second=0, microsecond=0)
    return await sweep_now(runtime, f"{minute:%Y%m%dT%H%M}")


async def recover_at_startup(runtime: Runtime) -> int:
    """At worker start, what the sweeper would do, without waiting for its minute: a worker
    restarted after a shutdown sends what the cancelled jobs handed back at once."""
    return await sweep_now(runtime, f"start-{uuid.uuid4().hex[:12]}")


async def sweep_now(runtime: Runtime, run: str) -> int:
    """One sweep; ``run`` makes its job ids (the same run queues each job once)."""
    now = runtime.clock()
    stale = (
        Delivery.status == DeliveryStatus.SENDING.value,
        Delivery.claimed_at < stale_before(now, runtime.settings.send_job_timeout_s),
    )
    async with runtime.sessions.begin() as session:
        # A digest's items wait for the subscriber's next digest run (their date did not
        # move, so that is the next minute's cron), not for a message of their own.
        await session.execute(
            update(Delivery)
            .where(
                *stale,
                Delivery.subscription_id.in_(
                    select(Subscription.id).where(
                        Subscription.frequency != Frequency.IMMEDIATE.value
                    )
                ),
            )
            .values(status=DeliveryStatus.PENDING.value, claimed_at=None)
            .execution_options(synchronize_session=False)
        )
        await session.execute(
            update(Delivery)
            .where(*stale)
            # Due now: queued again below in this same sweep, not two minutes later.
            .values(status=DeliveryStatus.QUEUED.value, claimed_at=None, not_before=now)
            .execution_options(synchronize_session=False)
        )
    jobs = await _queue_due_deliveries(runtime, now, run)
    jobs += await _queue_unfanned_events(runtime, now, run)
    return jobs


async def _queue_due_deliveries(runtime: Runtime, now: datetime, run: str) -> int:
    after_id, jobs = 0, 0
    while True:
        async with runtime.sessions() as session:
            ids = list(
                await session.scalars(
                    select(Delivery.subscription_id)
                    .distinct()
                    .where(
                        Delivery.status == DeliveryStatus.QUEUED.value,
                        Delivery.subscription_id > after_id,
                        (Delivery.not_before <= now)
                        | (
                            Delivery.not_before.is_(None)
                            & (Delivery.created_at < now - ORPHAN_AFTER)
                        ),
                    )
                    .order_by(Delivery.subscription_id)
                    .limit(SWEEP_BATCH_SIZE)
                )
            )
        if not ids:
            return jobs
        await runtime.redis.enqueue_job(
            SEND_TO_SUBSCRIPTIONS_JOB,
            ids,
            _job_id=sweep_job_id(run, ids[0]),
            _queue_name=NOTIFY_QUEUE,
        )
        jobs += 1
        after_id = ids[-1]


async def _queue_unfanned_events(runtime: Runtime, now: datetime, run: str) -> int:
    """``handle_event`` again for events stored over a minute ago and not fanned out yet.

    Such an event was committed but its job never queued (Redis failed after the events
    API's commit) or gave up. Its own job, when still queued or running, is left to finish;
    otherwise a job with a fresh id is queued (the deterministic id may still have a result
    kept, which would make the enqueue a no-op). ``handle_event`` is idempotent.
    """
    after_pk, jobs = 0, 0
    while True:
        async with runtime.sessions() as session:
            rows = (
                await session.execute(
                    select(StoredEvent.id, StoredEvent.payload)
                    .where(
                        StoredEvent.fanned_out_at.is_(None),
                        StoredEvent.received_at < now - UNFANNED_AFTER,
                        StoredEvent.id > after_pk,
                    )
                    .order_by(StoredEvent.id)
                    .limit(SWEEP_BATCH_SIZE)
                )
            ).all()
        if not rows:
            return jobs
        for event_pk, payload in rows:
            try:
                event = parse_event(payload)
            except Exception:
                log.exception("stored event cannot be parsed", extra={"event_pk": event_pk})
                continue
            if await runtime.redis.exists(job_key_prefix + event_job_id(event)):
                continue  # its own job is queued or running
            job = await runtime.redis.enqueue_job(
                HANDLE_EVENT_JOB,
                event.to_payload(),
                _job_id=unfanned_event_job_id(run, event_pk),
                _queue_name=NOTIFY_QUEUE,
            )
            if job is not None:
                jobs += 1
                log.info("event not fanned out, queued again", extra={"event_pk": event_pk})
        after_pk = rows[-1][0]
