"""Public pages: the topic list, a topic's page with the subscribe form, the embeddable
form, and the terms and privacy pages the SMS disclosure links to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy import distinct, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from pubwatch_notify.api.deps import Resources, ResourcesDep, SessionDep, render, render_message
from pubwatch_notify.settings import NotifySettings
from pubwatch_notify.store.models import Channel, EventItemRow, StoredEvent
from pubwatch_notify.subscriptions.choices import (
    CHANNEL_LABELS,
    COMMON_TIMEZONES,
    FREQUENCY_LABELS,
    THRESHOLD_LABELS,
    level_words,
)
from pubwatch_notify.subscriptions.wording import consent_wording, sms_disclosure
from pubwatch_shared.events import EventType
from pubwatch_shared.topics import Topic

router = APIRouter(tags=["pages"], include_in_schema=False)

# Where the error summary's links jump to: the first control of each field.
FIELD_ANCHORS = {
    "channel": "channel-email",
    "email": "email",
    "phone": "phone",
    "frequency": "frequency-immediate",
    "min_level": "min_level-other",
    "timezone": "timezone",
    "consent": "consent",
}

# Bots fill every field; people never see this one (hidden by CSS, skipped by keyboard
# and screen readers). A filled-in honeypot gets the ordinary "check your inbox" page.
HONEYPOT_FIELD = "website"


def blank_form_values(settings: NotifySettings) -> dict[str, str]:
    return {
        "channel": Channel.EMAIL.value,
        "email": "",
        "phone": "",
        "frequency": "immediate",
        "min_level": "other",
        "timezone": settings.default_timezone,
        "consent": "",
    }


def form_context(
    resources: Resources,
    topic: Topic,
    values: dict[str, str],
    errors: dict[str, str],
    *,
    embed: bool,
    detect_timezone: bool = True,
) -> dict[str, Any]:
    settings = resources.settings
    return {
        "topic": topic,
        "values": values,
        "errors": errors,
        "embed": embed,
        "action": f"/embed/{topic.slug}" if embed else f"/topics/{topic.slug}",
        "honeypot_field": HONEYPOT_FIELD,
        "field_anchors": FIELD_ANCHORS,
        "detect_timezone": detect_timezone,
        "email_wording": consent_wording(
            Channel.EMAIL, topic.name, settings.program_name, settings.consent_wording_version
        ),
        "sms_wording": consent_wording(
            Channel.SMS, topic.name, settings.program_name, settings.consent_wording_version
        ),
        "sms_disclosure": sms_disclosure(settings.program_name),
        "channel_labels": CHANNEL_LABELS,
        "frequency_labels": FREQUENCY_LABELS,
        "threshold_labels": THRESHOLD_LABELS,
        "common_timezones": COMMON_TIMEZONES,
    }


LATEST_EVIDENCE_COUNT = 5
# Items of these event types are literature PubWatch follows; retraction notices and
# other notices are not articles to count.
_ARTICLE_EVENT_TYPES = (EventType.NEW.value, EventType.BASELINE.value)


@dataclass(frozen=True)
class EvidenceEntry:
    title: str
    url: str
    summary: str
    level_words: str
    journal: str | None
    published: str | None


async def followed_article_count(session: AsyncSession, topic: str) -> int:
    """How many distinct PubMed articles PubWatch knows on the topic (baseline included)."""
    count = await session.scalar(
        select(func.count(distinct(EventItemRow.pmid)))
        .join(StoredEvent, EventItemRow.event_id == StoredEvent.id)
        .where(
            StoredEvent.topic == topic,
            StoredEvent.type.in_(_ARTICLE_EVENT_TYPES),
            EventItemRow.pmid.is_not(None),
        )
    )
    return int(count or 0)


async def latest_evidence(session: AsyncSession, topic: str) -> list[EvidenceEntry]:
    rows = await session.scalars(
        select(EventItemRow)
        .join(StoredEvent, EventItemRow.event_id == StoredEvent.id)
        .where(StoredEvent.topic == topic, StoredEvent.type.in_(_ARTICLE_EVENT_TYPES))
        .order_by(
            StoredEvent.occurred_at.desc(),
            EventItemRow.published.desc().nulls_last(),
            EventItemRow.position,
        )
        .limit(LATEST_EVIDENCE_COUNT * 4)
    )
    entries: list[EvidenceEntry] = []
    seen: set[str] = set()
    for item in rows:
        key = item.pmid or item.url
        if key in seen:
            continue
        seen.add(key)
        entries.append(
            EvidenceEntry(
                title=item.title,
                url=item.url,
                summary=item.summary,
                level_words=level_words(item.evidence_level),
                journal=item.journal,
                published=item.published,
            )
        )
        if len(entries) == LATEST_EVIDENCE_COUNT:
            break
    return entries


async def topic_page_context(
    session: AsyncSession, resources: Resources, topic: Topic, context: dict[str, Any]
) -> dict[str, Any]:
    """The topic page's own content around the form: the article count and latest evidence."""
    context["article_count"] = await followed_article_count(session, topic.slug)
    context["evidence"] = await latest_evidence(session, topic.slug)
    return context


@router.get("/")
async def topic_list(request: Request) -> Response:
    return render(request, "index.html")


@router.get("/topics/{slug}")
async def topic_page(
    slug: str, request: Request, resources: ResourcesDep, session: SessionDep
) -> Response:
    topic = resources.topics.get(slug)
    if topic is None:
        return render_message(
            request, "Topic not found", "PubWatch doesn't follow a topic at this address.", 404
        )
    context = form_context(resources, topic, blank_form_values(resources.settings), {}, embed=False)
    context = await topic_page_context(session, resources, topic, context)
    # Hand the connection back before the template renders (it takes as long as the
    # queries): at 50 clients on PostgreSQL's 20 pooled connections, views waited for one.
    await session.close()
    return render(request, "topic.html", context)


@router.get("/embed/{slug}")
async def embed_page(slug: str, request: Request, resources: ResourcesDep) -> Response:
    topic = resources.topics.get(slug)
    if topic is None:
        return render_message(
            request, "Topic not found", "PubWatch doesn't follow this topic.", 404, embed=True
        )
    context = form_context(resources, topic, blank_form_values(resources.settings), {}, embed=True)
    return render(request, "embed.html", context)


@router.get("/terms")
async def terms(request: Request) -> Response:
    return render(request, "terms.html")


@router.get("/privacy")
async def privacy(request: Request) -> Response:
    return render(request, "privacy.html")
