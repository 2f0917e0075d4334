"""From claimed deliveries to the content of one message (see :mod:`..messages.content`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from pubwatch_notify.delivery.claims import ClaimedDelivery
from pubwatch_notify.messages.content import Correction, MessageContent, MessageItem
from pubwatch_notify.store.models import EventItemRow, StoredEvent
from pubwatch_shared.events import EventType, EvidenceLevel


@dataclass(frozen=True)
class CachedEvent:
    type: str
    topic: str
    items: dict[int, MessageItem]  # by position


class EventCache:
    """Events a job renders, loaded once per job however many recipients share them."""

    def __init__(self) -> None:
        self._events: dict[int, CachedEvent] = {}

    async def load(self, session: AsyncSession, event_pks: Iterable[int]) -> None:
        missing = sorted(set(event_pks) - self._events.keys())
        if not missing:
            return
        events = {
            row.id: row
            for row in await session.scalars(select(StoredEvent).where(StoredEvent.id.in_(missing)))
        }
        items: dict[int, dict[int, MessageItem]] = {pk: {} for pk in events}
        for row in await session.scalars(
            select(EventItemRow).where(EventItemRow.event_id.in_(missing))
        ):
            items[row.event_id][row.position] = MessageItem(
                title=row.title,
                url=row.url,
                summary=row.summary,
                level=EvidenceLevel(row.evidence_level),
                journal=row.journal,
                published=row.published,
                pmid=row.pmid,
            )
        for pk, event in events.items():
            self._events[pk] = CachedEvent(event.type, event.topic, items[pk])

    def get(self, event_pk: int) -> CachedEvent:
        return self._events[event_pk]


def compose(
    deliveries: list[ClaimedDelivery],
    events: EventCache,
    topic_slug: str,
    topic_name: str,
    digest: str | None = None,
) -> MessageContent:
    content = MessageContent(topic_slug=topic_slug, topic_name=topic_name, digest=digest)
    seen: set[str] = set()
    for delivery in sorted(deliveries, key=lambda d: (d.event_pk, d.id)):
        event = events.get(delivery.event_pk)
        content.event_pks.append(delivery.event_pk)
        for position in delivery.item_positions:
            item = event.items.get(position)
            if item is None:
                continue
            key = f"{event.type}:{item.pmid or item.url}"
            if key in seen:  # the same paper in two events of one message is listed once
                continue
            seen.add(key)
            if event.type in (EventType.RETRACTED.value, EventType.CORRECTED.value):
                content.corrections.append(Correction(event.type, item))
            elif event.type == EventType.NOTICE.value:
                content.notices.append(item)
            else:
                content.new_items.append(item)
    return content
