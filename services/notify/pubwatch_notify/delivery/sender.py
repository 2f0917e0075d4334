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
import enum
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import groupby
from typing import Any, TypeVar

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
from pubwatch_notify.channels.mime import WireTemplate
from pubwatch_notify.delivery import claims
from pubwatch_notify.delivery.claims import ClaimedDelivery
from pubwatch_notify.delivery.compose import EventCache, compose
from pubwatch_notify.delivery.job_names import SEND_TO_SUBSCRIPTIONS_JOB, held_job_id
from pubwatch_notify.delivery.policy import quiet_hours_end, weekly_cap_releases
from pubwatch_notify.delivery.runtime import Runtime
from pubwatch_notify.delivery.sent_records import SentRecord
from pubwatch_notify.messages.content import MessageContent
from pubwatch_notify.messages.email import (
    EmailRecipient,
    RenderedBodies,
    email_template,
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
# A content, and for email its rendered bodies and wire template, for SMS its text (the
# same for every subscriber getting this content): made once per batch.
_Prepared = tuple[MessageContent, RenderedBodies | None, WireTemplate | None, str | None]


class _Outcome(enum.Enum):
    SENT = "sent"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


# How long a cancelled job waits for its message in flight to be answered and recorded
# (beyond the channel's own timeouts this only bounds a hung server).
IN_FLIGHT_WAIT_S = 60.0

_T = TypeVar("_T")


async def uninterruptible(
    work: Coroutine[Any, Any, _T],
    on_cancelled: Callable[[_T], Awaitable[None]] | None = None,
) -> _T:
    """Run ``work`` to its end even when the caller is cancelled meanwhile.

    On cancellation ``work`` is given up to :data:`IN_FLIGHT_WAIT_S` to finish (its result
    is then handed to ``on_cancelled``, if given) and the cancellation goes on: a job
    cancelled at shutdown stops between messages, never between a message accepted and its
    ``sent`` record, nor between a claim committed and the job knowing what it claimed.
    """
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task}, timeout=IN_FLIGHT_WAIT_S)
        if task.done():
            if not task.cancelled() and task.exception() is not None:
                log.warning(
                    "work in flight at shutdown failed",
                    extra={"error": repr(task.exception())},
                )
            elif not task.cancelled() and on_cancelled is not None:
                await asyncio.shield(on_cancelled(task.result()))
        else:
            log.warning("work in flight at shutdown did not finish in time")
            task.add_done_callback(_consume_outcome)
        raise


