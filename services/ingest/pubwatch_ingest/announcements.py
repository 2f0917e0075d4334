"""Change events built from articles, with ids that depend only on what they announce.

An event id is derived from the topic, the event type and the PMIDs it carries, so building
the same announcement twice (a poll repeated after a crash) gives the same id, and arq and
notify drop the repeat. Items are ordered strongest evidence first, then newest PMID, and
chunked into events of at most ``chunk_size`` items.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

from pubwatch_ingest.articles import Article
from pubwatch_shared.events import ChangeEvent, EventItem, EventType, pubmed_url

SOURCE = "pubmed"
_TITLE_MAX_CHARS = 1000
_JOURNAL_MAX_CHARS = 500
_DOI_MAX_CHARS = 300


def _clip(text: str | None, max_chars: int) -> str | None:
    if text is None:
        return None
    return text if len(text) <= max_chars else text[: max_chars - 1].rstrip() + "…"


def article_item(article: Article) -> EventItem:
    return EventItem(
        title=_clip(article.title, _TITLE_MAX_CHARS) or article.pmid,
        url=pubmed_url(article.pmid),  # pydantic parses the str
        summary=article.summary or article.title,
        pmid=article.pmid,
        doi=_clip(article.doi, _DOI_MAX_CHARS),
        journal=_clip(article.journal, _JOURNAL_MAX_CHARS),
        published=article.published,
        publication_types=article.publication_types[:50],
        evidence_level=article.evidence_level,
    )


def _digest(pmids: Sequence[str]) -> str:
    return hashlib.sha256(",".join(sorted(pmids, key=int)).encode()).hexdigest()[:20]


def event_id(topic: str, event_type: EventType, pmids: Sequence[str]) -> str:
    kind = event_type.value.removeprefix("evidence.")
    if len(pmids) == 1:
        return f"{SOURCE}:{topic}:{kind}:{pmids[0]}"
    return f"{SOURCE}:{topic}:{kind}:{_digest(pmids)}"


def _ordered(articles: Sequence[Article]) -> list[Article]:
    return sorted(articles, key=lambda a: (a.evidence_level.rank, -int(a.pmid)))


def article_events(
    topic: str,
    event_type: EventType,
    articles: Sequence[Article],
    occurred_at: datetime,
    chunk_size: int,
) -> list[ChangeEvent]:
    """``evidence.new`` or ``evidence.baseline`` events for ``articles``, chunked."""
    ordered = _ordered(articles)
    events = []
    for start in range(0, len(ordered), chunk_size):
        chunk = ordered[start : start + chunk_size]
        events.append(
            ChangeEvent(
                id=event_id(topic, event_type, [a.pmid for a in chunk]),
                type=event_type,
                topic=topic,
                source=SOURCE,
                occurred_at=occurred_at,
                items=[article_item(a) for a in chunk],
            )
        )
    return events


def retraction_event(topic: str, article: Article, occurred_at: datetime) -> ChangeEvent:
    """One ``evidence.retracted`` per article, naming the article that was announced."""
    return ChangeEvent(
        id=event_id(topic, EventType.RETRACTED, [article.pmid]),
        type=EventType.RETRACTED,
        topic=topic,
        source=SOURCE,
        occurred_at=occurred_at,
        items=[article_item(article)],
    )
