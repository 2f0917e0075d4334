"""An async client for NCBI E-utilities (esearch, efetch) that a service can leave running.

What it adds over ``Bio.Entrez``'s own HTTP (see REFERENCE.md): a configurable base URL,
request timeouts, one reused connection pool, a rate limit shared by every ingest process
(:mod:`pubwatch_ingest.ratelimit`), and retries with exponential backoff and jitter on
429, 5xx, timeouts and truncated or empty bodies. Every request carries ``tool``, ``email``
and ``api_key``. Responses are parsed with ``Bio.Entrez.read`` inside the retry loop, in
worker processes (:mod:`pubwatch_ingest.parsing`) so that parsing never stalls the event
loop, and a body cut short in transit is retried like any other transient failure.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any, TypeVar

import httpx

from pubwatch_ingest.articles import Article
from pubwatch_ingest.errors import (
    DTDMismatchError,
    MalformedXMLError,
    PermanentEutilsError,
    RetriesExhaustedError,
    TransientEutilsError,
)
from pubwatch_ingest.opsmetrics import IngestMetrics
from pubwatch_ingest.parsing import (
    ParsePool,
    SearchResult,
    parse_efetch_batch,
    parse_esearch,
)
from pubwatch_ingest.ratelimit import RateLimiter
from pubwatch_ingest.settings import IngestSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
# Longer search terms go by POST: NCBI's front end refuses very long URLs.
_MAX_GET_TERM_CHARS = 1500
# efetch batches under way at once: later ones are on the wire while earlier ones are parsed.
_FETCHES_IN_FLIGHT = 4

__all__ = ["EutilsClient", "SearchResult", "eutils_date"]


def eutils_date(day: date) -> str:
    return day.strftime("%Y/%m/%d")


class EutilsClient:
    """esearch and efetch against ``settings.eutils_url``. Close with :meth:`aclose`."""

    def __init__(
        self,
        settings: IngestSettings,
        limiter: RateLimiter,
        transport: httpx.AsyncBaseTransport | None = None,
        metrics: IngestMetrics | None = None,
        parser: ParsePool | None = None,
    ) -> None:
        self.settings = settings
        self.limiter = limiter
        self.metrics = metrics
        self._parser = parser or ParsePool(settings.resolved_dtd_cache_dir)
        self.requests_sent = 0  # every HTTP attempt, retries included
        self._http = httpx.AsyncClient(
            base_url=settings.eutils_url,
            timeout=httpx.Timeout(settings.request_timeout_s),
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=4),
            headers={"User-Agent": f"{settings.ncbi_tool} (PubWatch ingest)"},
            transport=transport,
        )

    async def aclose(self) -> None:
        try:
            await self._http.aclose()
        finally:
            await self._parser.aclose()

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
        """One E-utilities call: rate-limited attempts until a parsed answer or a final error.

        ``parse`` runs in a worker process, so it must be picklable (a module-level function
        or a ``functools.partial`` of one).
        """
        data = {**params, **self._identity()}
        last_problem = ""
        for attempt in range(1, self.settings.max_attempts + 1):
            if method == "POST":
                request = self._http.build_request("POST", endpoint, data=data)
            else:
                request = self._http.build_request("GET", endpoint, params=data)
            retry_after_s: float | None = None
            # Each attempt is counted by its outcome, so retries show up in /metrics.
            outcome = "error"
            slot = await self.limiter.acquire()
            # Nothing may come between admission and the write but the send itself.
            started = time.monotonic()
            self.requests_sent += 1
            try:
                try:
                    # The lease is the limiter's bound on admission-to-headers.
                    async with asyncio.timeout(self.limiter.lease_s):
                        response = await self._http.send(request, stream=True)
                finally:
                    # The answer has begun (or the attempt failed): the server has the
                    # request, so its slot now counts from this moment.
                    await self.limiter.sent(slot)
                try:
                    body = await response.aread()
                finally:
                    await response.aclose()
                if response.status_code == 200:
                    parsed = await self._parser.run(parse, body)
                    outcome = "ok"
                    return parsed
                outcome = f"http_{response.status_code}"
                if response.status_code not in _TRANSIENT_STATUS:
                    raise PermanentEutilsError(
                        f"{endpoint} answered HTTP {response.status_code}: {response.text[:200]}"
                    )
                last_problem = f"HTTP {response.status_code}"
                retry_after_s = _retry_after_s(response)
            except (httpx.TimeoutException, TimeoutError) as exc:
                outcome = "timeout"
                last_problem = f"timeout ({type(exc).__name__})"
            except httpx.TransportError as exc:
                outcome = "connection_error"
                last_problem = f"connection problem ({type(exc).__name__}: {exc})"
            except MalformedXMLError as exc:
                outcome = "bad_xml"
                last_problem = str(exc)
            except DTDMismatchError as exc:
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
        return await self._call(method, "esearch.fcgi", params, parse_esearch)

    async def efetch(self, pmids: Sequence[str]) -> list[Article]:
        """One efetch by POST of at most ``efetch_batch_size`` PMIDs."""
        if len(pmids) > self.settings.efetch_batch_size:
            raise ValueError(f"efetch takes at most {self.settings.efetch_batch_size} ids per call")
        params = {"db": "pubmed", "id": ",".join(pmids), "retmode": "xml"}
        parse = functools.partial(parse_efetch_batch, requested=len(pmids))
        return await self._call("POST", "efetch.fcgi", params, parse)

    async def fetch_articles(
        self,
        pmids: Sequence[str],
        on_batch: Callable[[int, int], Any] | None = None,
    ) -> dict[str, Article]:
        """Every record for ``pmids`` that PubMed returns, in batches; ``on_batch(done, total)``.

        Up to ``_FETCHES_IN_FLIGHT`` batches are under way at once, so some are parsed while
        others are fetched; the rate limit paces them. The first failure cancels the rest
        and is raised.
        """
        found: dict[str, Article] = {}
        size = self.settings.efetch_batch_size
        batches = [list(pmids[start : start + size]) for start in range(0, len(pmids), size)]
        gate = asyncio.Semaphore(_FETCHES_IN_FLIGHT)
        done = 0

        async def fetch(batch: list[str]) -> None:
            nonlocal done
            async with gate:
                articles = await self.efetch(batch)
            for article in articles:
                found[article.pmid] = article
            done += len(batch)
            if on_batch is not None:
                on_batch(done, len(pmids))

        try:
            async with asyncio.TaskGroup() as group:
                for batch in batches:
                    group.create_task(fetch(batch))
        except BaseExceptionGroup as group_error:
            # One batch's failure ends the fetch; the caller sees that error itself.
            raise group_error.exceptions[0] from None
        return found


def _retry_after_s(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
