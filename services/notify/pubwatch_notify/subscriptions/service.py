"""Subscription state changes, each with its consent-log entry, in one transaction.

Functions here commit their own transaction (callers hand in a fresh session) so that a
state change and its consent record are stored together or not at all.

A channel switch (the preferences page) never moves a subscription: consent is per channel
and address, so it makes a pending subscription on the new channel that names the one it
replaces, and only confirming the new one (by link or by YES) ends the old one.

Used by the web routes and by the Twilio webhooks (``confirm_by_sms_reply``,
``unsubscribe_by_sms_reply``, ``resubscribe_by_sms_reply``), and by the admin command that
honours deletion requests (``delete_subscriber_data``).
"""

from __future__ import annotations

import contextlib
import enum
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from pubwatch_notify.store.models import (
    Channel,
    ConsentRecord,
    Frequency,
    Subscription,
    SubscriptionStatus,
    utcnow,
)
from pubwatch_notify.subscriptions.addresses import AddressError, normalize_email, normalize_phone
from pubwatch_notify.subscriptions.form import SubscribeRequest
from pubwatch_notify.subscriptions.schedule import next_digest_at
from pubwatch_notify.subscriptions.wording import (
    EMAIL_LINK_WORDING,
    SMS_YES_REPLY_WORDING,
    Wording,
)
from pubwatch_notify.tokens import Purpose, TokenError, TokenSigner
from pubwatch_shared.events import EvidenceLevel

ACTIVE = (SubscriptionStatus.PENDING, SubscriptionStatus.CONFIRMED)
# Why a subscription ended, when the subscriber ended it.
END_BY_SMS_STOP = "sms-stop"
END_BY_REQUEST = "unsubscribed"
END_BY_SWITCH = "switched channel"
SWITCH_SOURCE = "preferences"


class ConsentAction(enum.StrEnum):
    SUBSCRIBE = "subscribe"
    CONFIRM = "confirm"
    UNSUBSCRIBE = "unsubscribe"
    RESUBSCRIBE = "resubscribe"
    DELETE = "delete"


class SubscribeOutcome(enum.StrEnum):
    CREATED = "created"
    STILL_PENDING = "still-pending"  # signed up again before confirming
    RESTARTED = "restarted"  # had ended (unsubscribed, bounced ...): pending again
    ALREADY_CONFIRMED = "already-confirmed"


@dataclass(frozen=True)
class SubscribeResult:
    subscription_id: int
    token_version: int
    outcome: SubscribeOutcome

    @property
    def needs_confirmation(self) -> bool:
        return self.outcome != SubscribeOutcome.ALREADY_CONFIRMED


def _consent(
    subscription: Subscription,
    action: ConsentAction,
    *,
    wording_version: str,
    wording: str,
    source: str,
    ip: str | None,
) -> ConsentRecord:
    return ConsentRecord(
        subscription_id=subscription.id,
        address_hash=subscription.address_hash,
        action=action,
        channel=subscription.channel,
        topic=subscription.topic,
        wording_version=wording_version,
        wording=wording,
        source=source,
        ip=ip,
        created_at=utcnow(),
    )


async def _signed_up_wording_version(session: AsyncSession, subscription_id: int) -> str:
    """The wording version the subscriber last signed up under: later steps (confirm,
    unsubscribe) refer to that agreement."""
    version = await session.scalar(
        select(ConsentRecord.wording_version)
        .where(
            ConsentRecord.subscription_id == subscription_id,
            ConsentRecord.action.in_([ConsentAction.SUBSCRIBE, ConsentAction.RESUBSCRIBE]),
        )
        .order_by(ConsentRecord.id.desc())
        .limit(1)
    )
    return version or "unknown"


async def _find(
    session: AsyncSession, topic: str, channel: str, hashed: str
) -> Subscription | None:
    found: Subscription | None = await session.scalar(
        select(Subscription).where(
            Subscription.topic == topic,
            Subscription.channel == channel,
            Subscription.address_hash == hashed,
        )
    )
    return found