def _consume_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


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
        self._contents: dict[ContentKey, _Prepared] = {}
        self._cap_releases: dict[int, datetime] = {}

    async def send(self, groups: list[Group]) -> BatchResult:
        result = BatchResult()
        if not groups:
            return result
        emails = [g for g in groups if g.recipient.channel == Channel.EMAIL.value]
        texts = [g for g in groups if g.recipient.channel == Channel.SMS.value]
        try:
            async with self.runtime.sessions() as session:
                await self.events.load(session, {d.event_pk for g in groups for d in g.deliveries})
                if texts:
                    # Who is at the weekly cap, for the whole batch in one query (not one per
                    # message): a batch holds one message per subscriber.
                    self._cap_releases = await weekly_cap_releases(
                        session,
                        [g.recipient.id for g in texts],
                        self.runtime.clock(),
                        self.settings.sms_weekly_cap,
                    )
        except asyncio.CancelledError:
            give_back = self._give_back(
                groups, BatchResult(), "worker shut down", not_before=self.runtime.clock()
            )
            await asyncio.shield(give_back)
            raise
        # Groups no ``_send_all`` has taken on yet: handed back here on cancellation.
        untouched = list(groups)
        try:
            if emails:
                async with self.runtime.channels.email.lease() as email_channel:
                    untouched = texts
                    result.add(await self._send_all(emails, email_channel, None))
            if texts:
                async with self.runtime.channels.sms.lease() as sms_channel:
                    untouched = []
                    result.add(await self._send_all(texts, None, sms_channel))
        except asyncio.CancelledError:
            give_back = self._give_back(
                untouched, BatchResult(), "worker shut down", not_before=self.runtime.clock()
            )
            await asyncio.shield(give_back)
            raise
        return result

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncSession]:
        """A transaction for one message's outcome, taken in the process's write turn."""
        async with self.runtime.write_turns.turn(), self.runtime.sessions.begin() as session:
            yield session

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
        # The group whose message may be on the wire (or whose outcome is being recorded):
        # never handed back, it may have been accepted.
        in_flight: Group | None = None
        try:
            while waiting:
                if time.monotonic() > stop_at:
                    await self._give_back(waiting, result, None)
                    result.continue_now += sum(len(g.ids) for g in waiting)
                    waiting = []
                    break
                group = waiting[0]
                now = self.runtime.clock()
                # Deciding skip/hold writes to the store: done whole, even on cancellation.
                message = await uninterruptible(self._prepare(group, now, result))
                if message is None:
                    waiting.pop(0)
                    continue
                await self.runtime.limiter.wait_for_slot(pool.rate_key, pool.max_per_second)
                # Send one message and record its outcome as one unit that a cancellation
                # (SIGTERM) does not cut in two: a message the server accepted is always
                # recorded ``sent``, so a shutdown never causes a second copy.
                in_flight = group
                outcome = await uninterruptible(
                    self._attempt(group, message, email_channel, sms_channel, result)
                )
                in_flight = None
                waiting.pop(0)
                if outcome is _Outcome.SENT:
                    consecutive_transient = 0
                elif outcome is _Outcome.TRANSIENT:
                    consecutive_transient += 1
                    if consecutive_transient >= self.settings.transient_failures_before_backoff:
                        await self._give_back(waiting, result, result.last_error)
                        waiting = []
        except asyncio.CancelledError:
            # Shutting down, between messages: hand back what was not tried yet so the
            # re-queued job (or another worker) sends it at once instead of waiting for the
            # claims to go stale. Only a message whose send outlived the in-flight wait stays
            # claimed: it may have been accepted.
            untried = [g for g in waiting if g is not in_flight]
            give_back = self._give_back(
                untried, BatchResult(), "worker shut down", not_before=self.runtime.clock()
            )
            await asyncio.shield(give_back)
            raise
        return result

    async def _attempt(
        self,
        group: Group,
        message: OutgoingEmail | OutgoingSms,
        email_channel: EmailChannel | None,
        sms_channel: SmsChannel | None,
        result: BatchResult,
    ) -> _Outcome:
        """Send one message and commit what became of it."""
        try:
            if isinstance(message, OutgoingEmail):
                assert email_channel is not None
                sent = await email_channel.send(message)
            else:
                assert sms_channel is not None
                sent = await sms_channel.send(message)
        except TransientSendError as exc:
            await self._transient(group, exc, result)
            return _Outcome.TRANSIENT
        except PermanentSendError as exc:
            await self._permanent(group, exc, result)
            return _Outcome.PERMANENT
        await self._sent(group, sent.provider_id, message_key(group), result)
        return _Outcome.SENT

    async def _prepare(
        self, group: Group, now: datetime, result: BatchResult
    ) -> OutgoingEmail | OutgoingSms | None:
        """The message to send, or None when the group was skipped or held instead."""
        recipient = group.recipient
        if recipient.status != SubscriptionStatus.CONFIRMED.value:
            async with self._writing() as session:
                await claims.mark_skipped(session, group.ids, f"subscription {recipient.status}")
            result.skipped += len(group.ids)
            return None
        content, bodies, template, sms_body = self._content(group)
        if content.is_empty:
            async with self._writing() as session:
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
                body=sms_body or render_sms(content, self._sms_link(content)),
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
            template=template,
        )

    def _content(self, group: Group) -> _Prepared:
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
            bodies, template, sms_body = None, None, None
            if recipient.channel == Channel.EMAIL.value and not content.is_empty:
                bodies = render_bodies(content, self.runtime.links)
                template = email_template(content, bodies, self.settings.email_from)
            if len(self._contents) >= RENDER_CACHE_SIZE:
                self._contents.clear()
            if recipient.channel == Channel.SMS.value and not content.is_empty:
                sms_body = render_sms(content, self._sms_link(content))
            cached = self._contents[key] = (content, bodies, template, sms_body)
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
        release = self._cap_releases.get(recipient.id)
        return release if release is not None and release > now else None

    async def _hold(self, group: Group, until: datetime, now: datetime) -> None:
        # Held items wait as queued deliveries: whichever message goes out next for this
        # subscriber (the deferred job's, or a later event's) carries them.
        async with self._writing() as session:
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
        recipient = group.recipient
        digest = None
        if self.options.digest:
            digest = (recipient.id, next_digest_at(recipient.frequency, recipient.timezone, now))
        # Committed (in a commit shared with the worker's other jobs) before this job sends
        # its next message.
        await self.runtime.sent_records.record(
            SentRecord(tuple(group.ids), provider_id, key, now, digest)
        )
        result.sent += len(group.ids)

    async def _transient(self, group: Group, exc: TransientSendError, result: BatchResult) -> None:
        tries = group.max_attempts_so_far + 1
        result.last_error = exc.reason
        result.retry_after_s = exc.retry_after_s or result.retry_after_s
        async with self._writing() as session:
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
        async with self._writing() as session:
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
                session,
                ids,
                self.options.release_status,
                reason,
                not_before=not_before,
                only_claimed=True,
            )
        result.retry_later += len(ids)

    async def _after_group(self, session: AsyncSession, group: Group, now: datetime) -> None:
        """In the transaction that settles a digest's deliveries, move its schedule on."""
        if self.options.digest:
            await advance_digest(session, group.recipient, now)


async def give_back_at_shutdown(
    runtime: Runtime,
    claimed: Sequence[ClaimedDelivery],
    status: DeliveryStatus = DeliveryStatus.QUEUED,
) -> None:
    """Hand back claimed deliveries a cancelled job will not send (those still ``sending``),
    due at once for whichever job or worker runs next."""
    ids = [delivery.id for delivery in claimed]
    if not ids:
        return
    async with runtime.sessions.begin() as session:
        await claims.release(
            session,
            ids,
            status,
            "worker shut down",
            not_before=runtime.clock(),
            only_claimed=True,
        )


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
