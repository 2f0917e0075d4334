"""PubMed records (efetch XML) read into :class:`Article`.

Parsing is ``Bio.Entrez.read`` with ``escape=True``, so every text field is an escaped XML
fragment that :func:`pubwatch_ingest.markup.clean_text` turns into plain text. NCBI moves
to a new DTD each year (``pubmed_260101.dtd``...) before biopython ships it:
:func:`use_dtd_cache` points biopython at a writable folder where such DTDs are kept (it
downloads a missing one from NCBI once; an operator can also place it there by hand).
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from Bio import Entrez

from pubwatch_ingest.evidence import RETRACTED_TYPE, evidence_level, is_notice_only
from pubwatch_ingest.markup import clean_text
from pubwatch_ingest.summary import Section, summarize
from pubwatch_shared.events import EvidenceLevel

MAX_AUTHORS = 3
_MONTHS = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
        start=1,
    )
}


def use_dtd_cache(directory: Path) -> None:
    """Make ``Entrez.read`` look for (and save) DTDs it does not ship in ``directory``."""
    from Bio.Entrez import Parser

    directory.mkdir(parents=True, exist_ok=True)
    Entrez.local_cache = str(directory)  # type: ignore[assignment]
    # biopython reads ``Entrez.local_cache`` only when its parser module is first imported;
    # setting the parser's directory property applies it whenever this runs.
    Parser.DataHandler.directory = str(directory)


def read_xml(body: bytes) -> Any:
    """``Entrez.read`` on a response body: markup kept as escaped XML, unknown tags skipped."""
    return Entrez.read(  # type: ignore[no-untyped-call]
        io.BytesIO(body), validate=False, escape=True
    )


@dataclass(frozen=True)
class Article:
    pmid: str
    title: str
    journal: str | None = None
    doi: str | None = None
    published: str | None = None  # YYYY, YYYY-MM or YYYY-MM-DD
    authors: list[str] = field(default_factory=list)  # the first MAX_AUTHORS
    author_count: int = 0
    publication_types: list[str] = field(default_factory=list)
    mesh_headings: list[str] = field(default_factory=list)
    abstract: list[Section] = field(default_factory=list)
    # (RefType, PMID) pairs such as ("RetractionIn", "123"), ("ErratumIn", "456").
    comments_corrections: list[tuple[str, str]] = field(default_factory=list)

    @property
    def evidence_level(self) -> EvidenceLevel:
        return evidence_level(self.publication_types)

    @property
    def is_notice_only(self) -> bool:
        return is_notice_only(self.publication_types)

    @property
    def is_retracted(self) -> bool:
        return RETRACTED_TYPE in self.publication_types or any(
            ref == "RetractionIn" for ref, _ in self.comments_corrections
        )

    @property
    def summary(self) -> str:
        return summarize(self.title, self.abstract)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Article:
        data = json.loads(raw)
        data["abstract"] = [Section(**section) for section in data["abstract"]]
        data["comments_corrections"] = [tuple(pair) for pair in data["comments_corrections"]]
        return cls(**data)


def _text(value: object) -> str:
    return clean_text(str(value)) if value is not None else ""


def _attributes(value: object) -> Mapping[str, str]:
    attributes = getattr(value, "attributes", None)
    return attributes if isinstance(attributes, Mapping) else {}


def _month_number(month: str) -> int | None:
    month = month.strip().lower()
    if month.isdigit():
        number = int(month)
        return number if 1 <= number <= 12 else None
    return _MONTHS.get(month[:3])


def partial_date(parts: Mapping[str, Any]) -> str | None:
    """YYYY, YYYY-MM or YYYY-MM-DD from a PubDate-like element, as precise as it is."""
    year = str(parts.get("Year", "")).strip()
    if not (len(year) == 4 and year.isdigit()):
        medline = str(parts.get("MedlineDate", "")).split()
        # MedlineDate looks like "1998 Dec-1999 Jan" or "2000 Spring": keep what is certain.
        if not medline or not (len(medline[0]) == 4 and medline[0].isdigit()):
            return None
        year = medline[0]
        month = _month_number(medline[1].split("-")[0]) if len(medline) > 1 else None
        return f"{year}-{month:02d}" if month else year
    month = _month_number(str(parts.get("Month", "")))
    if month is None:
        return year
    day = str(parts.get("Day", "")).strip()
    if day.isdigit() and 1 <= int(day) <= 31:
        return f"{year}-{month:02d}-{int(day):02d}"
    return f"{year}-{month:02d}"


def _author_name(author: Mapping[str, Any]) -> str | None:
    if "CollectiveName" in author:
        return _text(author["CollectiveName"]) or None
    last = _text(author.get("LastName"))
    initials = _text(author.get("Initials"))
    return f"{last} {initials}".strip() or None


def _authors(author_list: Sequence[Mapping[str, Any]]) -> tuple[list[str], int]:
    names = [name for name in (_author_name(a) for a in author_list) if name]
    return names[:MAX_AUTHORS], len(names)


def _abstract(abstract: Mapping[str, Any] | None) -> list[Section]:
    if not abstract:
        return []
    sections = []
    for part in abstract.get("AbstractText", []):
        attributes = _attributes(part)
        text = _text(part)
        if text:
            sections.append(
                Section(
                    text=text,
                    label=_text(attributes.get("Label", "")),
                    category=str(attributes.get("NlmCategory", "")).strip(),
                )
            )
    return sections


def _doi(article: Mapping[str, Any], pubmed_data: Mapping[str, Any]) -> str | None:
    for location in article.get("ELocationID", []):
        if _attributes(location).get("EIdType") == "doi" and _text(location):
            return _text(location)
    for article_id in pubmed_data.get("ArticleIdList", []):
        if _attributes(article_id).get("IdType") == "doi" and _text(article_id):
            return _text(article_id)
    return None


def _comments_corrections(citation: Mapping[str, Any]) -> list[tuple[str, str]]:
    pairs = []
    for item in citation.get("CommentsCorrectionsList", []):
        ref_type = _attributes(item).get("RefType", "")
        pmid = _text(item.get("PMID", "")) if isinstance(item, Mapping) else ""
        # "Cites" is the reference list: long, and says nothing about this record's status.
        if ref_type and ref_type != "Cites":
            pairs.append((ref_type, pmid))
    return pairs


def _title(article: Mapping[str, Any], pmid: str) -> str:
    title = _text(article.get("ArticleTitle"))
    if not title or title.strip("[]. ").lower() == "not available":
        title = _text(article.get("VernacularTitle"))
    return title or f"PubMed record {pmid}"


def parse_pubmed_article(record: Mapping[str, Any]) -> Article:
    citation = record["MedlineCitation"]
    pubmed_data = record.get("PubmedData", {})
    article = citation["Article"]
    pmid = _text(citation["PMID"])
    journal = article.get("Journal", {})
    published = partial_date(journal.get("JournalIssue", {}).get("PubDate", {}))
    if published is None:
        for electronic in article.get("ArticleDate", []):
            published = partial_date(electronic)
            break
    authors, author_count = _authors(article.get("AuthorList", []))
    return Article(
        pmid=pmid,
        title=_title(article, pmid),
        journal=_text(journal.get("Title")) or _text(journal.get("ISOAbbreviation")) or None,
        doi=_doi(article, pubmed_data),
        published=published,
        authors=authors,
        author_count=author_count,
        publication_types=[_text(kind) for kind in article.get("PublicationTypeList", [])],
        mesh_headings=[
            _text(heading["DescriptorName"])
            for heading in citation.get("MeshHeadingList", [])
            if "DescriptorName" in heading
        ],
        abstract=_abstract(article.get("Abstract")),
        comments_corrections=_comments_corrections(citation),
    )


def parse_book_article(record: Mapping[str, Any]) -> Article:
    """A PubMed book record (e.g. GeneReviews): fewer fields, same shape for the rest."""
    document = record["BookDocument"]
    book = document.get("Book", {})
    pmid = _text(document["PMID"])
    title = _text(document.get("ArticleTitle")) or _text(book.get("BookTitle"))
    authors, author_count = _authors(
        [a for authors in document.get("AuthorList", []) for a in authors]
    )
    return Article(
        pmid=pmid,
        title=title or f"PubMed record {pmid}",
        journal=_text(book.get("BookTitle")) or None,
        published=partial_date(book.get("PubDate", {})),
        authors=authors,
        author_count=author_count,
        publication_types=[_text(kind) for kind in document.get("PublicationType", [])],
        abstract=_abstract(document.get("Abstract")),
    )


def parse_efetch(record: Mapping[str, Any]) -> list[Article]:
    """Articles from an ``Entrez.read`` of an efetch ``PubmedArticleSet``."""
    articles = [parse_pubmed_article(item) for item in record.get("PubmedArticle", [])]
    articles += [parse_book_article(item) for item in record.get("PubmedBookArticle", [])]
    return articles


def parse_efetch_xml(body: bytes) -> list[Article]:
    return parse_efetch(read_xml(body))
