"""The confirmation message of double opt-in: an arq job, and how the API enqueues it.

``send_confirmation`` runs in the notify worker, which registers it. It finds what it needs
in ``ctx``: either the delivery runtime under ``ctx["pubwatch"]`` (``.settings``,
``.sessions``, ``.channels``) or the plain keys ``settings``, ``sessionmaker`` and
``channels``; and arq's own ``redis``. ``channels.email`` / ``channels.sms`` may be channel
pools (``lease()``) or channels used as ``async with``.

At most one confirmation per address per ``confirmation_interval_s``, however often someone
signs up (nobody can use PubWatch to mail-bomb a stranger): the subscription's
``confirmation_sent_at`` covers repeats for one topic, and a Redis key per address hash
covers sign-ups for several topics; a job that finds the key taken waits for it to expire.
Jobs may run more than once (arq is at-least-once), so every step is checked again here.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

from arq import ArqRedis
from arq.worker import Retry
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from pubwatch_notify.channels.base import (
    OutgoingEmail,
    OutgoingSms,
    PermanentOutcome,
    PermanentSendError,
    TransientSendError,
)
from pubwatch_notify.links import Links
from pubwatch_notify.settings import NotifySettings
from pubwatch_notify.store.models import Channel, Subscription, SubscriptionStatus, utcnow
from pubwatch_notify.subscriptions.rendering import message_templates
from pubwatch_notify.tokens import MAX_AGE_S, Purpose, TokenSigner
from pubwatch_shared.queue import NOTIFY_QUEUE
from pubwatch_shared.topics import TopicsFileError, load_topics

log = logging.getLogger("pubwatch.notify.confirmation")

SEND_CONFIRMATION_JOB = "send_confirmation"
THROTTLE_KEY_PREFIX = "pubwatch:confirmation-throttle:"
TRANSIENT_RETRY_S = 60


def confirmation_job_id(subscription_id: int, token_version: int, now: datetime) -> str:
    """Deterministic per subscription, version and hour: repeats within the hour enqueue
    nothing; a sign-up an hour later may enqueue again (and the job still checks)."""
    hour = int(now.timestamp() // 3600)
    return f"confirm:{subscription_id}:{token_version}:{hour}"


async def enqueue_confirmation(pool: ArqRedis, subscription_id: int, token_version: int) -> bool:
    """Queue the confirmation job; False when an identical one is already queued."""
    job = await pool.enqueue_job(
        SEND_CONFIRMATION_JOB,
        subscription_id,
        _job_id=confirmation_job_id(subscription_id, token_version, utcnow()),
        _queue_name=NOTIFY_QUEUE,
    )
    return job is not None


def _topic_name(settings: NotifySettings, slug: str) -> str:
    try:
        topics = load_topics(settings.topics_file)
    except TopicsFileError:
        return slug
    return next((topic.name for topic in topics if topic.slug == slug), slug)


def build_email(subscription: Subscription, topic_name: str, links: Links) -> OutgoingEmail:
    templates = message_templates()
    context = {
        "topic_name": topic_name,
        "confirm_url": links.confirm(subscription.id, subscription.token_version),
        "valid_days": MAX_AGE_S[Purpose.CONFIRM] // 86400,
    }
    return OutgoingEmail(
        to=subscription.address,
        subject=f"Confirm your PubWatch alerts on {topic_name}",
        text=templates.get_template("confirmation/email.txt").render(context),
        html=templates.get_template("confirmation/email.html").render(context),
        headers={"Auto-Submitted": "auto-generated"},
    )


def build_sms(subscription: Subscription, topic_name: str, program_name: str) -> OutgoingSms:
    body = (
        message_templates()
        .get_template("confirmation/sms.txt")
        .render(topic_name=topic_name, program_name=program_name)
    )
    return OutgoingSms(to=subscription.address, body=" ".join(body.split()))


async def _claim_address(
    redis: ArqRedis, subscription: Subscription, interval_s: int
) -> float | None:
    """Take the per-address slot. None when taken; otherwise seconds until it frees."""
    key = THROTTLE_KEY_PREFIX + subscription.address_hash
    if await redis.set(key, str(subscription.id), ex=interval_s, nx=True):
        return None
    ttl_s = await redis.ttl(key)
    return float(max(ttl_s, 1))


async def _release_address(redis: ArqRedis, subscription: Subscription) -> None:
    key = THROTTLE_KEY_PREFIX + subscription.address_hash
    if await redis.get(key) == str(subscription.id).encode():
        await redis.delete(key)


async def send_confirmation(ctx: dict[str, Any], subscription_id: int) -> str:
    """Send the confirmation email or text for one pending subscription. Returns what it did."""
    settings, sessionmaker, channels = _job_resources(ctx)
    redis: ArqRedis = ctx["redis"]
    async with sessionmaker() as session:
        subscription = await session.get(Subscription, subscription_id)
        if subscription is None or subscription.status != SubscriptionStatus.PENDING:
            return "not pending"
        interval = timedelta(seconds=settings.confirmation_interval_s)
        sent_at = subscription.confirmation_sent_at
        if sent_at is not None and utcnow() - sent_at < interval:
            return "sent recently"
        wait_s = await _claim_address(redis, subscription, settings.confirmation_interval_s)
        if wait_s is not None:
            # Another confirmation went to this address within the interval (or this one is
            # in flight in another job): try again once the slot frees.
            raise Retry(defer=wait_s)
        topic_name = _topic_name(settings, subscription.topic)
        links = Links(settings.public_url, TokenSigner(settings.secret_key))
        try:
            provider_id = await _send(channels, subscription, topic_name, links, settings)
        except TransientSendError as exc:
            await _release_address(redis, subscription)
            log.warning(
                "confirmation send failed, will retry",
                extra={"subscription_id": subscription.id, "reason": exc.reason},
            )
            raise Retry(defer=exc.retry_after_s or TRANSIENT_RETRY_S) from None
        except PermanentSendError as exc:
            if exc.outcome != PermanentOutcome.REJECTED:
                subscription.status = exc.outcome.value
                subscription.ended_at = utcnow()
                subscription.end_reason = exc.reason[:200]
            subscription.confirmation_sent_at = utcnow()
            await session.commit()
            log.warning(
                "confirmation refused by the provider",
                extra={"subscription_id": subscription.id, "outcome": exc.outcome.value},
            )
            return f"refused: {exc.outcome.value}"
        subscription.confirmation_sent_at = utcnow()
        await session.commit()
    log.info(
        "confirmation sent",
        extra={"subscription_id": subscription_id, "provider_id": provider_id},
    )
    return "sent"


def _job_resources(
    ctx: dict[str, Any],
) -> tuple[NotifySettings, async_sessionmaker[AsyncSession], Any]:
    runtime = ctx.get("pubwatch")
    if runtime is not None:
        return runtime.settings, runtime.sessions, runtime.channels
    return ctx["settings"], ctx["sessionmaker"], ctx["channels"]


@contextlib.asynccontextmanager
async def _opened(channel_or_pool: Any) -> AsyncIterator[Any]:
    """A channel ready to send, from a pool (leased) or a bare channel (opened and closed)."""
    lease = getattr(channel_or_pool, "lease", None)
    if lease is not None:
        async with lease() as channel:
            yield channel
    else:
        async with channel_or_pool as channel:
            yield channel


async def _send(
    channels: Any,
    subscription: Subscription,
    topic_name: str,
    links: Links,
    settings: NotifySettings,
) -> str:
    if subscription.channel == Channel.SMS:
        message: OutgoingEmail | OutgoingSms = build_sms(
            subscription, topic_name, settings.program_name
        )
        opened = _opened(channels.sms)
    else:
        message = build_email(subscription, topic_name, links)
        opened = _opened(channels.email)
    async with opened as channel:
        sent = await channel.send(message)
    provider_id: str = sent.provider_id
    return provider_id
