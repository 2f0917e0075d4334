"""The content of one message, independent of channel: which items, about what, and why.

A message carries the items of one or more deliveries (several for a digest, or for SMS
held by quiet hours or the weekly cap). Items announced as new and corrections (an article
the subscriber received was retracted or corrected) are kept apart, so a correction is never
mistaken for news.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pubwatch_notify.messages.levels import level_words, with_article
from pubwatch_shared.events import EventType, EvidenceLevel


@dataclass(frozen=True)
class MessageItem:
    title: str
    url: str
    summary: str
    level: EvidenceLevel
    journal: str | None = None
    published: str | None = None
    pmid: str | None = None

    @property
    def source_line(self) -> str:
        """'Journal, 2026-11' — whichever parts are known."""
        return ", ".join(part for part in (self.journal, self.published) if part)


@dataclass(frozen=True)
class Correction:
    """An article the subscriber was sent, and what happened to it."""

    kind: str  # evidence.retracted or evidence.corrected
    item: MessageItem

    @property
    def verb(self) -> str:
        return "was retracted" if self.kind == EventType.RETRACTED.value else "was corrected"


@dataclass(frozen=True)
class MessageContent:
    topic_slug: str
    topic_name: str
    new_items: list[MessageItem] = field(default_factory=list)
    notices: list[MessageItem] = field(default_factory=list)
    corrections: list[Correction] = field(default_factory=list)
    event_pks: list[int] = field(default_factory=list)
    digest: str | None = None  # "daily" / "weekly" for digests

    @property
    def is_empty(self) -> bool:
        return not (self.new_items or self.notices or self.corrections)

    @property
    def strongest_new_level(self) -> EvidenceLevel | None:
        if not self.new_items:
            return None
        return EvidenceLevel.strongest([item.level for item in self.new_items])

    def new_items_phrase(self) -> str:
        """'2 new studies on Indolent systemic mastocytosis — incl. a randomized trial'."""
        count = len(self.new_items)
        strongest = self.strongest_new_level
        if count == 0 or strongest is None:
            return f"News on {self.topic_name}"
        if count == 1:
            return f"New {level_words(strongest)} on {self.topic_name}"
        return (
            f"{count} new studies on {self.topic_name} — incl. "
            f"{with_article(level_words(strongest))}"
        )
