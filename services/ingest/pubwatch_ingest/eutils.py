"""An async client for NCBI E-utilities (esearch, efetch) that a service can leave running.

What it adds over ``Bio.Entrez``'s own HTTP (see REFERENCE.md): a configurable base URL,
request timeouts, one reused connection pool, a rate limit shared by every ingest process
(:mod:`pubwatch_ingest.ratelimit`), and retries with exponential backoff and jitter on
429, 5xx, timeouts and truncated or empty bodies. Every request carries ``tool``, ``email``
and ``api_key``. Responses are parsed with ``Bio.Entrez.read`` inside the retry loop, so a
body cut short in transit is retried like any other transient failure.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, TypeVar
from xml.parsers.expat import ExpatError

import httpx
from Bio.Entrez.Parser import CorruptedXMLError, NotXMLError, ValidationError

from pubwatch_ingest.articles import Article, parse_efetch, read_xml
from pubwatch_ingest.errors import (
    PermanentEutilsError,
    RetriesExhaustedError,
    TransientEutilsError,
)
from pubwatch_ingest.opsmetrics import IngestMetrics
from pubwatch_ingest.ratelimit import RateLimiter
from pubwatch_ingest.settings import IngestSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
# Longer search terms go by POST: NCBI's front end refuses very long URLs.
_MAX_GET_TERM_CHARS = 1500


@dataclass(frozen=True)
class SearchResult:
    count: int  # every match PubMed knows of; may exceed len(pmids)
    pmids: list[str]

    @property
    def truncated(self) -> bool:
        return self.count > len(self.pmids)


def eutils_date(day: date) -> str:
    return day.strftime("%Y/%m/%d")


def _parse_esearch(body: bytes) -> SearchResult:
    record = read_xml(body)
    if "ERROR" in record:
        # NCBI reports back-end trouble inside a 200 answer; the same search usually works
        # a moment later.
        raise TransientEutilsError(f"esearch error: {record['ERROR']}")
    if "Count" not in record or "IdList" not in record:
        raise TransientEutilsError("esearch answer without Count or IdList")
    return SearchResult(count=int(record["Count"]), pmids=[str(pmid) for pmid in record["IdList"]])


def _parse_efetch(body: bytes) -> list[Article]:
    return parse_efetch(read_xml(body))


class EutilsClient:
    """esearch and efetch against ``settings.eutils_url``. Close with :meth:`aclose`."""

    def __init__(
        self,
        settings: IngestSettings,
        limiter: RateLimiter,
        transport: httpx.AsyncBaseTransport | None = None,
        metrics: IngestMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.limiter = limiter
        self.metrics = metrics
        self.requests_sent = 0  # every HTTP attempt, retries included
        self._http = httpx.AsyncClient(
            base_url=settings.eutils_url,
            timeout=httpx.Timeout(settings.request_timeout_s),
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=4),
            headers={"User-Agent": f"{settings.ncbi_tool} (PubWatch ingest)"},
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def _identity(self) -> dict[str, str]:
        params = {"tool": self.settings.ncbi_tool}
        if self.settings.ncbi_email:
            params["email"] = self.settings.ncbi_email
        if self.settings.ncbi_api_key:
            params["api_key"] = self.settings.ncbi_api_key
        return params

    def _backoff_s(self, attempt: int, retry_after_s: float | None) -> float:
        ceiling = min(
            self.settings.backoff_max_s, self.settings.backoff_base_s * 2 ** (attempt - 1)
        )
        # "Equal jitter": at least half the exponential step, so retries spread out without
        # ever collapsing to an immediate retry.
        pause: float = ceiling / 2 + random.uniform(0, ceiling / 2)
        if retry_after_s is not None:
            pause = max(pause, min(retry_after_s, self.settings.backoff_max_s))
        return pause

    async def _call(
        self,
        method: str,
        endpoint: str,
        params: dict[str, str],
        parse: Callable[[bytes], T],
    ) -> T:
        """One E-utilities call: rate-limited attempts until a parsed answer or a final error."""
        data = {**params, **self._identity()}
        last_problem = ""
        for attempt in range(1, self.settings.max_attempts + 1):
            await self.limiter.acquire()
            self.requests_sent += 1
            retry_after_s: float | None = None
            # Each attempt is counted by its outcome, so retries show up in /metrics.
            outcome = "error"
            started = time.monotonic()
            try:
                if method == "POST":
                    response = await self._http.post(endpoint, data=data)
                else:
                    response = await self._http.get(endpoint, params=data)
                if response.status_code == 200:
                    # Parsing 200 records takes tens of milliseconds: keep the event loop
                    # (and the lock renewals on it) responsive meanwhile.
                    parsed = await asyncio.to_thread(parse, response.content)
                    outcome = "ok"
                    return parsed
                outcome = f"http_{response.status_code}"
                if response.status_code not in _TRANSIENT_STATUS:
                    raise PermanentEutilsError(
                        f"{endpoint} answered HTTP {response.status_code}: {response.text[:200]}"
                    )
                last_problem = f"HTTP {response.status_code}"
                retry_after_s = _retry_after_s(response)
            except httpx.TimeoutException as exc:
                outcome = "timeout"
                last_problem = f"timeout ({type(exc).__name__})"
            except httpx.TransportError as exc:
                outcome = "connection_error"
                last_problem = f"connection problem ({type(exc).__name__}: {exc})"
            except (CorruptedXMLError, NotXMLError, ExpatError) as exc:
                outcome = "bad_xml"
                last_problem = f"truncated or malformed XML ({type(exc).__name__})"
            except ValidationError as exc:
                raise PermanentEutilsError(
                    f"{endpoint} answer does not fit its DTD: {exc}"
                ) from exc
            except TransientEutilsError as exc:
                last_problem = str(exc)
            finally:
                if self.metrics is not None:
                    await self.metrics.ncbi_request(endpoint, outcome, time.monotonic() - started)
            if attempt < self.settings.max_attempts:
                pause_s = self._backoff_s(attempt, retry_after_s)
                log.warning(
                    "E-utilities %s failed (%s); retrying in %.1f s",
                    endpoint,
                    last_problem,
                    pause_s,
                    extra={"attempt": attempt},
                )
                await asyncio.sleep(pause_s)
        raise RetriesExhaustedError(
            f"{endpoint} failed {self.settings.max_attempts} times; last: {last_problem}"
        )

    async def esearch(
        self,
        term: str,
        *,
        datetype: str | None = None,
        mindate: date | None = None,
        maxdate: date | None = None,
    ) -> SearchResult:
        """PMIDs matching ``term`` (newest first, up to ``esearch_max_results``)."""
        params = {
            "db": "pubmed",
            "term": term,
            "retmax": str(self.settings.esearch_max_results),
            "retmode": "xml",
        }
        if datetype is not None and mindate is not None and maxdate is not None:
            params |= {
                "datetype": datetype,
                "mindate": eutils_date(mindate),
                "maxdate": eutils_date(maxdate),
            }
        method = "POST" if len(term) > _MAX_GET_TERM_CHARS else "GET"
        return await self._call(method, "esearch.fcgi", params, _parse_esearch)

    async def efetch(self, pmids: Sequence[str]) -> list[Article]:
        """One efetch by POST of at most ``efetch_batch_size`` PMIDs."""
        if len(pmids) > self.settings.efetch_batch_size:
            raise ValueError(f"efetch takes at most {self.settings.efetch_batch_size} ids per call")
        params = {"db": "pubmed", "id": ",".join(pmids), "retmode": "xml"}
        articles = await self._call("POST", "efetch.fcgi", params, self._expect_some(len(pmids)))
        return articles

    @staticmethod
    def _expect_some(requested: int) -> Callable[[bytes], list[Article]]:
        def parse(body: bytes) -> list[Article]:
            articles = _parse_efetch(body)
            if requested and not articles:
                # A well-formed but empty set for ids that esearch just returned is a hiccup
                # (NCBI does this under load), not proof the records are gone.
                raise TransientEutilsError(f"efetch returned none of {requested} records")
            return articles

        return parse

    async def fetch_articles(
        self,
        pmids: Sequence[str],
        on_batch: Callable[[int, int], Any] | None = None,
    ) -> dict[str, Article]:
        """Every record for ``pmids`` that PubMed returns, in batches; ``on_batch(done, total)``."""
        found: dict[str, Article] = {}
        size = self.settings.efetch_batch_size
        for start in range(0, len(pmids), size):
            batch = list(pmids[start : start + size])
            for article in await self.efetch(batch):
                found[article.pmid] = article
            if on_batch is not None:
                on_batch(min(start + size, len(pmids)), len(pmids))
        return found


def _retry_after_s(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
