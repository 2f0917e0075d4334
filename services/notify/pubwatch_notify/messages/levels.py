"""Evidence levels in the words a patient reads."""

from __future__ import annotations

from pubwatch_shared.events import EvidenceLevel

LEVEL_WORDS: dict[EvidenceLevel, tuple[str, str]] = {
    # level: (singular, plural)
    EvidenceLevel.GUIDELINE: ("clinical guideline", "clinical guidelines"),
    EvidenceLevel.SYSTEMATIC_REVIEW: ("systematic review", "systematic reviews"),
    EvidenceLevel.RCT: ("randomized trial", "randomized trials"),
    EvidenceLevel.CLINICAL_TRIAL: ("clinical trial", "clinical trials"),
    EvidenceLevel.OBSERVATIONAL: ("observational study", "observational studies"),
    EvidenceLevel.REVIEW: ("review", "reviews"),
    EvidenceLevel.CASE_REPORT: ("case report", "case reports"),
    EvidenceLevel.OTHER: ("other publication", "other publications"),
}


def level_words(level: EvidenceLevel, count: int = 1) -> str:
    singular, plural = LEVEL_WORDS[level]
    return singular if count == 1 else plural


def with_article(phrase: str) -> str:
    return f"{'an' if phrase[:1].lower() in 'aeiou' else 'a'} {phrase}"


def level_label(level: EvidenceLevel) -> str:
    """Capitalised, for the line above each item."""
    words = level_words(level)
    return words[:1].upper() + words[1:]
