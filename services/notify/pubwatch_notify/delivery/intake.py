"""Accepting an event: validate it against the contract and store it exactly once.

Used by the queue consumer (:mod:`.jobs`) and by the events API, so both treat a repeat of
(source, id) the same way: the first one stored wins, the repeat is a no-op.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert as insert_
from sqlalchemy import select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

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


# --- the batched Core path (the events API's group commit) ----------------------------------


@dataclass(frozen=True)
class StoredSummary:
    """What an answer needs about a stored event, without an ORM object."""

    pk: int
    event_id: str
    source: str
    topic: str
    received_at: datetime
    fanned_out_at: datetime | None
    payload: dict[str, Any]
    created: bool


def _dialect_insert(conn: AsyncConnection, table: Any) -> Any:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise ValueError(f"unsupported database dialect {dialect!r}")  # pragma: no cover


async def store_events_core(
    conn: AsyncConnection, events: Sequence[tuple[ChangeEvent, str | None]]
) -> list[StoredSummary]:
    """Store many events in the caller's transaction, each unless (source, id) is stored.

    The same semantics as :func:`store_event`, in a handful of statements whatever the
    number of events: one ``INSERT ... ON CONFLICT DO NOTHING`` for the events, one for
    their items, one SELECT for the ones stored before. A (source, id) twice in ``events``
    is created once; the later ones answer as repeats. Results are in the order of
    ``events``. The caller commits.
    """
    events_table = StoredEvent.__table__
    first: dict[tuple[str, str], ChangeEvent] = {}
    payloads: dict[tuple[str, str], dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    for event, posted_by in events:
        key = (event.source, event.id)
        if key in first:
            continue
        first[key] = event
        payloads[key] = event.to_payload()
        rows.append(
            {
                "event_id": event.id,
                "source": event.source,
                "type": event.type.value,
                "topic": event.topic,
                "occurred_at": event.occurred_at,
                "strongest_level": (event.strongest_level or "other"),
                "payload": payloads[key],
                "posted_by": posted_by,
            }
        )
    insert = (
        _dialect_insert(conn, events_table)
        .on_conflict_do_nothing(index_elements=["source", "event_id"])
        .returning(
            events_table.c.id,
            events_table.c.source,
            events_table.c.event_id,
            events_table.c.received_at,
        )
    )
    created: dict[tuple[str, str], tuple[int, datetime]] = {}
    for row in (await conn.execute(insert, rows)).all():
        created[(row.source, row.event_id)] = (row.id, row.received_at)
    existing: dict[tuple[str, str], StoredSummary] = {}
    missing = [key for key in first if key not in created]
    if missing:
        found = await conn.execute(
            select(
                events_table.c.id,
                events_table.c.source,
                events_table.c.event_id,
                events_table.c.topic,
                events_table.c.received_at,
                events_table.c.fanned_out_at,
                events_table.c.payload,
            ).where(tuple_(events_table.c.source, events_table.c.event_id).in_(missing))
        )
        for row in found:
            existing[(row.source, row.event_id)] = StoredSummary(
                pk=row.id,
                event_id=row.event_id,
                source=row.source,
                topic=row.topic,
                received_at=row.received_at,
                fanned_out_at=row.fanned_out_at,
                payload=row.payload,
                created=False,
            )
        if len(existing) != len(missing):  # pragma: no cover - a conflict row cannot vanish
            raise RuntimeError("event conflict without a stored event")
    item_rows = [
        {
            "event_id": created[key][0],
            "position": position,
            "title": item.title,
            "url": str(item.url),
            "summary": item.summary,
            "pmid": item.pmid,
            "doi": item.doi,
            "journal": item.journal,
            "published": item.published,
            "evidence_level": item.evidence_level.value,
        }
        for key, event in first.items()
        if key in created
        for position, item in enumerate(event.items)
    ]
    if item_rows:
        await conn.execute(insert_(EventItemRow), item_rows)
    results: list[StoredSummary] = []
    announced: set[tuple[str, str]] = set()
    for event, _posted_by in events:
        key = (event.source, event.id)
        if key in created and key not in announced:
            announced.add(key)
            pk, received_at = created[key]
            log.info(
                "event stored",
                extra={
                    "event_pk": pk,
                    "event_id": event.id,
                    "topic": event.topic,
                    "items": len(event.items),
                },
            )
            results.append(
                StoredSummary(
                    pk=pk,
                    event_id=event.id,
                    source=event.source,
                    topic=event.topic,
                    received_at=received_at,
                    fanned_out_at=None,
                    payload=payloads[key],
                    created=True,
                )
            )
        elif key in created:
            pk, received_at = created[key]
            results.append(
                StoredSummary(
                    pk=pk,
                    event_id=event.id,
                    source=event.source,
                    topic=event.topic,
                    received_at=received_at,
                    fanned_out_at=None,
                    payload=payloads[key],
                    created=False,
                )
            )
        else:
            results.append(existing[key])
    return results
