"""A fake NCBI E-utilities server (esearch + efetch for db=pubmed) over real HTTP.

It answers like ``https://eutils.ncbi.nlm.nih.gov/entrez/eutils/``: same paths, same XML
(see ``pubmed_xml``), the same per-identity rate limit and 429 answer, and it can fail on
purpose. Tests drive it in-process::

    with FakeEutils() as fake:
        fake.add_article(make_article(1001), terms=["asthma"])
        client = PubMedClient(base_url=fake.url)          # ends with "/"
        ...
        assert fake.max_in_any_window(1.0) <= 3

Scenario
    ``add_article(article, terms)`` makes ``article`` a hit for each exact ``term`` string
    (compared after stripping spaces). One composite form is understood besides:
    ``<term> AND "Retracted Publication"[pt]`` (also with ``<term>`` in parentheses) matches
    the articles of ``<term>`` whose publication types include "Retracted Publication".
    ``update_article`` replaces a record, e.g. with ``article.retracted(...)``.

esearch.fcgi (GET or form POST)
    ``term``, ``retstart``, ``retmax`` (default 20, at most 10,000), ``datetype``
    (``edat`` | ``mdat`` | ``pdat``; ``pdat`` when dates are given without it, as NCBI does),
    ``mindate``/``maxdate`` (``YYYY[/MM[/DD]]``, inclusive, only together) or ``reldate``,
    ``rettype=count``. Hits come newest first by the date type (by EDAT without one); like
    PubMed only the first 10,000 can be paged to. ``sort``, ``usehistory`` and ``retmode``
    are ignored. Errors come back as NCBI's ``<ERROR>`` element with HTTP 200.

efetch.fcgi (GET or form POST)
    ``id`` (comma-separated; unknown ids are left out, as NCBI does; at most 10,000),
    ``retmode=xml`` (the only one), ``rettype`` ignored.

Every request must carry ``tool`` and ``email`` (NCBI asks for them); without them the fake
answers HTTP 400 unless built with ``require_identification=False``. A known ``api_key``
raises the limit from 3 to 10 requests per second; an unknown one counts as no key.

Run alone (for benchmarks): ``python -m tests.fakes.eutils --port 0 --synthetic 20
--per-topic 200 --overlap 0.1 --seed 1`` prints the base URL, then serves until SIGINT or
SIGTERM; ``GET /_fake/stats`` and ``POST /_fake/reset`` expose the request log.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import calendar
import copy
import json
import random
import re
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from types import FrameType, TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.http_thread import ServedApp
from tests.fakes.pubmed_xml import (
    FakeArticle,
    as_date,
    efetch_error_xml,
    efetch_xml,
    esearch_count_xml,
    esearch_error_xml,
    esearch_xml,
    make_article,
)

BASE_PATH = "/entrez/eutils/"
XML_CONTENT_TYPE = "text/xml; charset=UTF-8"
FAULT_KINDS = frozenset({"429", "500", "502", "timeout", "truncated", "empty"})
LIMIT_WITHOUT_KEY = 3
LIMIT_WITH_KEY = 10
RATE_WINDOW_S = 1.0
MAX_RETMAX = 10_000
MAX_EFETCH_IDS = 10_000
# PubMed's esearch can only page through the first 10,000 hits of any query.
PUBMED_HIT_WINDOW = 10_000

_RETRACTED_SUFFIX = re.compile(
    r'^(?P<base>.+?)\s+AND\s+"Retracted Publication"\[pt\]$', re.IGNORECASE
)
_DATE = re.compile(r"^(\d{4})(?:/(\d{1,2})(?:/(\d{1,2}))?)?$")

_HTML_500 = (
    b'<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN">\n'
    b"<html><head><title>NCBI/eutils - WWW Error 500 Diagnostic</title></head>\n"
    b"<body><h1>Error occurred: Internal Server Error</h1>\n"
    b"<p>The server encountered an internal error or misconfiguration and was unable "
    b"to complete your request.</p></body></html>\n"
)
_HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"
)


@dataclass(frozen=True)
class RequestRecord:
    """One request as the fake saw it. ``t`` is ``time.monotonic()`` at arrival."""

    t: float
    endpoint: str
    method: str
    params: dict[str, str]
    n_ids: int
    status: int
    identity: str
    fault: str | None = None

    @property
    def identified(self) -> bool:
        return bool(self.params.get("tool")) and bool(self.params.get("email"))


class FakeEutils:
    """The fake E-utilities server; see the module docstring for what it answers."""

    def __init__(
        self,
        api_keys: Iterable[str] = frozenset(),
        *,
        rate_limit: bool = True,
        hang_s: float = 30.0,
        require_identification: bool = True,
        efetch_dtd: str = "pubmed_250101",
        port: int | None = None,
    ) -> None:
        self.api_keys = frozenset(api_keys)
        self.rate_limit = rate_limit
        self.hang_s = hang_s
        self.require_identification = require_identification
        self.efetch_dtd = efetch_dtd
        # One lock for everything the test thread and the server thread share.
        self._lock = threading.Lock()
        self._articles: dict[str, FakeArticle] = {}
        self._terms: dict[str, dict[str, None]] = {}  # term -> PMIDs, an ordered set
        self._log: list[RequestRecord] = []
        self._arrivals: dict[str, deque[float]] = {}  # identity -> arrival times in window
        self._fault_queue: deque[str] = deque()
        self._fault_rate = 0.0
        self._fault_kinds: tuple[str, ...] = ()
        self._fault_rng = random.Random(0)
        self._closing = threading.Event()
        self.app = self._build_app()
        self._served = ServedApp(self.app, port=port)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> str:
        """Listen on 127.0.0.1; return the base URL (ends with ``/entrez/eutils/``)."""
        self._closing.clear()
        self._served.start()
        return self.url

    def stop(self) -> None:
        self._closing.set()  # lets requests hanging in a "timeout" fault finish at once
        self._served.stop()

    @property
    def url(self) -> str:
        """Base URL, like ``https://eutils.ncbi.nlm.nih.gov/entrez/eutils/``."""
        return self._served.url + BASE_PATH

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:PORT``, where ``/_fake/stats`` and ``/_fake/reset`` live."""
        return self._served.url

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- scenario ----------------------------------------------------------------------------

    def add_article(self, article: FakeArticle, terms: Iterable[str]) -> None:
        """Store ``article`` and make it a hit for each of ``terms`` (exact strings)."""
        term_list = [terms] if isinstance(terms, str) else list(terms)
        stored = copy.deepcopy(article)  # the caller may go on changing its own object
        with self._lock:
            self._articles[stored.pmid] = stored
            for term in term_list:
                self._terms.setdefault(term.strip(), {})[stored.pmid] = None

    def add_articles(self, articles: Iterable[FakeArticle], terms: Iterable[str]) -> None:
        term_list = [terms] if isinstance(terms, str) else list(terms)
        for article in articles:
            self.add_article(article, term_list)

    def update_article(self, article: FakeArticle) -> None:
        """Replace the stored record with the same PMID (its terms stay)."""
        stored = copy.deepcopy(article)
        with self._lock:
            if stored.pmid not in self._articles:
                raise KeyError(f"PMID {stored.pmid} was never added")
            self._articles[stored.pmid] = stored

    def article(self, pmid: str) -> FakeArticle | None:
        with self._lock:
            found = self._articles.get(pmid)
        return copy.deepcopy(found)

    # -- request log -------------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """Every esearch/efetch request so far, in arrival order."""
        with self._lock:
            return sorted(self._log, key=lambda record: record.t)

    def count(self, endpoint: str | None = None, status: int | None = None) -> int:
        """How many requests hit ``endpoint`` ("esearch" | "efetch") with ``status``."""
        return sum(
            1
            for record in self.requests
            if (endpoint is None or record.endpoint == endpoint)
            and (status is None or record.status == status)
        )

    def max_in_any_window(
        self,
        seconds: float = RATE_WINDOW_S,
        include_rejected: bool = True,
        identity: str | None = None,
    ) -> int:
        """The most requests that arrived within any ``seconds``-long sliding window.

        With ``include_rejected=False`` the 429 answers are left out. ``identity`` (a client
        IP or api_key) restricts it to one client.
        """
        times = [
            record.t
            for record in self.requests
            if (include_rejected or record.status != 429)
            and (identity is None or record.identity == identity)
        ]
        best = 0
        for end, t in enumerate(times):
            # The window (t - seconds, t], the same one the rate limiter uses.
            start = bisect.bisect_right(times, t - seconds, 0, end)
            best = max(best, end - start + 1)
        return best

    def reset_log(self) -> None:
        """Forget the request log (the rate limiter keeps its last second of arrivals)."""
        with self._lock:
            self._log.clear()

    def stats(self) -> dict[str, Any]:
        """Counts for an out-of-process user (served as ``GET /_fake/stats``)."""
        records = self.requests
        by_endpoint: dict[str, Counter[str]] = {}
        for record in records:
            by_endpoint.setdefault(record.endpoint, Counter())[str(record.status)] += 1
        return {
            "requests": len(records),
            "by_endpoint": {name: dict(counts) for name, counts in by_endpoint.items()},
            "by_status": dict(Counter(str(record.status) for record in records)),
            "by_fault": dict(Counter(record.fault for record in records if record.fault)),
            "ids_fetched": sum(r.n_ids for r in records if r.endpoint == "efetch"),
            "max_in_any_1s_window": self.max_in_any_window(1.0),
            "max_accepted_in_any_1s_window": self.max_in_any_window(1.0, include_rejected=False),
            "unidentified": sum(1 for record in records if not record.identified),
            "tools": sorted({r.params["tool"] for r in records if r.params.get("tool")}),
            "emails": sorted({r.params["email"] for r in records if r.params.get("email")}),
        }

    # -- faults ------------------------------------------------------------------------------

    def inject(self, kind: str, times: int = 1) -> None:
        """Answer the next ``times`` requests (that pass the rate limit) with fault ``kind``.

        Kinds: "429" (NCBI's rate-limit answer), "500", "502" (HTML bodies), "timeout"
        (answers only after ``hang_s``), "truncated" (200, XML cut in half), "empty" (200, no
        body). Queued faults go before any ``fault_rate``.
        """
        _check_kinds([kind])
        with self._lock:
            self._fault_queue.extend([kind] * times)

    def fault_rate(self, rate: float, kinds: list[str], seed: int = 0) -> None:
        """Fail a fraction ``rate`` of requests with a kind drawn from ``kinds`` (0 stops)."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be within [0, 1], got {rate}")
        if rate > 0:
            _check_kinds(kinds)
        with self._lock:
            self._fault_rate = rate
            self._fault_kinds = tuple(kinds)
            self._fault_rng = random.Random(seed)

    def clear_faults(self) -> None:
        with self._lock:
            self._fault_queue.clear()
            self._fault_rate = 0.0

    # -- HTTP --------------------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        async def esearch(request: Request) -> Response:
            return await self._serve(request, "esearch")

        async def efetch(request: Request) -> Response:
            return await self._serve(request, "efetch")

        async def stats(request: Request) -> Response:
            return JSONResponse(self.stats())

        async def reset(request: Request) -> Response:
            self.reset_log()
            return JSONResponse({"reset": True})

        methods = ["GET", "POST"]
        return Starlette(
            routes=[
                Route(BASE_PATH + "esearch.fcgi", esearch, methods=methods),
                Route(BASE_PATH + "efetch.fcgi", efetch, methods=methods),
                Route("/_fake/stats", stats, methods=["GET"]),
                Route("/_fake/reset", reset, methods=["POST"]),
            ]
        )

    async def _serve(self, request: Request, endpoint: str) -> Response:
        params = await _read_params(request)
        client_ip = request.client.host if request.client else "unknown"
        n_ids = len(_split_ids(params.get("id", ""))) if endpoint == "efetch" else 0

        with self._lock:
            # Taken under the lock, in the one server thread: arrival times never go back,
            # which the sliding windows rely on.
            arrived = time.monotonic()
            identity, limit = self._identity(params, client_ip)
            in_window = self._note_arrival(identity, arrived)
            rejected = self.rate_limit and in_window > limit
            fault = None if rejected else self._next_fault()

        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(max(limit - in_window, 0)),
        }
        if rejected or fault == "429":
            response = _rate_limited(identity, max(in_window, limit + 1), limit)
        elif self.require_identification and not (params.get("tool") and params.get("email")):
            message = "tool and email parameters are required (NCBI usage policy)"
            response = _xml(
                esearch_error_xml(message) if endpoint == "esearch" else efetch_error_xml(message),
                status=400,
            )
        elif endpoint == "esearch":
            response = self._esearch(params)
        else:
            response = self._efetch(params)
        if fault is not None and fault != "429":
            response = _apply_fault(fault, response)
        response.headers.update(headers)

        record = RequestRecord(
            t=arrived,
            endpoint=endpoint,
            method=request.method,
            params=params,
            n_ids=n_ids,
            status=response.status_code,
            identity=identity,
            fault=fault,
        )
        with self._lock:
            self._log.append(record)
        if fault == "timeout":
            await self._hang()
        return response

    def _identity(self, params: Mapping[str, str], client_ip: str) -> tuple[str, int]:
        api_key = params.get("api_key", "")
        if api_key and api_key in self.api_keys:
            return api_key, LIMIT_WITH_KEY
        return client_ip, LIMIT_WITHOUT_KEY

    def _note_arrival(self, identity: str, arrived: float) -> int:
        # Every arrival counts, refused ones too: a client that retries at once stays refused.
        window = self._arrivals.setdefault(identity, deque())
        window.append(arrived)
        while window and window[0] <= arrived - RATE_WINDOW_S:
            window.popleft()
        return len(window)

    def _next_fault(self) -> str | None:
        if self._fault_queue:
            return self._fault_queue.popleft()
        if self._fault_rate > 0 and self._fault_rng.random() < self._fault_rate:
            return self._fault_rng.choice(self._fault_kinds)
        return None

    async def _hang(self) -> None:
        # Sleeping in slices lets stop() end the hang instead of waiting out hang_s.
        deadline = time.monotonic() + self.hang_s
        while not self._closing.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await asyncio.sleep(min(remaining, 0.05))

    # -- esearch -----------------------------------------------------------------------------

    def _esearch(self, params: Mapping[str, str]) -> Response:
        try:
            query = _EsearchQuery.parse(params)
        except _EutilsError as error:
            return _xml(esearch_error_xml(str(error)))
        with self._lock:
            found = self._resolve(query.term)
        if found is None:
            if query.rettype == "count":
                return _xml(esearch_count_xml(0))
            return _xml(
                esearch_xml(
                    0,
                    [],
                    0,
                    query.retstart,
                    query_translation=query.term,
                    phrase_not_found=query.term,
                )
            )
        hits = [a for a in found if query.in_range(a)]
        hits.sort(key=lambda a: (query.sort_date(a), int(a.pmid)), reverse=True)
        if query.rettype == "count":
            return _xml(esearch_count_xml(len(hits)))
        if query.retstart >= PUBMED_HIT_WINDOW and hits:
            return _xml(
                esearch_error_xml(
                    f"Search Backend failed: 'retstart' cannot be larger than "
                    f"{PUBMED_HIT_WINDOW - 1}. For PubMed, ESearch can only retrieve the "
                    f"first {PUBMED_HIT_WINDOW:,} records matching the query."
                )
            )
        end = min(query.retstart + query.retmax, PUBMED_HIT_WINDOW)
        page = [a.pmid for a in hits[query.retstart : end]]
        return _xml(
            esearch_xml(
                len(hits),
                page,
                len(page),
                query.retstart,
                query_translation=query.term,
                no_items_found=not hits,
            )
        )

    def _resolve(self, term: str) -> list[FakeArticle] | None:
        """The articles a term matches, or None for a term nobody registered."""
        if term in self._terms:
            return [self._articles[pmid] for pmid in self._terms[term]]
        match = _RETRACTED_SUFFIX.match(term)
        if match is None:
            return None
        base = match.group("base").strip()
        if base not in self._terms and base.startswith("(") and base.endswith(")"):
            base = base[1:-1].strip()
        if base not in self._terms:
            return None
        return [
            self._articles[pmid] for pmid in self._terms[base] if self._articles[pmid].is_retracted
        ]

    # -- efetch ------------------------------------------------------------------------------

    def _efetch(self, params: Mapping[str, str]) -> Response:
        db = params.get("db", "pubmed")
        if db != "pubmed":
            return _xml(efetch_error_xml(f"Invalid db name specified: {db}"), status=400)
        retmode = params.get("retmode", "xml")
        if retmode != "xml":
            return _xml(efetch_error_xml(f"retmode={retmode} is not served by the fake"), 400)
        ids = _split_ids(params.get("id", ""))
        if not ids:
            return _xml(efetch_error_xml("Empty id list - nothing todo"), status=400)
        if len(ids) > MAX_EFETCH_IDS:
            return _xml(
                efetch_error_xml(
                    f"Too many UIDs in request. Maximum number of UIDs is {MAX_EFETCH_IDS} "
                    "for XML format output."
                ),
                status=400,
            )
        with self._lock:
            # Stored records are never mutated (update_article replaces them), so they can
            # be serialised outside the lock.
            articles = [self._articles[pmid] for pmid in ids if pmid in self._articles]
        return _xml(efetch_xml(articles, dtd=self.efetch_dtd))


