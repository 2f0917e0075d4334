"""What the notify admin commands do: export a subscriber, re-send a delivery, run digests.

Each raises :class:`ActionError` with a sentence for the operator when it cannot do its job;
the command prints it and exits non-zero.
"""

from __future__ import annotations

import contextlib
import time
from datetime import datetime
from typing import Any

from arq import ArqRedis
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from pubwatch_notify.delivery.job_names import SEND_TO_SUBSCRIPTIONS_JOB
from pubwatch_notify.store.models import (
    ConsentRecord,
    Delivery,
    DeliveryStatus,
    Frequency,
    StoredEvent,
    Subscription,
    SubscriptionStatus,
)
from pubwatch_notify.subscriptions.addresses import (
    AddressError,
    address_hash,
    mask_address,
    normalize_email,
    normalize_phone,
)
from pubwatch_shared.queue import NOTIFY_QUEUE

# The worker's cron that pages through due digests; arq registers cron jobs under their name,
# so enqueuing it by name runs the same code the minute tick runs.
ENQUEUE_DUE_DIGESTS_JOB = "enqueue_due_digests"


class ActionError(RuntimeError):
    """The action could not be done; the message says why, in words for an operator."""


def address_forms(address: str, default_region: str) -> set[str]:
    """Every stored form of the address the subscriber wrote to us."""
    text = address.strip()
    forms = {text, text.lower()}
    with contextlib.suppress(AddressError):
        if "@" in text:
            forms.add(normalize_email(text, check_deliverability=False))
        else:
            forms.add(normalize_phone(text, default_region=default_region))
    return forms


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


async def export_subscriber(
    session: AsyncSession, address: str, *, secret_key: str, default_region: str
) -> dict[str, Any]:
    """All we hold about one address: subscriptions, consent log, deliveries (GDPR art. 15)."""
    forms = address_forms(address, default_region)
    subscriptions = list(
        await session.scalars(
            select(Subscription).where(Subscription.address.in_(forms)).order_by(Subscription.id)
        )
    )
    # Consent rows outlive a deletion with only the hash; find them by hash, not by row id.
    hashes = {s.address_hash for s in subscriptions} | {address_hash(secret_key, f) for f in forms}
    consent = list(
        await session.scalars(
            select(ConsentRecord)
            .where(ConsentRecord.address_hash.in_(hashes))
            .order_by(ConsentRecord.id)
        )
    )
    deliveries = (
        await session.execute(
            select(Delivery, StoredEvent.event_id, StoredEvent.type, StoredEvent.topic)
            .join(StoredEvent, StoredEvent.id == Delivery.event_id)
            .where(Delivery.subscription_id.in_([s.id for s in subscriptions]))
            .order_by(Delivery.id)
        )
    ).all()
    return {
        "address": address.strip(),
        "exported_at": datetime.now().astimezone().isoformat(),
        "subscriptions": [
            {
                "id": s.id,
                "topic": s.topic,
                "channel": s.channel,
                "address": s.address,
                "status": s.status,
                "frequency": s.frequency,
                "min_level": s.min_level,
                "timezone": s.timezone,
                "created_at": _iso(s.created_at),
                "confirmed_at": _iso(s.confirmed_at),
                "ended_at": _iso(s.ended_at),
                "end_reason": s.end_reason,
                "next_digest_at": _iso(s.next_digest_at),
            }
            for s in subscriptions
        ],
        "consent_log": [
            {
                "action": c.action,
                "channel": c.channel,
                "topic": c.topic,
                "wording_version": c.wording_version,
                "wording": c.wording,
                "source": c.source,
                "ip": c.ip,
                "at": _iso(c.created_at),
            }
            for c in consent
        ],
        "deliveries": [
            {
                "id": delivery.id,
                "subscription_id": delivery.subscription_id,
                "event_id": event_id,
                "event_type": event_type,
                "topic": topic,
                "channel": delivery.channel,
                "status": delivery.status,
                "created_at": _iso(delivery.created_at),
                "sent_at": _iso(delivery.sent_at),
                "attempts": delivery.attempts,
                "last_error": delivery.last_error,
            }
            for delivery, event_id, event_type, topic in deliveries
        ],
    }


async def resend(session: AsyncSession, queue: ArqRedis, delivery_id: int) -> str:
    """Put a failed delivery back in the queue and enqueue a send job for its subscriber."""
    row = (
        await session.execute(
            select(Delivery, Subscription.status, Subscription.address)
            .join(Subscription, Subscription.id == Delivery.subscription_id)
            .where(Delivery.id == delivery_id)
        )
    ).first()
    if row is None:
        raise ActionError(f"there is no delivery {delivery_id}")
    delivery, subscription_status, address = row
    if delivery.status != DeliveryStatus.FAILED.value:
        raise ActionError(
            f"delivery {delivery_id} is {delivery.status}, not failed: only failed ones are re-sent"
        )
    if subscription_status != SubscriptionStatus.CONFIRMED.value:
        raise ActionError(
            f"the subscription of delivery {delivery_id} is {subscription_status} "
            f"({mask_address(address)}): it would fail again; the subscriber must subscribe anew"
        )
    await session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.status == DeliveryStatus.FAILED.value)
        # Attempts restart at zero: the earlier ones count against the old failure.
        .values(status=DeliveryStatus.QUEUED.value, attempts=0, claimed_at=None, not_before=None)
        .execution_options(synchronize_session=False)
    )
    await session.commit()
    job = await queue.enqueue_job(
        SEND_TO_SUBSCRIPTIONS_JOB,
        [delivery.subscription_id],
        _job_id=f"resend:{delivery_id}:{time.time_ns()}",
        _queue_name=NOTIFY_QUEUE,
    )
    if job is None:
        # The delivery is queued either way; the sweeper picks it up within minutes.
        return f"delivery {delivery_id} queued again; the sweeper will send it"
    return f"delivery {delivery_id} queued again; send job {job.job_id} enqueued"


async def run_digests(session: AsyncSession, queue: ArqRedis, *, all_now: bool) -> str:
    """Enqueue the digest pass now; ``all_now`` first makes every digest subscriber due."""
    made_due = 0
    if all_now:
        result = await session.execute(
            update(Subscription)
            .where(
                Subscription.status == SubscriptionStatus.CONFIRMED.value,
                Subscription.frequency.in_((Frequency.DAILY.value, Frequency.WEEKLY.value)),
            )
            .values(next_digest_at=datetime.now().astimezone())
            .execution_options(synchronize_session=False)
        )
        await session.commit()
        made_due = int(getattr(result, "rowcount", 0) or 0)
    job = await queue.enqueue_job(
        ENQUEUE_DUE_DIGESTS_JOB, _job_id=f"run-digests:{time.time_ns()}", _queue_name=NOTIFY_QUEUE
    )
    if job is None:
        raise ActionError("the digest job could not be enqueued (a job with its id exists)")
    prefix = f"{made_due} digest subscriptions made due now; " if all_now else ""
    return f"{prefix}digest job {job.job_id} enqueued; a notify worker will run it"
