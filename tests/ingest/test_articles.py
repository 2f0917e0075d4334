"""Parsing efetch XML: NCBI's own responses, the fake's, and a DTD newer than biopython's."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from Bio.Entrez import Parser

from pubwatch_ingest.articles import Article, parse_efetch_xml, use_dtd_cache
from pubwatch_shared.events import EvidenceLevel
from tests.conftest import reference_file
from tests.fakes.pubmed_xml import AbstractSection, efetch_xml, make_article


def _parse(name: str) -> list[Article]:
    return parse_efetch_xml(reference_file("fixtures", "ncbi", name).read_bytes())


def test_real_record_with_labelled_sections_and_inline_markup() -> None:
    (article,) = _parse("pubmed4.xml")
    assert article.pmid == "27797938"
    assert article.title.startswith("Leucocyte telomere length, genetic variants at the TERT gene")
    assert "<" not in article.title
    assert article.doi == "10.1136/gutjnl-2016-312510"
    assert article.journal == "Gut"
    assert article.published == "2017-06"
    assert article.author_count == 22
    assert article.authors[0] == "Bao Y"
    assert "Observational Study" in article.publication_types
    assert article.evidence_level is EvidenceLevel.OBSERVATIONAL
    assert [s.label for s in article.abstract] == ["OBJECTIVE", "DESIGN", "RESULTS", "CONCLUSIONS"]
    results = article.abstract[2].text
    assert "p_(trend)=0.048" in results
    assert "<sub>" not in results
    # Labelled CONCLUSIONS without an NlmCategory: the label decides.
    assert article.summary == (
        "Prediagnostic leucocyte telomere length and genetic variants at the TERT gene region "
        "were associated with risk of pancreatic cancer."
    )
    assert ("CommentIn", "27920200") in article.comments_corrections
    assert all(ref != "Cites" for ref, _ in article.comments_corrections)
    assert "Adenocarcinoma" in article.mesh_headings


def test_real_record_with_nlm_categories() -> None:
    (article,) = _parse("pubmed5.xml")
    assert article.pmid == "28775130"
    assert article.doi == "10.1136/oemed-2017-104431"
    assert [s.category for s in article.abstract] == [
        "OBJECTIVE",
        "METHODS",
        "RESULTS",
        "CONCLUSIONS",
    ]
    assert article.summary.startswith("Our results suggest that long-term exposure to aldrin")
    assert article.evidence_level is EvidenceLevel.OTHER


def test_real_records_in_one_set() -> None:
    first, second = _parse("pubmed1.xml")
    assert (first.pmid, first.published, first.evidence_level) == (
        "12091962",
        "1990",
        EvidenceLevel.REVIEW,
    )
    assert first.doi is None
    # No abstract: the summary is the title.
    assert first.summary == "The treatment of AIDS behind the walls of correctional facilities."
    assert (second.pmid, second.published) == ("9997", "1976-09-28")
    assert second.doi == "10.1016/0005-2795(76)90109-4"
    pmids = [a.pmid for a in _parse("pubmed2.xml")]
    assert pmids == ["11748933", "11700088"]


def test_fake_record_round_trips() -> None:
    fake = make_article(
        "4242",
        title="Avapritinib in <i>KIT</i> D816V-positive disease (P < 0.001).",
        publication_types=["Journal Article", "Randomized Controlled Trial"],
        abstract=[
            AbstractSection("Adults took part.", "METHODS", "METHODS"),
            AbstractSection("It worked. It was safe.", "CONCLUSIONS", "CONCLUSIONS"),
        ],
        doi="10.1000/x<1>",
    )
    (article,) = parse_efetch_xml(efetch_xml([fake]))
    assert article.title == "Avapritinib in KIT D816V-positive disease (P < 0.001)."
    assert article.doi == "10.1000/x<1>"
    assert article.evidence_level is EvidenceLevel.RCT
    assert article.summary == "It worked. It was safe."
    assert Article.from_json(article.to_json()) == article


@pytest.fixture
def dtd_cache(tmp_path: Path):
    saved = Parser.DataHandler.directory
    yield tmp_path / "dtd"
    Parser.DataHandler.directory = saved


def test_newer_dtd_is_read_from_the_cache_folder(dtd_cache: Path) -> None:
    """NCBI's pubmed_260101.dtd is not in biopython 1.88; a copy in the cache makes it work."""
    body = efetch_xml([make_article("777", title="Cached DTD works.")], dtd="pubmed_260101")
    assert b"pubmed_260101.dtd" in body
    use_dtd_cache(dtd_cache)
    shipped = Path(Parser.DataHandler.global_dtd_dir)
    assert not (shipped / "pubmed_260101.dtd").exists(), "biopython ships it now: test moot"
    local = Path(Parser.DataHandler.local_dtd_dir)
    assert local.is_relative_to(dtd_cache)
    shutil.copy(shipped / "pubmed_250101.dtd", local / "pubmed_260101.dtd")
    (article,) = parse_efetch_xml(body)
    assert (article.pmid, article.title) == ("777", "Cached DTD works.")