class _EutilsError(Exception):
    """A request NCBI would answer with an ``<ERROR>`` element."""


@dataclass(frozen=True)
class _EsearchQuery:
    term: str
    retstart: int
    retmax: int
    datetype: str
    mindate: date | None
    maxdate: date | None
    rettype: str

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> _EsearchQuery:
        db = params.get("db", "pubmed")
        if db != "pubmed":
            raise _EutilsError(f"Invalid db name specified: {db}")
        term = params.get("term", "").strip()
        if not term:
            raise _EutilsError("Empty term and query_key - nothing todo")
        retstart = _non_negative_int(params, "retstart", 0)
        retmax = min(_non_negative_int(params, "retmax", 20), MAX_RETMAX)
        mindate_text, maxdate_text = params.get("mindate"), params.get("maxdate")
        if (mindate_text is None) != (maxdate_text is None):
            raise _EutilsError("mindate and maxdate must be given together")
        mindate = maxdate = None
        if mindate_text is not None and maxdate_text is not None:
            mindate = _parse_date(mindate_text, start=True)
            maxdate = _parse_date(maxdate_text, start=False)
        elif params.get("reldate"):
            days = _non_negative_int(params, "reldate", 0)
            maxdate = date.today()
            mindate = maxdate - timedelta(days=days)
        datetype = params.get("datetype") or ("pdat" if mindate else "edat")
        if datetype not in ("edat", "mdat", "pdat"):
            raise _EutilsError(f"Invalid datetype: {datetype}")
        return cls(term, retstart, retmax, datetype, mindate, maxdate, params.get("rettype", ""))

    def sort_date(self, article: FakeArticle) -> date:
        if self.datetype == "mdat":
            return as_date(article.modified_date)
        if self.datetype == "pdat":
            return _publication_date(article)
        return as_date(article.entry_date)

    def in_range(self, article: FakeArticle) -> bool:
        if self.mindate is None or self.maxdate is None:
            return True
        return self.mindate <= self.sort_date(article) <= self.maxdate


