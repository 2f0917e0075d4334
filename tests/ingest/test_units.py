"""Unit tests of the small pure pieces: markup, summaries, evidence levels, dates."""

from __future__ import annotations

import pytest

from pubwatch_ingest.articles import partial_date
from pubwatch_ingest.evidence import evidence_level, is_notice_only
from pubwatch_ingest.markup import clean_text
from pubwatch_ingest.summary import SUMMARY_MAX_CHARS, Section, split_sentences, summarize
from pubwatch_shared.events import EvidenceLevel


@pytest.mark.parametrize(
    ("fragment", "expected"),
    [
        ("Plain   text\nhere", "Plain text here"),
        ("The <i>KIT</i> D816V mutation", "The KIT D816V mutation"),
        ("r<sup>2</sup>&lt;0.25 and P &gt; 0.05", "r²<0.25 and P > 0.05"),
        ("CD4<sup>+</sup> and CO<sub>2</sub>, 10<sup>-3</sup>", "CD4⁺ and CO₂, 10⁻³"),
        ("p<sub>trend</sub>=0.04", "p_(trend)=0.04"),
        ("Tom &amp; Jerry <b>bold</b> <u>under</u>", "Tom & Jerry bold under"),
        (
            'Effect of <math xmlns="http://www.w3.org/1998/Math/MathML"><msup><mi>x</mi>'
            "<mn>2</mn></msup><mo>+</mo><mfrac><mn>1</mn><mi>n</mi></mfrac></math> on y",
            "Effect of x²+1/n on y",
        ),
        (
            '<math xmlns="http://www.w3.org/1998/Math/MathML"><semantics><mi>\u03b1</mi>'
            "<annotation>\\alpha</annotation></semantics></math>-tryptase",
            "\u03b1-tryptase",
        ),
    ],
)
def test_clean_text_reduces_markup_to_plain_text(fragment: str, expected: str) -> None:
    assert clean_text(fragment) == expected


def test_clean_text_keeps_unescaped_text_readable() -> None:
    assert clean_text("a < b & c") == "a < b & c"


CONCLUSION = (
    "Avapritinib reduced symptoms compared with placebo. "
    "Longer follow-up is needed to judge safety."
)


def test_summary_prefers_the_conclusions_category() -> None:
    sections = [
        Section("We studied 200 adults.", "METHODS", "METHODS"),
        Section("Symptoms improved by 30%.", "RESULTS", "RESULTS"),
        Section(CONCLUSION, "INTERPRETATION", "CONCLUSIONS"),
    ]
    assert summarize("Title.", sections) == CONCLUSION


def test_summary_falls_back_to_the_label_without_category() -> None:
    sections = [
        Section("Background sentence.", "BACKGROUND"),
        Section(CONCLUSION, "CONCLUSIONS AND RELEVANCE"),
    ]
    assert summarize("Title.", sections) == CONCLUSION


def test_summary_of_unstructured_abstract_is_its_last_sentences() -> None:
    sentences = [
        f"Sentence number {n} says something about the study design here." for n in range(10)
    ]
    summary = summarize("Title.", [Section(" ".join(sentences))])
    assert len(summary) <= SUMMARY_MAX_CHARS
    assert summary.endswith(sentences[-1])
    kept = split_sentences(summary)
    assert kept == sentences[-len(kept) :]
    assert len(kept) >= 2


def test_summary_without_abstract_is_the_title() -> None:
    assert summarize("A case of indolent systemic mastocytosis.", []) == (
        "A case of indolent systemic mastocytosis."
    )


def test_summary_cuts_at_a_sentence_boundary_and_invents_nothing() -> None:
    long_conclusion = " ".join(
        f"Finding {n} was consistent across e.g. older adults, i.e. those aged 75 or more."
        for n in range(8)
    )
    summary = summarize("T.", [Section(long_conclusion, "CONCLUSIONS", "CONCLUSIONS")])
    assert len(summary) <= SUMMARY_MAX_CHARS
    assert long_conclusion.startswith(summary)
    assert summary.endswith("more.")


def test_summary_of_one_overlong_sentence_is_cut_at_a_word() -> None:
    sentence = "This " + "very " * 100 + "long sentence ends."
    summary = summarize("T.", [Section(sentence, "CONCLUSIONS", "CONCLUSIONS")])
    assert len(summary) <= SUMMARY_MAX_CHARS
    assert summary.endswith("…")
    assert sentence.startswith(summary[:-1])


@pytest.mark.parametrize(
    ("types", "level"),
    [
        (["Journal Article", "Practice Guideline"], EvidenceLevel.GUIDELINE),
        (["Journal Article", "Meta-Analysis"], EvidenceLevel.SYSTEMATIC_REVIEW),
        (["Systematic Review", "Randomized Controlled Trial"], EvidenceLevel.SYSTEMATIC_REVIEW),
        (["Randomized Controlled Trial", "Multicenter Study"], EvidenceLevel.RCT),
        (["Clinical Trial, Phase II"], EvidenceLevel.CLINICAL_TRIAL),
        (["Observational Study"], EvidenceLevel.OBSERVATIONAL),
        (["Journal Article", "Review"], EvidenceLevel.REVIEW),
        (["Case Reports"], EvidenceLevel.CASE_REPORT),
        (["Editorial"], EvidenceLevel.OTHER),
        (["Journal Article"], EvidenceLevel.OTHER),
        ([], EvidenceLevel.OTHER),
    ],
)
def test_evidence_level_is_the_strongest_type(types: list[str], level: EvidenceLevel) -> None:
    assert evidence_level(types) is level


def test_errata_and_comments_are_notices_but_a_commented_trial_is_not() -> None:
    assert is_notice_only(["Published Erratum"])
    assert is_notice_only(["Letter", "Comment"])
    assert is_notice_only(["Retraction of Publication"])
    assert not is_notice_only(["Journal Article"])
    assert not is_notice_only(["Randomized Controlled Trial", "Comment"])


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        ({"Year": "2024", "Month": "Mar", "Day": "5"}, "2024-03-05"),
        ({"Year": "2024", "Month": "11"}, "2024-11"),
        ({"Year": "1990", "Season": "Spring"}, "1990"),
        ({"MedlineDate": "1998 Dec-1999 Jan"}, "1998-12"),
        ({"MedlineDate": "2000 Spring"}, "2000"),
        ({}, None),
    ],
)
def test_publication_date_is_as_precise_as_pubmed(
    parts: dict[str, str], expected: str | None
) -> None:
    assert partial_date(parts) == expected