async def subscribe(
    session: AsyncSession,
    request: SubscribeRequest,
    *,
    hashed_address: str,
    wording: Wording,
    ip: str | None,
    replaces_id: int | None = None,
) -> SubscribeResult:
    """Record a sign-up: a new pending subscription, or the existing one brought up to date.

    A confirmed subscription is left exactly as it was: a sign-up form must not let anyone
    change someone else's settings, and the page says the same thing whatever happened, so
    it reveals nothing about who is subscribed.

    ``replaces_id`` (a channel switch) names the subscription that ends once this one is
    confirmed. A plain sign-up leaves a pending switch in place, and starts an ended
    subscription's new life without one.
    """
    existing = await _find(session, request.topic, request.channel, hashed_address)
    if existing is None:
        subscription = Subscription(
            topic=request.topic,
            channel=request.channel,
            address=request.address,
            address_hash=hashed_address,
            status=SubscriptionStatus.PENDING,
            frequency=request.frequency,
            min_level=request.min_level,
            timezone=request.timezone,
            token_version=1,
            created_at=utcnow(),
            replaces_subscription_id=replaces_id,
        )
        try:
            async with session.begin_nested():
                session.add(subscription)
        except IntegrityError:
            # Another request for the same address and topic won the race: use its row.
            existing = await _find(session, request.topic, request.channel, hashed_address)
            if existing is None:
                raise
        else:
            outcome = SubscribeOutcome.CREATED
    if existing is not None:
        subscription = existing
        if subscription.status == SubscriptionStatus.CONFIRMED:
            unchanged = SubscribeResult(
                subscription.id, subscription.token_version, SubscribeOutcome.ALREADY_CONFIRMED
            )
            await session.rollback()
            return unchanged
        if subscription.status == SubscriptionStatus.PENDING:
            outcome = SubscribeOutcome.STILL_PENDING
        else:
            outcome = SubscribeOutcome.RESTARTED
            # Links sent during the subscription's earlier life must not act on this one.
            subscription.token_version += 1
            subscription.status = SubscriptionStatus.PENDING
            subscription.confirmed_at = None
            subscription.ended_at = None
            subscription.end_reason = None
            subscription.replaces_subscription_id = replaces_id
        if replaces_id is not None:
            subscription.replaces_subscription_id = replaces_id
        subscription.address = request.address
        subscription.frequency = request.frequency
        subscription.min_level = request.min_level
        subscription.timezone = request.timezone
    await session.flush()
    session.add(
        _consent(
            subscription,
            ConsentAction.SUBSCRIBE,
            wording_version=wording.version,
            wording=wording.text,
            source=request.source,
            ip=ip,
        )
    )
    result = SubscribeResult(subscription.id, subscription.token_version, outcome)
    await session.commit()
    return result


def other_channel(channel: str) -> Channel:
    """The channel a subscriber on ``channel`` can switch to."""
    return Channel.SMS if channel == Channel.EMAIL else Channel.EMAIL


async def request_channel_switch(
    session: AsyncSession,
    current: Subscription,
    *,
    address: str,
    hashed_address: str,
    wording: Wording,
    ip: str | None,
) -> SubscribeResult:
    """Ask to move ``current`` to the other channel, at ``address`` (normalized).

    Creates (or reuses) a pending subscription on the new channel for the same topic with
    the same choices, naming ``current`` as the one it replaces, and logs the consent given
    on the preferences page. ``current`` is not touched: it ends when the new one is
    confirmed. A subscription already confirmed at the new address is left as it was, like
    a sign-up for it. Commits (or rolls back); callers re-read ``current`` afterwards.
    """
    if current.status not in ACTIVE:
        raise ValueError("only an active subscription can switch channel")
    request = SubscribeRequest(
        topic=current.topic,
        channel=other_channel(current.channel),
        address=address,
        frequency=Frequency(current.frequency),
        min_level=EvidenceLevel(current.min_level),
        timezone=current.timezone,
        source=SWITCH_SOURCE,
    )
    return await subscribe(
        session,
        request,
        hashed_address=hashed_address,
        wording=wording,
        ip=ip,
        replaces_id=current.id,
    )


async def _hand_over(
    session: AsyncSession, confirmed: Subscription, *, source: str, ip: str | None
) -> bool:
    """``confirmed`` was a channel switch and is now confirmed: end the subscription it
    replaces, with its consent-log entry, in the caller's transaction.

    Idempotent: an old subscription already ended (by this hand-over, an unsubscribe, a
    bounce) is left alone, and the conditional update ends it at most once even when two
    confirmations race. Returns whether it ended one.
    """
    old_id = confirmed.replaces_subscription_id
    if old_id is None or old_id == confirmed.id:
        return False
    old = await session.get(Subscription, old_id)
    if old is None or old.status not in ACTIVE or old.topic != confirmed.topic:
        return False
    version = await _signed_up_wording_version(session, old.id)
    ended = await session.execute(
        update(Subscription)
        .where(Subscription.id == old.id, Subscription.status.in_(ACTIVE))
        .values(
            status=SubscriptionStatus.UNSUBSCRIBED,
            ended_at=utcnow(),
            end_reason=END_BY_SWITCH,
            next_digest_at=None,
        )
        .execution_options(synchronize_session="fetch")
    )
    if not int(getattr(ended, "rowcount", 0) or 0):
        return False
    new_channel = "text messages" if confirmed.channel == Channel.SMS else "email"
    session.add(
        _consent(
            old,
            ConsentAction.UNSUBSCRIBE,
            wording_version=version,
            wording=f"Switched to {new_channel}: the new subscription was confirmed.",
            source=source,
            ip=ip,
        )
    )
    return True


