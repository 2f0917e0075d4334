"""``/e/{event_pk}``: one event's items with their summaries (the link in every SMS)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response
from sqlalchemy import select

from pubwatch_notify.api.deps import ResourcesDep, SessionDep, render
from pubwatch_notify.delivery.fanout import SILENT_TYPES
from pubwatch_notify.messages.content import MessageItem
from pubwatch_notify.messages.email import DISCLAIMER
from pubwatch_notify.messages.levels import level_label
from pubwatch_notify.store.models import EventItemRow, StoredEvent
from pubwatch_shared.events import EventType, EvidenceLevel

router = APIRouter(tags=["pages"])

_HEADINGS = {
    EventType.NEW.value: "New studies",
    EventType.RETRACTED.value: "Correction: retracted",
    EventType.CORRECTED.value: "Correction",
    EventType.NOTICE.value: "Update",
}


@router.get("/e/{event_pk}", name="event_page")
async def event_page(
    event_pk: int, request: Request, resources: ResourcesDep, session: SessionDep
) -> Response:
    event = await session.get(StoredEvent, event_pk)
    if event is None or event.type in SILENT_TYPES:
        raise HTTPException(status_code=404)
    rows = await session.scalars(
        select(EventItemRow)
        .where(EventItemRow.event_id == event_pk)
        .order_by(EventItemRow.position)
    )
    items = [
        MessageItem(
            title=row.title,
            url=row.url,
            summary=row.summary,
            level=EvidenceLevel(row.evidence_level),
            journal=row.journal,
            published=row.published,
            pmid=row.pmid,
        )
        for row in rows
    ]
    topic = resources.topics.get(event.topic)
    return render(
        request,
        "event.html",
        {
            "event": event,
            "heading": _HEADINGS.get(event.type, "Update"),
            "topic_name": topic.name if topic else event.topic.replace("-", " ").capitalize(),
            "topic_url": resources.links.topic(event.topic),
            "items": items,
            "level_label": level_label,
            "disclaimer": DISCLAIMER,
        },
    )
