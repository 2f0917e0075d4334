"""A short plain-text summary of an article, made only of the article's own sentences.

Where it comes from, in order: the conclusions section of a structured abstract (by its
``NlmCategory``, else by its ``Label``), else the last sentences of the abstract, else the
title. It is cut at a sentence boundary to at most :data:`SUMMARY_MAX_CHARS`; only a single
sentence longer than that is cut at a word boundary and marked with an ellipsis.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

SUMMARY_MAX_CHARS = 280
ELLIPSIS = "…"

# Labels that mean "conclusions" when a section has no NlmCategory (e.g. The Lancet's
# INTERPRETATION, JAMA's CONCLUSIONS AND RELEVANCE).
_CONCLUSION_LABEL = re.compile(r"conclusion|interpretation", re.IGNORECASE)
# A sentence ends at . ! or ? followed by space and a capital, digit or opening bracket.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9])")
# Abbreviations that end in a full stop but do not end a sentence.
_ABBREVIATIONS = ("e.g.", "i.e.", "et al.", "vs.", "Fig.", "approx.", "cf.", "Dr.", "No.", "ca.")


@dataclass(frozen=True)
class Section:
    """One part of an abstract: its free-text label, NCBI's category and its text."""

    text: str
    label: str = ""
    category: str = ""


def split_sentences(text: str) -> list[str]:
    pieces = _SENTENCE_END.split(" ".join(text.split()))
    sentences: list[str] = []
    for piece in pieces:
        if sentences and sentences[-1].endswith(_ABBREVIATIONS):
            sentences[-1] = f"{sentences[-1]} {piece}"
        else:
            sentences.append(piece)
    return [s for s in sentences if s]


def _cut_at_word(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - len(ELLIPSIS)]
    if " " in cut:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:") + ELLIPSIS


def first_sentences(text: str, max_chars: int = SUMMARY_MAX_CHARS) -> str:
    """As many whole sentences from the start of ``text`` as fit in ``max_chars``."""
    sentences = split_sentences(text)
    if not sentences:
        return ""
    kept: list[str] = []
    for sentence in sentences:
        candidate = " ".join([*kept, sentence])
        if len(candidate) > max_chars:
            break
        kept.append(sentence)
    return " ".join(kept) if kept else _cut_at_word(sentences[0], max_chars)


def last_sentences(text: str, max_chars: int = SUMMARY_MAX_CHARS) -> str:
    """As many whole sentences from the end of ``text`` as fit in ``max_chars``."""
    sentences = split_sentences(text)
    if not sentences:
        return ""
    kept: list[str] = []
    for sentence in reversed(sentences):
        candidate = " ".join([sentence, *kept])
        if len(candidate) > max_chars:
            break
        kept.insert(0, sentence)
    return " ".join(kept) if kept else _cut_at_word(sentences[-1], max_chars)


def conclusions(sections: Sequence[Section]) -> str:
    """The text of the conclusions section(s), or '' when the abstract has none."""
    by_category = [s.text for s in sections if s.category.upper() == "CONCLUSIONS"]
    if by_category:
        return " ".join(by_category)
    by_label = [s.text for s in sections if not s.category and _CONCLUSION_LABEL.search(s.label)]
    return " ".join(by_label)


def summarize(title: str, sections: Sequence[Section], max_chars: int = SUMMARY_MAX_CHARS) -> str:
    """The summary of an article with ``title`` and abstract ``sections``."""
    conclusion = conclusions(sections)
    if conclusion.strip():
        return first_sentences(conclusion, max_chars)
    abstract = " ".join(s.text for s in sections if s.text.strip())
    if abstract.strip():
        return last_sentences(abstract, max_chars)
    return _cut_at_word(" ".join(title.split()), max_chars)