async def subscription_for_token(
    session: AsyncSession, signer: TokenSigner, purpose: Purpose, token: str
) -> Subscription:
    """The subscription a link's token names, or :class:`TokenError`.

    Refused: a bad signature, another purpose's token, an expired one, a subscription that no
    longer exists, and a token from before the subscription's ``token_version`` changed.
    """
    claims = signer.read(purpose, token)
    subscription = await session.get(Subscription, claims.subscription_id)
    if subscription is None or subscription.token_version != claims.token_version:
        raise TokenError("this link is no longer valid")
    return subscription


def _mark_confirmed(subscription: Subscription) -> None:
    now = utcnow()
    subscription.status = SubscriptionStatus.CONFIRMED
    subscription.confirmed_at = now
    subscription.next_digest_at = next_digest_at(subscription.frequency, subscription.timezone, now)


async def confirm(session: AsyncSession, subscription: Subscription, *, ip: str | None) -> bool:
    """Confirm a pending subscription through its email link. False when it wasn't pending."""
    if subscription.status != SubscriptionStatus.PENDING:
        return False
    version = await _signed_up_wording_version(session, subscription.id)
    _mark_confirmed(subscription)
    session.add(
        _consent(
            subscription,
            ConsentAction.CONFIRM,
            wording_version=version,
            wording=EMAIL_LINK_WORDING,
            source="email-link",
            ip=ip,
        )
    )
    await _hand_over(session, subscription, source="email-link", ip=ip)
    await session.commit()
    return True


async def update_preferences(
    session: AsyncSession,
    subscription: Subscription,
    *,
    frequency: str,
    min_level: str,
    timezone: str,
) -> None:
    schedule_changed = (frequency, timezone) != (subscription.frequency, subscription.timezone)
    subscription.frequency = frequency
    subscription.min_level = min_level
    subscription.timezone = timezone
    if schedule_changed and subscription.status == SubscriptionStatus.CONFIRMED:
        subscription.next_digest_at = next_digest_at(frequency, timezone, utcnow())
    await session.commit()


def _end(subscription: Subscription, reason: str) -> None:
    subscription.status = SubscriptionStatus.UNSUBSCRIBED
    subscription.ended_at = utcnow()
    subscription.end_reason = reason
    subscription.next_digest_at = None


async def unsubscribe(
    session: AsyncSession,
    subscription: Subscription,
    *,
    every_topic: bool,
    source: str,
    ip: str | None,
) -> int:
    """End this subscription (or every active one for the same address). Returns how many
    ended; 0 when there was nothing left to end, which is still a success for the person."""
    if every_topic:
        query = select(Subscription).where(
            Subscription.address_hash == subscription.address_hash,
            Subscription.channel == subscription.channel,
            Subscription.status.in_(ACTIVE),
        )
        targets = list(await session.scalars(query))
    else:
        targets = [subscription] if subscription.status in ACTIVE else []
    wording = "Unsubscribed from every topic." if every_topic else "Unsubscribed from this topic."
    await _end_all(session, targets, source=source, ip=ip, reason=END_BY_REQUEST, wording=wording)
    await session.commit()
    return len(targets)


async def _end_all(
    session: AsyncSession,
    targets: list[Subscription],
    *,
    source: str,
    ip: str | None,
    reason: str,
    wording: str,
) -> None:
    for target in targets:
        version = await _signed_up_wording_version(session, target.id)
        _end(target, reason)
        session.add(
            _consent(
                target,
                ConsentAction.UNSUBSCRIBE,
                wording_version=version,
                wording=wording,
                source=source,
                ip=ip,
            )
        )