# -- helpers ---------------------------------------------------------------------------------


async def _read_params(request: Request) -> dict[str, str]:
    """Query string and form body merged, as NCBI treats them; repeated ``id`` joined."""
    pairs = list(request.query_params.multi_items())
    if request.method == "POST":
        body = (await request.body()).decode("utf-8", errors="replace")
        # Parsed by hand: Starlette's form() needs python-multipart, and NCBI only takes
        # application/x-www-form-urlencoded bodies anyway.
        pairs.extend(parse_qsl(body, keep_blank_values=True))
    params: dict[str, str] = {}
    for key, value in pairs:
        if key == "id" and params.get("id"):
            params["id"] = params["id"] + "," + value
        else:
            params[key] = value
    return params


def _split_ids(text: str) -> list[str]:
    seen: dict[str, None] = {}
    for part in text.replace(" ", ",").split(","):
        part = part.strip()
        if part.isdigit():
            seen.setdefault(part, None)
    return list(seen)


def _non_negative_int(params: Mapping[str, str], name: str, default: int) -> int:
    text = params.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit():
        raise _EutilsError(f"Invalid {name}: {text}")
    return int(text)


def _parse_date(text: str, *, start: bool) -> date:
    match = _DATE.match(text.strip())
    if match is None:
        raise _EutilsError(f"Invalid date format: {text} (expected YYYY/MM/DD)")
    year = int(match.group(1))
    month = int(match.group(2) or (1 if start else 12))
    try:
        last_day = calendar.monthrange(year, month)[1]
        day = int(match.group(3) or (1 if start else last_day))
        return date(year, month, day)
    except ValueError:
        raise _EutilsError(f"Invalid date: {text}") from None


