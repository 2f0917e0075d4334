"""The change event: the one thing ingest, other systems and notify agree on.

An event is one change on one topic. Its ``id`` is unique per ``source`` and is the
idempotency key: the same (source, id) posted twice is one event.

The model is versioned by ``schema_version``. Adding an optional field keeps the version;
removing or changing the meaning of a field makes a new version, and consumers refuse a
version they do not know rather than guess.
"""

from __future__ import annotations

import enum
import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator
from pydantic.config import JsonDict

SCHEMA_VERSION: Literal[1] = 1

SLUG_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
_PUBLISHED_PATTERN = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")


class EvidenceLevel(enum.StrEnum):
    """How strong a study's evidence is, strongest first.

    The declaration order *is* the ranking: ``rank`` 0 is the strongest. Compare levels with
    :meth:`at_least`, never with ``<`` on the string values.
    """

    GUIDELINE = "guideline"
    SYSTEMATIC_REVIEW = "systematic_review"
    RCT = "rct"
    CLINICAL_TRIAL = "clinical_trial"
    OBSERVATIONAL = "observational"
    REVIEW = "review"
    CASE_REPORT = "case_report"
    OTHER = "other"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def at_least(self, threshold: EvidenceLevel) -> bool:
        """True when this level is as strong as ``threshold`` or stronger."""
        return self.rank <= threshold.rank

    @classmethod
    def strongest(cls, levels: list[EvidenceLevel]) -> EvidenceLevel:
        return min(levels, key=lambda level: level.rank, default=cls.OTHER)


_RANKS = {level: rank for rank, level in enumerate(EvidenceLevel)}


class EventType(enum.StrEnum):
    NEW = "evidence.new"
    # The literature that existed when a topic was first polled: shown on the topic's
    # page, never announced to anyone. A consumer that does not know a type ignores it.
    BASELINE = "evidence.baseline"
    RETRACTED = "evidence.retracted"
    CORRECTED = "evidence.corrected"
    NOTICE = "notice"


ShortText = Annotated[str, Field(min_length=1, max_length=1000)]


class EventItem(BaseModel):
    """One article or notice carried by an event."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: Annotated[str, Field(min_length=1, max_length=1000)]
    url: AnyHttpUrl
    summary: Annotated[str, Field(min_length=1, max_length=1000)] = Field(
        description="Short plain text, about 280 characters; no markup."
    )
    pmid: Annotated[str, Field(pattern=r"^\d{1,10}$")] | None = None
    doi: Annotated[str, Field(max_length=300)] | None = None
    journal: Annotated[str, Field(max_length=500)] | None = None
    published: str | None = Field(
        default=None,
        description="Publication date as precise as PubMed has it: YYYY, YYYY-MM or YYYY-MM-DD.",
    )
    publication_types: list[Annotated[str, Field(max_length=200)]] = Field(
        default_factory=list, max_length=50
    )
    evidence_level: EvidenceLevel = EvidenceLevel.OTHER

    @field_validator("published")
    @classmethod
    def _published_is_partial_iso_date(cls, value: str | None) -> str | None:
        if value is not None and not _PUBLISHED_PATTERN.match(value):
            raise ValueError("must be YYYY, YYYY-MM or YYYY-MM-DD")
        return value

    @field_validator("title", "summary")
    @classmethod
    def _plain_single_paragraph(cls, value: str) -> str:
        stripped = " ".join(value.split())
        if not stripped:
            raise ValueError("must not be blank")
        return stripped


EXAMPLE_EVENT: JsonDict = {
    "schema_version": 1,
    "id": "pubmed:indolent-systemic-mastocytosis:2026-11-25T06:00:00Z",
    "type": "evidence.new",
    "topic": "indolent-systemic-mastocytosis",
    "source": "pubmed",
    "occurred_at": "2026-11-25T06:00:00Z",
    "items": [
        {
            "title": "An example randomized trial in indolent systemic mastocytosis.",
            "url": "https://pubmed.ncbi.nlm.nih.gov/12345678/",
            "summary": "An illustrative summary: symptoms improved more than with placebo.",
            "pmid": "12345678",
            "doi": "10.1000/example.12345678",
            "journal": "Example Journal",
            "published": "2026-11",
            "publication_types": ["Randomized Controlled Trial"],
            "evidence_level": "rct",
        }
    ],
}


class ChangeEvent(BaseModel):
    """One change on one topic (version 1 of the contract)."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={"examples": [EXAMPLE_EVENT]},
    )

    schema_version: Literal[1] = SCHEMA_VERSION
    id: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")] = Field(
        description="Unique per source; the idempotency key. Printable ASCII, no spaces."
    )
    type: EventType
    topic: Annotated[str, Field(min_length=1, max_length=100, pattern=SLUG_PATTERN)]
    source: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9._-]*$")]
    occurred_at: datetime = Field(description="RFC 3339 timestamp with a time zone.")
    items: list[EventItem] = Field(min_length=1, max_length=500)
    strongest_level: EvidenceLevel | None = Field(
        default=None,
        description="The strongest evidence level among the items (filled in when absent).",
    )

    @field_validator("occurred_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must carry a time zone offset (RFC 3339), e.g. 2026-11-25T06:00:00Z")
        return value

    def model_post_init(self, __context: object) -> None:
        if self.strongest_level is None:
            strongest = EvidenceLevel.strongest([item.evidence_level for item in self.items])
            object.__setattr__(self, "strongest_level", strongest)

    def to_payload(self) -> dict[str, object]:
        """The JSON-safe dict that travels on the queue."""
        return self.model_dump(mode="json")


def pubmed_url(pmid: str) -> str:
    return f"https://pubmed.ncbi.nlm.nih.gov/{pmid}/"
