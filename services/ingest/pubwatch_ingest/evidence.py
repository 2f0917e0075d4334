"""How strong an article's evidence is, from its PubMed publication types.

The one table below is the whole rule: an article gets the strongest level any of its
publication types maps to; a type not in the table (``Journal Article``, ``Letter``,
``Editorial``, ``Comment``, ``News``, ...) counts as ``other``. Names are PubMed's
publication types exactly as efetch spells them (MeSH publication characteristics).
"""

from __future__ import annotations

from collections.abc import Iterable

from pubwatch_shared.events import EvidenceLevel

PUBLICATION_TYPE_LEVELS: dict[str, EvidenceLevel] = {
    # guideline
    "Practice Guideline": EvidenceLevel.GUIDELINE,
    "Guideline": EvidenceLevel.GUIDELINE,
    "Consensus Development Conference": EvidenceLevel.GUIDELINE,
    "Consensus Development Conference, NIH": EvidenceLevel.GUIDELINE,
    # systematic review, meta-analysis
    "Systematic Review": EvidenceLevel.SYSTEMATIC_REVIEW,
    "Meta-Analysis": EvidenceLevel.SYSTEMATIC_REVIEW,
    "Network Meta-Analysis": EvidenceLevel.SYSTEMATIC_REVIEW,
    # randomized controlled trial
    "Randomized Controlled Trial": EvidenceLevel.RCT,
    "Randomized Controlled Trial, Veterinary": EvidenceLevel.RCT,
    # other clinical trials (a protocol reports no results: it stays "other")
    "Clinical Trial": EvidenceLevel.CLINICAL_TRIAL,
    "Clinical Trial, Phase I": EvidenceLevel.CLINICAL_TRIAL,
    "Clinical Trial, Phase II": EvidenceLevel.CLINICAL_TRIAL,
    "Clinical Trial, Phase III": EvidenceLevel.CLINICAL_TRIAL,
    "Clinical Trial, Phase IV": EvidenceLevel.CLINICAL_TRIAL,
    "Controlled Clinical Trial": EvidenceLevel.CLINICAL_TRIAL,
    "Pragmatic Clinical Trial": EvidenceLevel.CLINICAL_TRIAL,
    "Adaptive Clinical Trial": EvidenceLevel.CLINICAL_TRIAL,
    "Equivalence Trial": EvidenceLevel.CLINICAL_TRIAL,
    "Clinical Trial, Veterinary": EvidenceLevel.CLINICAL_TRIAL,
    # observational studies
    "Observational Study": EvidenceLevel.OBSERVATIONAL,
    "Observational Study, Veterinary": EvidenceLevel.OBSERVATIONAL,
    "Clinical Study": EvidenceLevel.OBSERVATIONAL,
    "Comparative Study": EvidenceLevel.OBSERVATIONAL,
    "Multicenter Study": EvidenceLevel.OBSERVATIONAL,
    "Twin Study": EvidenceLevel.OBSERVATIONAL,
    "Validation Study": EvidenceLevel.OBSERVATIONAL,
    "Evaluation Study": EvidenceLevel.OBSERVATIONAL,
    # narrative reviews
    "Review": EvidenceLevel.REVIEW,
    "Scoping Review": EvidenceLevel.REVIEW,
    # case reports
    "Case Reports": EvidenceLevel.CASE_REPORT,
}

# Records that only talk about another record. Alone (with nothing stronger than "other")
# they are not new evidence, so they never make an event.
NOTICE_TYPES: frozenset[str] = frozenset(
    {
        "Published Erratum",
        "Comment",
        "Retraction of Publication",
        "Expression of Concern",
        "Corrected and Republished Article",
    }
)

RETRACTED_TYPE = "Retracted Publication"


def evidence_level(publication_types: Iterable[str]) -> EvidenceLevel:
    """The strongest level among ``publication_types`` (``other`` when none is known)."""
    return EvidenceLevel.strongest(
        [PUBLICATION_TYPE_LEVELS.get(kind, EvidenceLevel.OTHER) for kind in publication_types]
    )


def is_notice_only(publication_types: Iterable[str]) -> bool:
    """True for errata, comments, retraction notices and the like with no study of their own."""
    kinds = list(publication_types)
    return any(kind in NOTICE_TYPES for kind in kinds) and (
        evidence_level(kinds) is EvidenceLevel.OTHER
    )