def _publication_date(article: FakeArticle) -> date:
    year = article.pub_year or as_date(article.entry_date).year
    month = 1
    text = (article.pub_month or "").strip()
    abbreviations = [name.lower() for name in calendar.month_abbr]
    if text[:3].lower() in abbreviations[1:]:
        month = abbreviations.index(text[:3].lower())
    elif text.isdigit() and 1 <= int(text) <= 12:
        month = int(text)
    # A day only counts with a month; NCBI's PDAT for "2024" alone is 2024/01/01.
    day = (article.pub_day or 1) if article.pub_month else 1
    return date(year, month, day)


def _xml(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, headers={"content-type": XML_CONTENT_TYPE})


def _rate_limited(identity: str, count: int, limit: int) -> Response:
    body = json.dumps(
        {
            "error": "API rate limit exceeded",
            "api-key": identity,
            "count": str(count),
            "limit": str(limit),
        },
        separators=(",", ":"),
    )
    return Response(body, status_code=429, headers={"content-type": "application/json"})


def _apply_fault(kind: str, response: Response) -> Response:
    if kind == "500":
        return Response(_HTML_500, status_code=500, headers={"content-type": "text/html"})
    if kind == "502":
        return Response(_HTML_502, status_code=502, headers={"content-type": "text/html"})
    if kind == "truncated":
        body = bytes(response.body)
        return _xml(body[: len(body) // 2])
    if kind == "empty":
        return _xml(b"")
    return response  # "timeout": the real answer, only late


def _check_kinds(kinds: Iterable[str]) -> None:
    unknown = set(kinds) - FAULT_KINDS
    if unknown or not kinds:
        raise ValueError(f"fault kinds must be among {sorted(FAULT_KINDS)}, got {kinds!r}")


# -- synthetic scenarios and the command line ------------------------------------------------


def populate_synthetic(
    fake: FakeEutils,
    topics: int,
    per_topic: int,
    overlap: float = 0.0,
    seed: int = 0,
    retracted: float = 0.0,
    days: int = 30,
) -> dict[str, list[str]]:
    """Fill ``fake`` with ``topics`` terms ``topic-0``... each matching ``per_topic`` articles.

    Topics form a ring: topic i shares ``overlap * per_topic / 2`` articles with topic i-1 and
    as many with topic i+1, so a fraction ``overlap`` (rounded to an even count) of each
    topic's hits also belongs to another topic. Entry dates spread over the last ``days``
    days; a fraction ``retracted`` of the articles is retracted. Returns term -> PMIDs.
    """
    if not 0.0 <= overlap <= 1.0:
        raise ValueError("overlap must be within [0, 1]")
    rng = random.Random(seed)
    per_link = round(overlap * per_topic / 2) if topics > 1 else 0
    own = per_topic - 2 * per_link
    next_pmid = iter(range(30_000_000, 1_000_000_000))
    today = date.today()

    def new_article() -> FakeArticle:
        pmid = str(next(next_pmid))
        entry = today - timedelta(days=rng.randrange(max(days, 1)))
        article = make_article(pmid, entry_date=entry, seed=seed)
        if rng.random() < retracted:
            notice = str(next(next_pmid))
            article = article.retracted(notice, on=entry + timedelta(days=rng.randint(0, days)))
        return article

    links = [[new_article() for _ in range(per_link)] for _ in range(topics)]
    result: dict[str, list[str]] = {}
    for index in range(topics):
        term = f"topic-{index}"
        articles = [new_article() for _ in range(own)] + links[index] + links[index - 1]
        fake.add_articles(articles, [term])
        result[term] = [a.pmid for a in articles]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.eutils", description="Serve a fake NCBI E-utilities."
    )
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--no-rate-limit", action="store_true")
    parser.add_argument(
        "--allow-anonymous", action="store_true", help="answer requests without tool/email"
    )
    parser.add_argument("--api-key", action="append", default=[], help="a valid api_key")
    parser.add_argument("--hang-s", type=float, default=30.0, help="length of a timeout fault")
    parser.add_argument("--dtd", default="pubmed_250101", help="efetch DOCTYPE, e.g. pubmed_260101")
    parser.add_argument("--synthetic", type=int, metavar="TOPICS", default=0)
    parser.add_argument("--per-topic", type=int, default=100)
    parser.add_argument("--overlap", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--retracted", type=float, default=0.0, help="fraction retracted")
    parser.add_argument("--days", type=int, default=30, help="spread of entry dates")
    args = parser.parse_args(argv)

    fake = FakeEutils(
        api_keys=args.api_key,
        rate_limit=not args.no_rate_limit,
        hang_s=args.hang_s,
        require_identification=not args.allow_anonymous,
        efetch_dtd=args.dtd,
        port=args.port or None,
    )
    if args.synthetic:
        populate_synthetic(
            fake,
            topics=args.synthetic,
            per_topic=args.per_topic,
            overlap=args.overlap,
            seed=args.seed,
            retracted=args.retracted,
            days=args.days,
        )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(fake.start(), flush=True)
    try:
        while not stop.wait(0.2):
            pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