async def _sms_subscriptions(
    session: AsyncSession, number: str, statuses: tuple[str, ...]
) -> list[Subscription]:
    query = select(Subscription).where(
        Subscription.channel == Channel.SMS,
        Subscription.address == number.strip(),
        Subscription.status.in_(statuses),
    )
    return list(await session.scalars(query.order_by(Subscription.id)))


async def confirm_by_sms_reply(session: AsyncSession, number: str) -> bool:
    """The number (E.164, Twilio's ``From``) replied YES: confirm its pending subscriptions.

    Returns False when nothing was pending for that number. Commits.
    """
    pending = await _sms_subscriptions(session, number, (SubscriptionStatus.PENDING,))
    for subscription in pending:
        version = await _signed_up_wording_version(session, subscription.id)
        _mark_confirmed(subscription)
        session.add(
            _consent(
                subscription,
                ConsentAction.CONFIRM,
                wording_version=version,
                wording=SMS_YES_REPLY_WORDING,
                source="sms",
                ip=None,
            )
        )
        await _hand_over(session, subscription, source="sms", ip=None)
    await session.commit()
    return bool(pending)


async def unsubscribe_by_sms_reply(session: AsyncSession, number: str) -> int:
    """The number replied STOP (or another opt-out word): end all its SMS subscriptions.

    Returns how many ended. Commits.
    """
    active = await _sms_subscriptions(session, number, ACTIVE)
    await _end_all(
        session,
        active,
        source="sms",
        ip=None,
        reason=END_BY_SMS_STOP,
        wording="Replied STOP (or another opt-out word) by text.",
    )
    await session.commit()
    return len(active)


async def resubscribe_by_sms_reply(session: AsyncSession, number: str) -> int:
    """The number replied START/UNSTOP after a STOP: restore what that STOP ended.

    Subscriptions ended another way (the web page, a bounce) stay ended. Returns how many
    were restored. Commits.
    """
    stopped = [
        subscription
        for subscription in await _sms_subscriptions(
            session, number, (SubscriptionStatus.UNSUBSCRIBED,)
        )
        if subscription.end_reason == END_BY_SMS_STOP
    ]
    for subscription in stopped:
        version = await _signed_up_wording_version(session, subscription.id)
        subscription.ended_at = None
        subscription.end_reason = None
        _mark_confirmed(subscription)
        session.add(
            _consent(
                subscription,
                ConsentAction.RESUBSCRIBE,
                wording_version=version,
                wording="Replied START (or UNSTOP) by text after a STOP.",
                source="sms",
                ip=None,
            )
        )
    await session.commit()
    return len(stopped)


def _address_candidates(address: str, default_region: str) -> set[str]:
    """Every stored form the address the subscriber gave us may have."""
    text = address.strip()
    candidates = {text, text.lower()}
    if "@" in text:
        with contextlib.suppress(AddressError):
            candidates.add(normalize_email(text, check_deliverability=False))
    else:
        with contextlib.suppress(AddressError):
            candidates.add(normalize_phone(text, default_region=default_region))
    return candidates


async def delete_subscriber_data(
    session: AsyncSession, address: str, *, default_region: str = "US"
) -> int:
    """Honour a deletion request: delete every subscription (and its deliveries) for the
    address and strip the consent log down to the address hash, action and dates.

    Returns how many subscriptions were deleted. Commits.
    """
    candidates = _address_candidates(address, default_region)
    rows = list(
        await session.execute(
            select(Subscription.id, Subscription.address_hash, Subscription.channel).where(
                Subscription.address.in_(candidates)
            )
        )
    )
    if not rows:
        return 0
    hashes = {(row.address_hash, row.channel) for row in rows}
    # Core statements, so the database's ON DELETE rules (deliveries cascade, consent rows
    # lose their subscription id) do the work instead of the ORM loading each row.
    await session.execute(
        delete(Subscription)
        .where(Subscription.id.in_([row.id for row in rows]))
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        update(ConsentRecord)
        .where(ConsentRecord.address_hash.in_([hashed for hashed, _ in hashes]))
        .values(ip=None, topic="", subscription_id=None)
        .execution_options(synchronize_session=False)
    )
    for hashed, channel in sorted(hashes):
        session.add(
            ConsentRecord(
                subscription_id=None,
                address_hash=hashed,
                action=ConsentAction.DELETE,
                channel=channel,
                topic="",
                wording_version="",
                wording="Asked for their data to be deleted.",
                source="admin",
                ip=None,
                created_at=utcnow(),
            )
        )
    await session.commit()
    session.expunge_all()
    return len(rows)
