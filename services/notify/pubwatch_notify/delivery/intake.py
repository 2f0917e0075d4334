"""Accepting an event: validate it against the contract and store it exactly once.

Used by the queue consumer (:mod:`.jobs`) and by the events API, so both treat a repeat of
(source, id) the same way: the first one stored wins, the repeat is a no-op.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from pubwatch_notify.delivery.upsert import insert_or_ignore
from pubwatch_notify.store.models import EventItemRow, StoredEvent
from pubwatch_shared.events import SCHEMA_VERSION, ChangeEvent

log = logging.getLogger(__name__)


class UnsupportedEventError(ValueError):
    """The payload is of a contract version this service does not know: refuse, never guess."""


def parse_event(payload: dict[str, Any]) -> ChangeEvent:
    """Validate a queue payload. A version we do not know raises :class:`UnsupportedEventError`
    (the job then fails visibly); a malformed v1 payload raises pydantic's ValidationError."""
    version = payload.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise UnsupportedEventError(
            f"event {payload.get('source')}:{payload.get('id')} has schema_version "
            f"{version!r}; this notify service understands only {SCHEMA_VERSION}"
        )
    return ChangeEvent.model_validate(payload)


async def store_event(
    session: AsyncSession, event: ChangeEvent, posted_by: str | None
) -> tuple[StoredEvent, bool]:
    """Store ``event`` and its items unless (source, id) is already stored.

    Returns the stored row and whether this call created it. The caller commits.
    """
    insert = insert_or_ignore(session, StoredEvent, ["source", "event_id"])
    statement = insert.values(
        event_id=event.id,
        source=event.source,
        type=event.type.value,
        topic=event.topic,
        occurred_at=event.occurred_at,
        strongest_level=(event.strongest_level or "other"),
        payload=event.to_payload(),
        posted_by=posted_by,
    ).returning(StoredEvent.id)
    new_pk = (await session.execute(statement)).scalar_one_or_none()
    if new_pk is None:
        existing = await session.scalar(
            select(StoredEvent).where(
                StoredEvent.source == event.source, StoredEvent.event_id == event.id
            )
        )
        if existing is None:  # pragma: no cover - the conflict row cannot vanish in between
            raise RuntimeError("event conflict without a stored event")
        return existing, False
    session.add_all(
        EventItemRow(
            event_id=new_pk,
            position=position,
            title=item.title,
            url=str(item.url),
            summary=item.summary,
            pmid=item.pmid,
            doi=item.doi,
            journal=item.journal,
            published=item.published,
            evidence_level=item.evidence_level.value,
        )
        for position, item in enumerate(event.items)
    )
    await session.flush()
    stored = await session.get(StoredEvent, new_pk)
    if stored is None:  # pragma: no cover
        raise RuntimeError("stored event vanished")
    log.info(
        "event stored",
        extra={
            "event_pk": new_pk,
            "event_id": event.id,
            "topic": event.topic,
            "items": len(event.items),
        },
    )
    return stored, True
