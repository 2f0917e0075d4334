"""The fake E-utilities server answers like NCBI: same XML, same limits, chosen failures."""

from __future__ import annotations

import io
import json
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import IO, Any, cast
from xml.parsers import expat

import httpx
import pytest
from Bio import Entrez
from Bio.Entrez.Parser import DataHandler

from tests.fakes import eutils
from tests.fakes.eutils import FakeEutils, populate_synthetic
from tests.fakes.http_thread import ServedApp
from tests.fakes.pubmed_xml import (
    AbstractSection,
    FakeArticle,
    efetch_xml,
    esearch_xml,
    make_article,
    make_retraction_notice,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
# Real NCBI responses, kept beside the checkout (not in the repo).
NCBI_FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "ncbi"
BIOPYTHON_DTDS = Path(DataHandler.global_dtd_dir)
IDENT = {"tool": "pubwatch-tests", "email": "tests@example.org"}
TODAY = date(2025, 3, 20)


def ncbi_fixture(name: str) -> Path:
    path = NCBI_FIXTURES / name
    if not path.exists():
        pytest.skip(f"real NCBI response {path} is absent (../shared sits beside the checkout)")
    return path


# biopython has no type hints; this names what Entrez.read takes and gives.
_entrez_read = cast(Callable[[IO[bytes]], Any], Entrez.read)


def read(content: bytes) -> Any:
    return _entrez_read(io.BytesIO(content))


@pytest.fixture
def fake() -> Iterator[FakeEutils]:
    # Most tests send bursts of requests; the rate limit has tests of its own.
    with FakeEutils(rate_limit=False) as server:
        yield server


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as http:
        yield http


def esearch(client: httpx.Client, fake: FakeEutils, **params: Any) -> httpx.Response:
    return client.get(fake.url + "esearch.fcgi", params={"db": "pubmed", **IDENT, **params})


def efetch(client: httpx.Client, fake: FakeEutils, ids: list[str], **params: Any) -> httpx.Response:
    query = {"db": "pubmed", "retmode": "xml", "id": ",".join(ids), **IDENT, **params}
    return client.get(fake.url + "efetch.fcgi", params=query)


def add_dated(fake: FakeEutils, term: str, n: int, first_pmid: int = 1000) -> list[FakeArticle]:
    """``n`` articles, one entered per day going back from TODAY."""
    articles = [
        make_article(first_pmid + i, entry_date=TODAY - timedelta(days=i)) for i in range(n)
    ]
    fake.add_articles(articles, [term])
    return articles


# -- ServedApp ---------------------------------------------------------------------------------


def test_served_app_serves_and_restarts_on_the_same_port(client: httpx.Client) -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hi")

    served = ServedApp(Starlette(routes=[Route("/", hello)]))
    with served:
        url = served.url
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        assert client.get(url + "/").text == "hi"
    with pytest.raises(httpx.ConnectError):
        client.get(url + "/")
    assert served.start() == url
    assert client.get(url + "/").text == "hi"
    served.stop()


# -- esearch -----------------------------------------------------------------------------------


def test_esearch_pages_newest_first(fake: FakeEutils, client: httpx.Client) -> None:
    articles = add_dated(fake, "asthma", 30)
    response = esearch(client, fake, term="asthma")
    assert response.headers["content-type"] == "text/xml; charset=UTF-8"
    first = read(response.content)
    assert (first["Count"], first["RetMax"], first["RetStart"]) == ("30", "20", "0")
    assert first["IdList"] == [a.pmid for a in articles[:20]]  # entered newest first
    second = read(esearch(client, fake, term=" asthma ", retstart=20, retmax=20).content)
    assert (second["Count"], second["RetMax"], second["RetStart"]) == ("30", "10", "20")
    assert second["IdList"] == [a.pmid for a in articles[20:]]
    assert read(esearch(client, fake, term="asthma", rettype="count").content)["Count"] == "30"


def test_esearch_filters_on_entry_date_inclusively(fake: FakeEutils, client: httpx.Client) -> None:
    articles = add_dated(fake, "asthma", 10)  # entry dates TODAY, TODAY-1, ... TODAY-9
    window = {"datetype": "edat", "mindate": "2025/03/15", "maxdate": "2025/03/18"}
    result = read(esearch(client, fake, term="asthma", **window).content)
    assert result["Count"] == "4"
    assert result["IdList"] == [a.pmid for a in articles[2:6]]
    whole_month = {"datetype": "edat", "mindate": "2025/03", "maxdate": "2025/03"}
    assert read(esearch(client, fake, term="asthma", **whole_month).content)["Count"] == "10"
    next_year = {"datetype": "edat", "mindate": "2026/01/01", "maxdate": "2026/12/31"}
    empty = read(esearch(client, fake, term="asthma", **next_year).content)
    assert (empty["Count"], empty["IdList"]) == ("0", [])
    # Without datetype NCBI filters on the publication date (here "2025 Mar", i.e. March 1st).
    undated = {"mindate": "2025/03/15", "maxdate": "2025/03/18"}
    assert read(esearch(client, fake, term="asthma", **undated).content)["Count"] == "0"
    march_first = {"mindate": "2025/03/01", "maxdate": "2025/03/01"}
    assert read(esearch(client, fake, term="asthma", **march_first).content)["Count"] == "10"


def test_esearch_mdat_window_finds_a_retraction(fake: FakeEutils, client: httpx.Client) -> None:
    articles = add_dated(fake, "asthma", 5)
    retracted = articles[3].retracted("9999", on=TODAY + timedelta(days=10))
    fake.update_article(retracted)
    later = {"datetype": "mdat", "mindate": "2025/03/25", "maxdate": "2025/04/30"}
    assert read(esearch(client, fake, term="asthma", **later).content)["IdList"] == [retracted.pmid]
    by_mdat = read(esearch(client, fake, term="asthma", datetype="mdat").content)["IdList"]
    assert by_mdat[0] == retracted.pmid  # newest modification first
    only_retracted = 'asthma AND "Retracted Publication"[pt]'
    assert read(esearch(client, fake, term=only_retracted).content)["IdList"] == [retracted.pmid]
    wrapped = '(asthma) AND "Retracted Publication"[pt]'
    assert read(esearch(client, fake, term=wrapped).content)["Count"] == "1"


def test_esearch_errors_look_like_ncbi(fake: FakeEutils, client: httpx.Client) -> None:
    add_dated(fake, "asthma", 2)
    missing_term = esearch(client, fake)
    assert missing_term.status_code == 200
    with pytest.raises(RuntimeError, match="Empty term and query_key - nothing todo"):
        read(missing_term.content)
    with pytest.raises(RuntimeError, match="mindate and maxdate"):
        read(esearch(client, fake, term="asthma", mindate="2025/01/01").content)
    dashed = {"datetype": "edat", "mindate": "2025-01-01", "maxdate": "2025-02-01"}
    with pytest.raises(RuntimeError, match="Invalid date format"):
        read(esearch(client, fake, term="asthma", **dashed).content)
    unknown = read(esearch(client, fake, term="no such topic").content)
    assert (unknown["Count"], unknown["IdList"]) == ("0", [])
    assert unknown["ErrorList"]["PhraseNotFound"] == ["no such topic"]


def test_esearch_only_reaches_the_first_hits(
    fake: FakeEutils, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(eutils, "PUBMED_HIT_WINDOW", 10)  # PubMed's is 10,000
    add_dated(fake, "asthma", 15)
    tail = read(esearch(client, fake, term="asthma", retstart=8, retmax=5).content)
    assert (tail["Count"], len(tail["IdList"])) == ("15", 2)
    with pytest.raises(RuntimeError, match="can only retrieve the first"):
        read(esearch(client, fake, term="asthma", retstart=10).content)


def test_esearch_accepts_a_form_post(fake: FakeEutils, client: httpx.Client) -> None:
    add_dated(fake, "heart failure", 3)
    response = client.post(
        fake.url + "esearch.fcgi", data={"db": "pubmed", "term": "heart failure", **IDENT}
    )
    assert read(response.content)["Count"] == "3"
    assert fake.requests[-1].method == "POST"
    assert fake.requests[-1].params["term"] == "heart failure"


# -- efetch ------------------------------------------------------------------------------------


def test_efetch_parses_into_what_ingest_reads(fake: FakeEutils, client: httpx.Client) -> None:
    article = FakeArticle(
        pmid="4242",
        title="Effect of <i>Staphylococcus aureus</i> on CD4<sup>+</sup> cells, P < 0.05",
        abstract=[
            AbstractSection("Why & how.", "BACKGROUND", "BACKGROUND"),
            AbstractSection("HbA<sub>1c</sub> fell.", "FINDINGS", "RESULTS"),
            AbstractSection("Labelled only.", "Take-home"),
        ],
        publication_types=["Journal Article", "Randomized Controlled Trial"],
        doi="10.1000/xyz.4242",
        entry_date=TODAY,
        modified_date=TODAY,
        authors=[("García", "Ana María")],
    ).retracted("5151", on=TODAY + timedelta(days=3))
    fake.add_article(article, ["staph"])
    fake.add_article(make_retraction_notice("5151", article, TODAY + timedelta(days=3)), ["x"])

    response = efetch(client, fake, ["5151", "123", "4242"])
    assert response.headers["content-type"] == "text/xml; charset=UTF-8"
    assert b"<i>Staphylococcus aureus</i>" in response.content
    assert b"P &lt; 0.05" in response.content
    records = read(response.content)["PubmedArticle"]
    assert [r["MedlineCitation"]["PMID"] for r in records] == ["5151", "4242"]  # asked order

    notice, record = records
    citation = record["MedlineCitation"]
    parsed = citation["Article"]
    assert parsed["ArticleTitle"] == article.title  # inline markup kept as markup
    sections = parsed["Abstract"]["AbstractText"]
    assert [str(s) for s in sections] == ["Why & how.", "HbA<sub>1c</sub> fell.", "Labelled only."]
    assert [s.attributes.get("NlmCategory") for s in sections] == ["BACKGROUND", "RESULTS", None]
    assert [s.attributes["Label"] for s in sections] == ["BACKGROUND", "FINDINGS", "Take-home"]
    assert list(parsed["PublicationTypeList"]) == [
        "Journal Article",
        "Randomized Controlled Trial",
        "Retracted Publication",
    ]
    doi = parsed["ELocationID"][0]
    assert (str(doi), doi.attributes["EIdType"]) == ("10.1000/xyz.4242", "doi")
    ids = {i.attributes["IdType"]: str(i) for i in record["PubmedData"]["ArticleIdList"]}
    assert ids == {"pubmed": "4242", "doi": "10.1000/xyz.4242"}
    (ref,) = citation["CommentsCorrectionsList"]
    assert (ref.attributes["RefType"], ref["PMID"]) == ("RetractionIn", "5151")
    assert citation["DateRevised"] == {"Year": "2025", "Month": "03", "Day": "23"}
    history = {d.attributes["PubStatus"]: d for d in record["PubmedData"]["History"]}
    assert (history["entrez"]["Year"], history["entrez"]["Month"], history["entrez"]["Day"]) == (
        "2025",
        "3",
        "20",
    )
    assert parsed["AuthorList"][0]["ForeName"] == "Ana María"
    assert parsed["AuthorList"][0]["Initials"] == "AM"
    assert list(notice["MedlineCitation"]["Article"]["PublicationTypeList"]) == [
        "Retraction of Publication"
    ]
    notice_ref = notice["MedlineCitation"]["CommentsCorrectionsList"][0]
    assert (notice_ref.attributes["RefType"], notice_ref["PMID"]) == ("RetractionOf", "4242")


def test_efetch_by_post_with_many_ids(fake: FakeEutils, client: httpx.Client) -> None:
    articles = add_dated(fake, "asthma", 250)
    ids = [a.pmid for a in reversed(articles)]
    response = client.post(
        fake.url + "efetch.fcgi",
        data={"db": "pubmed", "retmode": "xml", "id": ",".join(ids), **IDENT},
    )
    records = read(response.content)["PubmedArticle"]
    assert [r["MedlineCitation"]["PMID"] for r in records] == ids
    assert (fake.requests[-1].method, fake.requests[-1].n_ids) == ("POST", 250)


def test_efetch_refuses_too_many_or_no_ids(fake: FakeEutils, client: httpx.Client) -> None:
    too_many = ",".join(str(10_000_000 + i) for i in range(10_001))
    response = client.post(fake.url + "efetch.fcgi", data={"db": "pubmed", "id": too_many, **IDENT})
    assert response.status_code == 400
    assert b"Too many UIDs" in response.content
    assert efetch(client, fake, []).status_code == 400
    nothing_known = read(efetch(client, fake, ["1", "2"]).content)
    assert nothing_known["PubmedArticle"] == []


def test_efetch_xml_follows_the_dtd_element_order() -> None:
    validator = DtdValidator(BIOPYTHON_DTDS / "pubmed_250101.dtd")
    article = make_article(77, entry_date=TODAY).retracted("78", on=TODAY)
    articles = [
        article,
        make_retraction_notice("78", article, TODAY),
        make_article(79, structured=False, pages=None, doi=None, authors=[], mesh_headings=[]),
        FakeArticle("80", "Bare", status="Publisher", doi="10.1/80", pub_month="Mar", pub_day=2),
    ]
    document = efetch_xml(articles)
    assert validator.errors(document) == []
    # The check has teeth: NCBI's order puts CommentsCorrectionsList before MeshHeadingList.
    swapped = re.sub(
        rb"(<CommentsCorrectionsList>.*?</CommentsCorrectionsList>)(<MeshHeadingList>.*?</MeshHeadingList>)",
        rb"\2\1",
        document,
        count=1,
    )
    assert any("MedlineCitation" in error for error in validator.errors(swapped))


def test_efetch_can_declare_the_2026_dtd(tmp_path: Path) -> None:
    document = efetch_xml([make_article(5)], dtd="pubmed_260101")
    assert document.splitlines()[1].decode() == (
        '<!DOCTYPE PubmedArticleSet PUBLIC "-//NLM//DTD PubMedArticle, 1st January 2026//EN" '
        '"https://dtd.nlm.nih.gov/ncbi/pubmed/out/pubmed_260101.dtd">'
    )
    # biopython 1.88 has no pubmed_260101.dtd; a client provides one in its DTD cache.
    previous = DataHandler.directory
    DataHandler.directory = str(tmp_path)
    try:
        shutil.copy(BIOPYTHON_DTDS / "pubmed_250101.dtd", DataHandler.local_dtd_dir)
        Path(DataHandler.local_dtd_dir, "pubmed_250101.dtd").rename(
            Path(DataHandler.local_dtd_dir, "pubmed_260101.dtd")
        )
        assert read(document)["PubmedArticle"][0]["MedlineCitation"]["PMID"] == "5"
    finally:
        DataHandler.directory = previous


# -- identification, rate limit ----------------------------------------------------------------


def test_tool_and_email_are_required_and_recorded(client: httpx.Client) -> None:
    with FakeEutils(rate_limit=False) as fake:
        anonymous = client.get(fake.url + "esearch.fcgi", params={"db": "pubmed", "term": "x"})
        assert anonymous.status_code == 400
        assert b"tool and email" in anonymous.content
        esearch(client, fake, term="x")
        assert [r.identified for r in fake.requests] == [False, True]
        assert fake.stats()["tools"] == ["pubwatch-tests"]
        assert fake.stats()["emails"] == ["tests@example.org"]


def test_rate_limit_without_key_answers_429_like_ncbi(client: httpx.Client) -> None:
    with FakeEutils() as fake:
        statuses = [esearch(client, fake, term="x").status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        refused = esearch(client, fake, term="x")
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/json"
        assert refused.json() == {
            "error": "API rate limit exceeded",
            "api-key": "127.0.0.1",
            "count": "5",
            "limit": "3",
        }
        assert (refused.headers["X-RateLimit-Limit"], refused.headers["X-RateLimit-Remaining"]) == (
            "3",
            "0",
        )
        assert fake.count(status=429) == 2
        assert fake.max_in_any_window(1.0) == 5
        assert fake.max_in_any_window(1.0, include_rejected=False) == 3
        time.sleep(1.05)  # the window slides on
        assert esearch(client, fake, term="x").status_code == 200


def test_rate_limit_with_a_valid_key_is_ten(client: httpx.Client) -> None:
    with FakeEutils(api_keys={"good-key"}) as fake:
        keyed = [esearch(client, fake, term="x", api_key="good-key").status_code for _ in range(11)]
        assert keyed == [200] * 10 + [429]
        refused = esearch(client, fake, term="x", api_key="good-key")
        assert refused.json()["api-key"] == "good-key"
        assert refused.json()["limit"] == "10"
        # An unknown key counts as none: the client IP's own limit of 3 applies.
        unknown = [esearch(client, fake, term="x", api_key="bad").status_code for _ in range(4)]
        assert unknown == [200, 200, 200, 429]
        assert fake.max_in_any_window(1.0, identity="good-key") == 12


def test_well_spaced_requests_are_never_refused(client: httpx.Client) -> None:
    with FakeEutils() as fake:
        for _ in range(5):
            assert esearch(client, fake, term="x").status_code == 200
            time.sleep(0.36)
        assert fake.max_in_any_window(1.0) <= 3


# -- faults ------------------------------------------------------------------------------------


def test_each_fault_kind(fake: FakeEutils, client: httpx.Client) -> None:
    add_dated(fake, "asthma", 3)
    for kind in ("429", "500", "502", "truncated", "empty"):
        fake.inject(kind)
    too_fast = esearch(client, fake, term="asthma")
    assert too_fast.status_code == 429
    assert too_fast.json()["error"] == "API rate limit exceeded"
    server_error = esearch(client, fake, term="asthma")
    assert server_error.status_code == 500
    assert server_error.headers["content-type"].startswith("text/html")
    assert esearch(client, fake, term="asthma").status_code == 502
    truncated = efetch(client, fake, ["1000", "1001"])
    assert truncated.status_code == 200
    assert truncated.headers["content-type"] == "text/xml; charset=UTF-8"
    assert not truncated.content.rstrip().endswith(b"</PubmedArticleSet>")
    with pytest.raises(Exception, match=r"(?i)(xml|incomplete|syntax|token|element)"):
        read(truncated.content)
    empty = efetch(client, fake, ["1000"])
    assert (empty.status_code, empty.content) == (200, b"")
    assert efetch(client, fake, ["1000"]).status_code == 200  # the queue is used up
    assert [r.fault for r in fake.requests] == ["429", "500", "502", "truncated", "empty", None]


def test_timeout_fault_hangs_without_blocking_the_server(client: httpx.Client) -> None:
    with FakeEutils(rate_limit=False, hang_s=0.4) as fake:
        fake.inject("timeout")
        with pytest.raises(httpx.ReadTimeout):
            client.get(fake.url + "esearch.fcgi", params={"term": "x", **IDENT}, timeout=0.1)
        assert fake.requests[-1].fault == "timeout"
        fake.inject("timeout")
        started = time.monotonic()
        late = esearch(client, fake, term="x")
        assert late.status_code == 200
        assert time.monotonic() - started >= 0.4

    fake = FakeEutils(rate_limit=False, hang_s=30.0)
    fake.start()
    fake.inject("timeout")
    hung: list[BaseException | int] = []

    def wait_for_hung_answer() -> None:
        try:
            with httpx.Client(timeout=20.0) as other:
                hung.append(esearch(other, fake, term="x").status_code)
        except httpx.HTTPError as error:
            hung.append(error)

    waiter = threading.Thread(target=wait_for_hung_answer)
    waiter.start()
    while fake.count() == 0:
        time.sleep(0.01)
    assert esearch(client, fake, term="x").status_code == 200  # answered meanwhile
    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 3.0
    waiter.join(5.0)
    assert not waiter.is_alive()
    assert len(hung) == 1


def test_fault_rate_is_a_seeded_fraction(fake: FakeEutils, client: httpx.Client) -> None:
    def run() -> list[str | None]:
        fake.reset_log()
        fake.fault_rate(0.3, ["500", "502"], seed=7)
        for _ in range(60):
            esearch(client, fake, term="x")
        fake.fault_rate(0.0, [])
        return [r.fault for r in fake.requests]

    first = run()
    assert first == run()  # same seed, same failures
    failed = [kind for kind in first if kind]
    assert 8 <= len(failed) <= 30
    assert set(failed) == {"500", "502"}
    assert fake.count(status=500) + fake.count(status=502) == len(failed)
    with pytest.raises(ValueError, match="fault kinds"):
        fake.inject("teapot")


# -- against NCBI's real responses -------------------------------------------------------------


def test_doctype_and_prolog_match_real_responses() -> None:
    for name in ("pubmed1.xml", "pubmed2.xml", "pubmed4.xml", "pubmed5.xml"):
        real = ncbi_fixture(name).read_bytes().splitlines()
        dtd = re.search(rb"/(pubmed_\d{6})\.dtd", real[1])
        assert dtd is not None
        fake = efetch_xml([make_article(1)], dtd=dtd.group(1).decode()).splitlines()
        assert fake[:2] == real[:2], name
    assert (
        efetch_xml([make_article(1)]).splitlines()[:2]
        == (ncbi_fixture("pubmed2.xml").read_bytes().splitlines()[:2])
    )
    real_search = ncbi_fixture("esearch1.xml").read_bytes().splitlines()
    assert esearch_xml(1, ["1"], 1, 0).splitlines()[:2] == real_search[:2]


def test_parsed_structure_matches_real_efetch() -> None:
    real = [read(ncbi_fixture(name).read_bytes()) for name in ("pubmed2.xml", "pubmed4.xml")]
    retracted = make_article(11, entry_date=TODAY).retracted("12", on=TODAY)
    fake = read(efetch_xml([make_article(10, entry_date=TODAY), retracted]))
    assert set(fake) == set(real[0]) == set(real[1])
    real_records = [record for parsed in real for record in parsed["PubmedArticle"]]

    def check(path: tuple[str, ...]) -> None:
        def at(record: Any) -> Any:
            for key in path:
                record = record[key]
            return record

        real_keys = [set(at(record)) for record in real_records]
        common, union = set.intersection(*real_keys), set.union(*real_keys)
        for record in fake["PubmedArticle"]:
            keys = set(at(record))
            assert common <= keys <= union, (path, keys - union, common - keys)

    check(())
    check(("MedlineCitation",))
    check(("MedlineCitation", "Article"))
    check(("MedlineCitation", "Article", "Journal"))
    check(("PubmedData",))
    # Same DTD as pubmed2.xml, so PubmedData carries exactly the same keys.
    assert set(fake["PubmedArticle"][0]["PubmedData"]) == set(
        real[0]["PubmedArticle"][0]["PubmedData"]
    )


def test_real_pubmed2_passes_the_dtd_check() -> None:
    # Shows the validator used on the fake's output accepts what NCBI really sends.
    validator = DtdValidator(BIOPYTHON_DTDS / "pubmed_250101.dtd")
    assert validator.errors(ncbi_fixture("pubmed2.xml").read_bytes()) == []


def test_parsed_structure_matches_real_esearch(fake: FakeEutils, client: httpx.Client) -> None:
    add_dated(fake, "asthma", 3)
    found = read(esearch(client, fake, term="asthma").content)
    assert set(found) == set(read(ncbi_fixture("esearch1.xml").read_bytes()))
    unknown = read(esearch(client, fake, term="abcXYZ").content)
    assert set(unknown) == set(read(ncbi_fixture("esearch8.xml").read_bytes()))


# -- synthetic data and the stand-alone process ------------------------------------------------


def test_synthetic_topics_share_the_asked_fraction() -> None:
    fake = FakeEutils()
    topics = populate_synthetic(fake, topics=4, per_topic=50, overlap=0.2, seed=3)
    assert sorted(topics) == ["topic-0", "topic-1", "topic-2", "topic-3"]
    for index in range(4):
        mine = set(topics[f"topic-{index}"])
        others = set().union(*(set(v) for k, v in topics.items() if k != f"topic-{index}"))
        assert len(mine) == 50
        assert len(mine & others) == 10
    assert populate_synthetic(FakeEutils(), 4, 50, 0.2, seed=3) == topics


def test_runs_as_its_own_process(tmp_path: Path) -> None:
    arguments = "--port 0 --synthetic 3 --per-topic 10 --overlap 0.2 --seed 1"
    command = [sys.executable, "-m", "tests.fakes.eutils", *arguments.split()]
    with (
        (tmp_path / "stderr.txt").open("w") as stderr,
        subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True
        ) as process,
    ):
        assert process.stdout is not None
        try:
            ready, _, _ = select.select([process.stdout], [], [], 20.0)
            assert ready, "the fake printed no URL: " + (tmp_path / "stderr.txt").read_text()
            base_url = process.stdout.readline().strip()
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+/entrez/eutils/", base_url)
            root = base_url.removesuffix("/entrez/eutils/")
            with httpx.Client(timeout=5.0) as http:
                params = {"db": "pubmed", "term": "topic-0", **IDENT}
                found = read(http.get(base_url + "esearch.fcgi", params=params).content)
                assert found["Count"] == "10"
                stats = http.get(root + "/_fake/stats").json()
                assert stats["by_endpoint"] == {"esearch": {"200": 1}}
                assert stats["max_in_any_1s_window"] == 1
                assert http.post(root + "/_fake/reset").status_code == 200
                assert http.get(root + "/_fake/stats").json()["requests"] == 0
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(10.0) == 0


def test_stats_endpoint_in_process(fake: FakeEutils, client: httpx.Client) -> None:
    esearch(client, fake, term="x")
    efetch(client, fake, ["1", "2"])
    stats = client.get(fake.root_url + "/_fake/stats").json()
    assert stats["by_endpoint"] == {"esearch": {"200": 1}, "efetch": {"200": 1}}
    assert stats["ids_fetched"] == 2
    assert json.loads(json.dumps(stats)) == fake.stats()


# -- a small DTD checker -----------------------------------------------------------------------


class DtdValidator:
    """Checks child order against the DTD's content models, plus required/enum attributes.

    ``Bio.Entrez.read`` only checks that element names exist in the DTD, not their order;
    this turns each content model into a regular expression over the child tag names.
    """

    def __init__(self, dtd_path: Path) -> None:
        self.models: dict[str, re.Pattern[str]] = {}
        self.attributes: dict[str, dict[str, tuple[str, bool]]] = {}
        # MathML comes in through an external parameter entity; PubWatch never emits it.
        text = dtd_path.read_text().replace("%mathml-in-pubmed;", "")
        parser = expat.ParserCreate()
        parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_ALWAYS)

        def external(
            context: str, base: str | None, system_id: str | None, public_id: str | None
        ) -> int:
            sub = parser.ExternalEntityParserCreate(context)
            sub.ElementDeclHandler = self._element
            sub.AttlistDeclHandler = self._attlist
            sub.Parse(text, True)
            return 1

        parser.ExternalEntityRefHandler = external
        parser.Parse('<!DOCTYPE PubmedArticleSet SYSTEM "dtd"><PubmedArticleSet/>', True)

    def _element(self, name: str, model: tuple[Any, ...]) -> None:
        self.models[name] = re.compile(_model_regex(model))

    def _attlist(
        self, element: str, name: str, kind: str, default: str | None, required: int
    ) -> None:
        self.attributes.setdefault(element, {})[name] = (kind, bool(required))

    def errors(self, document: bytes) -> list[str]:
        found: list[str] = []
        # Our own output and NCBI's fixtures, not untrusted input.
        for element in ET.fromstring(document).iter():  # noqa: S314
            tag = element.tag
            if tag not in self.models:
                found.append(f"<{tag}> is not declared")
                continue
            children = "".join(f"<{child.tag}>" for child in element)
            if not self.models[tag].fullmatch(children):
                found.append(f"<{tag}> children out of DTD order: {children}")
            declared = self.attributes.get(tag, {})
            for name, (kind, required) in declared.items():
                value = element.get(name)
                if value is None:
                    if required:
                        found.append(f"<{tag}> lacks required {name}")
                elif kind.startswith("(") and value not in kind.strip("()").split("|"):
                    found.append(f"<{tag} {name}={value!r}> is not one of {kind}")
            found.extend(
                f"<{tag}> has undeclared {name}" for name in element.attrib.keys() - declared.keys()
            )
        return found


_QUANTIFIER = {
    expat.model.XML_CQUANT_NONE: "",
    expat.model.XML_CQUANT_OPT: "?",
    expat.model.XML_CQUANT_REP: "*",
    expat.model.XML_CQUANT_PLUS: "+",
}


def _model_regex(model: tuple[Any, ...]) -> str:
    kind, quantifier, name, children = model
    if kind == expat.model.XML_CTYPE_EMPTY:
        body = ""
    elif kind == expat.model.XML_CTYPE_ANY:
        body = "(?:<[^>]+>)*"
    elif kind == expat.model.XML_CTYPE_MIXED:
        body = "|".join(re.escape(f"<{child[2]}>") for child in children)
    elif kind == expat.model.XML_CTYPE_NAME:
        body = re.escape(f"<{name}>")
    elif kind == expat.model.XML_CTYPE_CHOICE:
        body = "|".join(_model_regex(child) for child in children)
    else:  # XML_CTYPE_SEQ
        body = "".join(_model_regex(child) for child in children)
    return f"(?:{body}){_QUANTIFIER[quantifier]}"
