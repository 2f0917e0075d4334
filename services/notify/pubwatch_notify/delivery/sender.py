"""Sending claimed deliveries: one message per subscriber, each recorded right after the
provider's answer.

A batch goes out over one leased connection per channel. Per message:

- the subscription left (unsubscribed, bounced ...): its deliveries are ``skipped``;
- SMS in the subscriber's quiet hours or over the weekly cap: held (``not_before``) and a
  deferred job scheduled; held items join the next message;
- accepted: ``sent`` with the provider id, committed before the next message is sent;
- transient failure: given back for a later try (``failed`` once tries run out); after a
  run of them the server is clearly in trouble, so the rest of the batch is given back too
  and the job backs off;
- permanent failure: ``failed`` with the reason, and the subscription marked bounced,
  invalid or unsubscribed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import groupby

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from pubwatch_notify.channels.base import (
    EmailChannel,
    OutgoingEmail,
    OutgoingSms,
    PermanentOutcome,
    PermanentSendError,
    SmsChannel,
    TransientSendError,
)
from pubwatch_notify.delivery import claims
from pubwatch_notify.delivery.claims import ClaimedDelivery
from pubwatch_notify.delivery.compose import EventCache, compose
from pubwatch_notify.delivery.job_names import SEND_TO_SUBSCRIPTIONS_JOB, held_job_id
from pubwatch_notify.delivery.policy import quiet_hours_end, weekly_cap_release
from pubwatch_notify.delivery.runtime import Runtime
from pubwatch_notify.messages.content import MessageContent
from pubwatch_notify.messages.email import (
    EmailRecipient,
    RenderedBodies,
    render_bodies,
    render_email,
)
from pubwatch_notify.messages.sms import render_sms
from pubwatch_notify.store.models import (
    Channel,
    DeliveryStatus,
    Subscription,
    SubscriptionStatus,
)
from pubwatch_notify.subscriptions.schedule import next_digest_at
from pubwatch_shared.queue import NOTIFY_QUEUE

log = logging.getLogger(__name__)

# Distinct contents a batch keeps rendered (an event's page shares a handful at most).
RENDER_CACHE_SIZE = 64

# The share of the send-job timeout a batch may spend sending before it hands over.
TIME_BUDGET_SHARE = 0.6

_OUTCOME_STATUS = {
    PermanentOutcome.BOUNCED: SubscriptionStatus.BOUNCED,
    PermanentOutcome.INVALID: SubscriptionStatus.INVALID,
    PermanentOutcome.UNSUBSCRIBED: SubscriptionStatus.UNSUBSCRIBED,
}


# (topic, channel, digest, sorted (event, item positions)): what a message's content is made of.
ContentKey = tuple[str, str, str | None, tuple[tuple[int, tuple[int, ...]], ...]]


@dataclass(frozen=True)
class Recipient:
    id: int
    topic: str
    channel: str
    address: str
    status: str
    frequency: str
    timezone: str
    token_version: int


@dataclass
class Group:
    """The deliveries that go out together as one message to one subscriber."""

    recipient: Recipient
    deliveries: list[ClaimedDelivery]

    @property
    def ids(self) -> list[int]:
        return [delivery.id for delivery in self.deliveries]

    @property
    def max_attempts_so_far(self) -> int:
        return max(delivery.attempts for delivery in self.deliveries)


@dataclass
class BatchResult:
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    held: int = 0
    retry_later: int = 0  # given back after a transient failure: the job should retry
    # Given back untried because the job was near its time limit: continue at once.
    continue_now: int = 0
    last_error: str | None = None
    retry_after_s: float | None = None

    def add(self, other: BatchResult) -> None:
        self.sent += other.sent
        self.failed += other.failed
        self.skipped += other.skipped
        self.held += other.held
        self.retry_later += other.retry_later
        self.continue_now += other.continue_now
        self.last_error = other.last_error or self.last_error
        self.retry_after_s = other.retry_after_s or self.retry_after_s


@dataclass
class SendOptions:
    """How a batch treats its deliveries: immediate sends or a digest run."""

    digest: bool = False
    final_try: bool = False
    release_status: DeliveryStatus = DeliveryStatus.QUEUED


async def load_recipients(
    session: AsyncSession, subscription_ids: Sequence[int]
) -> dict[int, Recipient]:
    rows = await session.execute(
        select(
            Subscription.id,
            Subscription.topic,
            Subscription.channel,
            Subscription.address,
            Subscription.status,
            Subscription.frequency,
            Subscription.timezone,
            Subscription.token_version,
        ).where(Subscription.id.in_(sorted(set(subscription_ids))))
    )
    return {row[0]: Recipient(*row) for row in rows}


def group_by_subscription(
    deliveries: list[ClaimedDelivery], recipients: dict[int, Recipient]
) -> tuple[list[Group], list[int]]:
    """Groups to send, and delivery ids whose subscription no longer exists."""
    groups: list[Group] = []
    orphans: list[int] = []
    ordered = sorted(deliveries, key=lambda d: (d.subscription_id, d.id))
    for sub_id, members in groupby(ordered, key=lambda d: d.subscription_id):
        batch = list(members)
        recipient = recipients.get(sub_id)
        if recipient is None:
            orphans.extend(d.id for d in batch)
        else:
            groups.append(Group(recipient, batch))
    return groups, orphans


class BatchSender:
    def __init__(self, runtime: Runtime, options: SendOptions) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.options = options
        self.events = EventCache()
        # Content and rendered bodies per distinct (topic, items) within this batch: the
        # subscribers of one event mostly get the same message but for their own links.
        self._contents: dict[ContentKey, tuple[MessageContent, RenderedBodies | None]] = {}

    async def send(self, groups: list[Group]) -> BatchResult:
        result = BatchResult()
        if not groups:
            return result
        async with self.runtime.sessions() as session:
            await self.events.load(session, {d.event_pk for g in groups for d in g.deliveries})
        emails = [g for g in groups if g.recipient.channel == Channel.EMAIL.value]
        texts = [g for g in groups if g.recipient.channel == Channel.SMS.value]
        if emails:
            async with self.runtime.channels.email.lease() as email_channel:
                result.add(await self._send_all(emails, email_channel, None))
        if texts:
            async with self.runtime.channels.sms.lease() as sms_channel:
                result.add(await self._send_all(texts, None, sms_channel))
        return result

    async def _send_all(
        self,
        groups: list[Group],
        email_channel: EmailChannel | None,
        sms_channel: SmsChannel | None,
    ) -> BatchResult:
        result = BatchResult()
        waiting = list(groups)
        pool = self.runtime.channels.email if email_channel else self.runtime.channels.sms
        consecutive_transient = 0
        # Stop well before arq's job timeout would cancel us mid-message: the rest is given
        # back and the job continues as a fresh try.
        stop_at = time.monotonic() + TIME_BUDGET_SHARE * self.settings.send_job_timeout_s
        try:
            while waiting:
                if time.monotonic() > stop_at:
                    await self._give_back(waiting, result, None)
                    result.continue_now += sum(len(g.ids) for g in waiting)
                    waiting = []
                    break
                group = waiting[0]
                now = self.runtime.clock()
                message = await self._prepare(group, now, result)
                if message is None:
                    waiting.pop(0)
                    continue
                await self.runtime.limiter.wait_for_slot(pool.rate_key, pool.max_per_second)
                try:
                    if isinstance(message, OutgoingEmail):
                        assert email_channel is not None
                        sent = await email_channel.send(message)
                    else:
                        assert sms_channel is not None
                        sent = await sms_channel.send(message)
                except TransientSendError as exc:
                    waiting.pop(0)
                    consecutive_transient += 1
                    await self._transient(group, exc, result)
                    if consecutive_transient >= self.settings.transient_failures_before_backoff:
                        await self._give_back(waiting, result, exc.reason)
                        waiting = []
                    continue
                except PermanentSendError as exc:
                    waiting.pop(0)
                    await self._permanent(group, exc, result)
                    continue
                waiting.pop(0)
                consecutive_transient = 0
                await self._sent(group, sent.provider_id, message_key(group), result)
        except asyncio.CancelledError:
            # Shutting down: hand back what was not tried yet so the re-queued job (or
            # another worker) sends it without waiting for the claims to go stale. The
            # message being sent at this moment, if any, stays claimed: it may be in flight.
            untried = waiting[1:] if waiting else []
            give_back = self._give_back(
                untried, BatchResult(), "worker shut down", not_before=self.runtime.clock()
            )
            await asyncio.shield(give_back)
            raise
        return result

    async def _prepare(
        self, group: Group, now: datetime, result: BatchResult
    ) -> OutgoingEmail | OutgoingSms | None:
        """The message to send, or None when the group was skipped or held instead."""
        recipient = group.recipient
        if recipient.status != SubscriptionStatus.CONFIRMED.value:
            async with self.runtime.sessions.begin() as session:
                await claims.mark_skipped(session, group.ids, f"subscription {recipient.status}")
            result.skipped += len(group.ids)
            return None
        content, bodies = self._content(group)
        if content.is_empty:
            async with self.runtime.sessions.begin() as session:
                await claims.mark_skipped(session, group.ids, "no items left to send")
                await self._after_group(session, group, now)
            result.skipped += len(group.ids)
            return None
        if recipient.channel == Channel.SMS.value:
            hold_until = await self._sms_hold_until(recipient, now)
            if hold_until is not None:
                await self._hold(group, hold_until, now)
                result.held += len(group.ids)
                return None
            return OutgoingSms(
                to=recipient.address,
                body=render_sms(content, self._sms_link(content)),
                status_callback=f"{self.settings.public_url}/webhooks/twilio/status",
            )
        return render_email(
            content,
            EmailRecipient(recipient.id, recipient.token_version, recipient.address),
            links=self.runtime.links,
            email_from=self.settings.email_from,
            message_key=message_key(group),
            now=now,
            bodies=bodies,
        )

    def _content(self, group: Group) -> tuple[MessageContent, RenderedBodies | None]:
        recipient = group.recipient
        digest = recipient.frequency if self.options.digest else None
        key: ContentKey = (
            recipient.topic,
            recipient.channel,
            digest,
            tuple(sorted((d.event_pk, d.item_positions) for d in group.deliveries)),
        )
        cached = self._contents.get(key)
        if cached is None:
            content = compose(
                group.deliveries,
                self.events,
                recipient.topic,
                self.runtime.topic_name(recipient.topic),
                digest=digest,
            )
            bodies = None
            if recipient.channel == Channel.EMAIL.value and not content.is_empty:
                bodies = render_bodies(content, self.runtime.links)
            if len(self._contents) >= RENDER_CACHE_SIZE:
                self._contents.clear()
            cached = self._contents[key] = (content, bodies)
        return cached

    def _sms_link(self, content: MessageContent) -> str:
        event_pks = set(content.event_pks)
        if len(event_pks) == 1:
            return self.runtime.links.event(event_pks.pop())
        return self.runtime.links.topic(content.topic_slug)

    async def _sms_hold_until(self, recipient: Recipient, now: datetime) -> datetime | None:
        settings = self.settings
        quiet_end = quiet_hours_end(
            now, recipient.timezone, settings.sms_quiet_start_hour, settings.sms_quiet_end_hour
        )
        if quiet_end is not None:
            return quiet_end
        async with self.runtime.sessions() as session:
            return await weekly_cap_release(session, recipient.id, now, settings.sms_weekly_cap)

    async def _hold(self, group: Group, until: datetime, now: datetime) -> None:
        # Held items wait as queued deliveries: whichever message goes out next for this
        # subscriber (the deferred job's, or a later event's) carries them.
        async with self.runtime.sessions.begin() as session:
            await claims.release(session, group.ids, DeliveryStatus.QUEUED, not_before=until)
            await self._after_group(session, group, now)
        await self.runtime.redis.enqueue_job(
            SEND_TO_SUBSCRIPTIONS_JOB,
            [group.recipient.id],
            _job_id=held_job_id(group.recipient.id, until),
            _defer_until=until,
            _queue_name=NOTIFY_QUEUE,
        )
        log.info(
            "sms held",
            extra={"subscription_id": group.recipient.id, "until": until.isoformat()},
        )

    async def _sent(self, group: Group, provider_id: str, key: str, result: BatchResult) -> None:
        now = self.runtime.clock()
        async with self.runtime.sessions.begin() as session:
            await claims.mark_sent(session, group.ids, provider_id, key, now)
            await self._after_group(session, group, now)
        result.sent += len(group.ids)

    async def _transient(self, group: Group, exc: TransientSendError, result: BatchResult) -> None:
        tries = group.max_attempts_so_far + 1
        result.last_error = exc.reason
        result.retry_after_s = exc.retry_after_s or result.retry_after_s
        async with self.runtime.sessions.begin() as session:
            if self.options.final_try or tries >= self.settings.send_max_tries:
                reason = f"gave up after {tries} tries: {exc.reason}"
                await claims.mark_failed(session, group.ids, reason)
                await self._after_group(session, group, self.runtime.clock())
                result.failed += len(group.ids)
                log.warning(
                    "delivery failed",
                    extra={"subscription_id": group.recipient.id, "reason": reason},
                )
            else:
                await claims.release(
                    session, group.ids, self.options.release_status, exc.reason, attempted=True
                )
                result.retry_later += len(group.ids)

    async def _permanent(self, group: Group, exc: PermanentSendError, result: BatchResult) -> None:
        now = self.runtime.clock()
        async with self.runtime.sessions.begin() as session:
            await claims.mark_failed(session, group.ids, exc.reason)
            await self._after_group(session, group, now)
            new_status = _OUTCOME_STATUS.get(exc.outcome)
            if new_status is not None:
                await session.execute(
                    update(Subscription)
                    .where(
                        Subscription.id == group.recipient.id,
                        Subscription.status == SubscriptionStatus.CONFIRMED.value,
                    )
                    .values(status=new_status.value, ended_at=now, end_reason=exc.reason[:200])
                )
        result.failed += len(group.ids)
        log.warning(
            "delivery failed permanently",
            extra={
                "subscription_id": group.recipient.id,
                "reason": exc.reason,
                "outcome": exc.outcome.value,
            },
        )

    async def _give_back(
        self,
        groups: list[Group],
        result: BatchResult,
        reason: str | None,
        not_before: datetime | None = None,
    ) -> None:
        """Release untried deliveries. ``not_before`` marks them due for the sweeper, for
        when no retry of this job is coming."""
        ids = [delivery_id for group in groups for delivery_id in group.ids]
        if not ids:
            return
        async with self.runtime.sessions.begin() as session:
            await claims.release(
                session, ids, self.options.release_status, reason, not_before=not_before
            )
        result.retry_later += len(ids)

    async def _after_group(self, session: AsyncSession, group: Group, now: datetime) -> None:
        """In the transaction that settles a digest's deliveries, move its schedule on."""
        if self.options.digest:
            await advance_digest(session, group.recipient, now)


async def advance_digest(session: AsyncSession, recipient: Recipient, now: datetime) -> None:
    await session.execute(
        update(Subscription)
        .where(Subscription.id == recipient.id)
        .values(
            next_digest_at=next_digest_at(recipient.frequency, recipient.timezone, now),
            last_digest_at=now,
        )
    )


def message_key(group: Group) -> str:
    """Stable for the same deliveries: a resend after a crash carries the same Message-ID."""
    return f"pubwatch.{group.recipient.id}.{min(group.ids)}"


def backoff_s(job_try: int, base_s: float, max_s: float, jitter: float) -> float:
    """Exponential backoff with jitter (``jitter`` in [0, 1) scales up to +50%)."""
    delay: float = min(max_s, base_s * 2 ** max(job_try - 1, 0))
    return delay * (1 + 0.5 * jitter)


def stale_before(now: datetime, job_timeout_s: float) -> datetime:
    return now - timedelta(seconds=job_timeout_s)
