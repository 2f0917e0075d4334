"""Fan-out: from one stored event to one delivery row per matching subscription.

Subscriptions are walked in keyset pages (``id > :after ORDER BY id LIMIT n``), so memory
stays flat however many there are. Each page's deliveries are inserted with "on conflict do
nothing" on (subscription, event): running a page twice, e.g. after a crash, adds nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from pubwatch_notify.delivery.upsert import insert_or_ignore
from pubwatch_notify.store.models import (
    Delivery,
    DeliveryStatus,
    EventItemRow,
    Frequency,
    StoredEvent,
    Subscription,
    SubscriptionStatus,
)
from pubwatch_notify.subscriptions.schedule import next_digest_at
from pubwatch_shared.events import EventType, EvidenceLevel

# Events that follow up on an article already sent: they go to exactly the people who
# received it, whatever their threshold or frequency.
FOLLOW_UP_TYPES = frozenset({EventType.RETRACTED.value, EventType.CORRECTED.value})
# Events nobody is told about (the literature that existed when a topic was first polled).
SILENT_TYPES = frozenset({EventType.BASELINE.value})
_RECEIVED = (DeliveryStatus.SENT.value, DeliveryStatus.DELIVERED.value)


@dataclass(frozen=True)
class ItemFacts:
    position: int
    level: EvidenceLevel
    pmid: str | None


@dataclass(frozen=True)
class EventFacts:
    """What fan-out needs to know about a stored event."""

    pk: int
    type: str
    topic: str
    items: tuple[ItemFacts, ...]
    key: str = ""  # source and event id: unique across databases, unlike ``pk``

    @property
    def pmids(self) -> list[str]:
        return sorted({item.pmid for item in self.items if item.pmid})


@dataclass(frozen=True)
class FanoutPage:
    """One page of the walk: subscriptions in (after_id, last_id] were considered."""

    after_id: int
    last_id: int
    inserted: int
    immediate: int  # deliveries in this page a send job should pick up now
    immediate_ids: tuple[int, ...] = ()  # their subscription ids, ascending


async def load_event_facts(session: AsyncSession, event_pk: int) -> EventFacts:
    event = await session.get(StoredEvent, event_pk)
    if event is None:
        raise LookupError(f"event {event_pk} is not stored")
    rows = await session.execute(
        select(EventItemRow.position, EventItemRow.evidence_level, EventItemRow.pmid)
        .where(EventItemRow.event_id == event_pk)
        .order_by(EventItemRow.position)
    )
    items = tuple(ItemFacts(pos, EvidenceLevel(level), pmid) for pos, level, pmid in rows)
    return EventFacts(
        pk=event.id,
        type=event.type,
        topic=event.topic,
        items=items,
        key=f"{event.source}:{event.event_id}",
    )


def positions_for(event: EventFacts, min_level: str) -> list[int]:
    """The items a subscriber with threshold ``min_level`` gets; notices go to everyone."""
    if event.type == EventType.NOTICE.value:
        return [item.position for item in event.items]
    threshold = EvidenceLevel(min_level)
    return [item.position for item in event.items if item.level.at_least(threshold)]


async def fan_out_page(
    session: AsyncSession, event: EventFacts, after_id: int, page_size: int, now: datetime
) -> FanoutPage | None:
    """Record the deliveries of the next page of subscriptions; None when the walk is done."""
    if event.type in SILENT_TYPES:
        return None
    if event.type in FOLLOW_UP_TYPES:
        return await _follow_up_page(session, event, after_id, page_size, now)
    rows = (
        await session.execute(
            select(
                Subscription.id,
                Subscription.channel,
                Subscription.frequency,
                Subscription.min_level,
                Subscription.timezone,
                Subscription.next_digest_at,
            )
            .where(
                Subscription.topic == event.topic,
                Subscription.status == SubscriptionStatus.CONFIRMED.value,
                Subscription.id > after_id,
            )
            .order_by(Subscription.id)
            .limit(page_size)
        )
    ).all()
    if not rows:
        return None
    deliveries: list[dict[str, Any]] = []
    digest_schedules: list[dict[str, Any]] = []
    for sub_id, channel, frequency, min_level, timezone, next_digest in rows:
        positions = positions_for(event, min_level)
        if not positions:
            continue
        immediate = frequency == Frequency.IMMEDIATE.value
        status = DeliveryStatus.QUEUED if immediate else DeliveryStatus.PENDING
        deliveries.append(_delivery_row(sub_id, event.pk, channel, status, positions, now))
        if not immediate and next_digest is None:
            digest_schedules.append(
                {"sid": sub_id, "due": next_digest_at(frequency, timezone, now)}
            )
    inserted = await _insert_deliveries(session, deliveries)
    if digest_schedules:
        await _schedule_digests(session, digest_schedules)
    immediate_ids = tuple(
        row["subscription_id"] for row in deliveries if row["status"] == DeliveryStatus.QUEUED
    )
    return FanoutPage(after_id, rows[-1][0], inserted, len(immediate_ids), immediate_ids)


async def _follow_up_page(
    session: AsyncSession, event: EventFacts, after_id: int, page_size: int, now: datetime
) -> FanoutPage | None:
    pmids = event.pmids
    if not pmids:
        return None
    received_filter = (
        EventItemRow.pmid.in_(pmids),
        Delivery.status.in_(_RECEIVED),
        Delivery.event_id != event.pk,
        Subscription.status == SubscriptionStatus.CONFIRMED.value,
    )
    page_ids = (
        await session.scalars(
            select(Delivery.subscription_id)
            .distinct()
            .join(EventItemRow, EventItemRow.event_id == Delivery.event_id)
            .join(Subscription, Subscription.id == Delivery.subscription_id)
            .where(*received_filter, Delivery.subscription_id > after_id)
            .order_by(Delivery.subscription_id)
            .limit(page_size)
        )
    ).all()
    if not page_ids:
        return None
    rows = await session.execute(
        select(
            Delivery.subscription_id,
            Subscription.channel,
            Delivery.item_positions,
            EventItemRow.position,
            EventItemRow.pmid,
        )
        .join(EventItemRow, EventItemRow.event_id == Delivery.event_id)
        .join(Subscription, Subscription.id == Delivery.subscription_id)
        .where(*received_filter, Delivery.subscription_id.in_(page_ids))
    )
    received: dict[int, tuple[str, set[str]]] = {}
    for sub_id, channel, sent_positions, position, pmid in rows:
        # Only the items that were actually in the message count as received.
        if pmid is not None and position in (sent_positions or []):
            received.setdefault(sub_id, (channel, set()))[1].add(pmid)
    deliveries = []
    for sub_id, (channel, pmids_received) in sorted(received.items()):
        positions = [item.position for item in event.items if item.pmid in pmids_received]
        deliveries.append(
            _delivery_row(sub_id, event.pk, channel, DeliveryStatus.QUEUED, positions, now)
        )
    inserted = await _insert_deliveries(session, deliveries)
    return FanoutPage(
        after_id,
        page_ids[-1],
        inserted,
        len(deliveries),
        tuple(row["subscription_id"] for row in deliveries),
    )


def _delivery_row(
    sub_id: int,
    event_pk: int,
    channel: str,
    status: DeliveryStatus,
    positions: list[int],
    now: datetime,
) -> dict[str, Any]:
    return {
        "subscription_id": sub_id,
        "event_id": event_pk,
        "channel": channel,
        "status": status.value,
        "created_at": now,
        "attempts": 0,
        "item_positions": positions,
    }


async def _insert_deliveries(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> int:
    if not rows:
        return 0
    statement = insert_or_ignore(session, Delivery, ["subscription_id", "event_id"])
    result = await session.execute(statement, list(rows))
    return max(int(getattr(result, "rowcount", 0) or 0), 0)


async def _schedule_digests(session: AsyncSession, schedules: list[dict[str, Any]]) -> None:
    # Only where still unset: the subscription's own flow may have set it meanwhile.
    for schedule in schedules:
        await session.execute(
            update(Subscription)
            .where(Subscription.id == schedule["sid"], Subscription.next_digest_at.is_(None))
            .values(next_digest_at=schedule["due"])
        )
