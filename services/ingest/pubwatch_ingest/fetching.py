"""Fetching a batch's articles while its topics are still being searched.

The poller searches its topics one after another; each esearch waits for its slot under the
rate limit, and meanwhile the process has nothing to do. An efetch batch is started as
soon as the searches so far have found enough new PMIDs to fill it, so fetching and parsing
overlap the remaining searches instead of all coming after them (at 100 topics the fetch
phase after the searches took 4.4 s for 27 efetches, ~6/s against a limit of 10/s, the
parsing being packed into it).

Each PMID is fetched at most once per batch of topics; articles another topic fetched
moments ago come from the shared cache, except retraction refreshes, which are always
fetched afresh (their record has changed).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

from pubwatch_ingest.articles import Article
from pubwatch_ingest.eutils import EutilsClient
from pubwatch_ingest.state import ArticleCache

# Efetch batches under way at once: some are parsed while others are fetched; the rate
# limit paces the requests.
FETCHES_IN_FLIGHT = 4

# progress(stage, done, total): "fetch" while efetch batches arrive.
Progress = Callable[[str, int, int], None]


class ArticleStream:
    def __init__(
        self,
        client: EutilsClient,
        cache: ArticleCache,
        batch_size: int,
        progress: Progress | None = None,
    ) -> None:
        self._client = client
        self._cache = cache
        self._batch_size = batch_size
        self._progress = progress
        self._looked_up: set[str] = set()  # wanted PMIDs already looked up in the cache
        self._fetching: set[str] = set()  # PMIDs pending, in flight or fetched
        self._pending: list[str] = []
        self._found: dict[str, Article] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._gate = asyncio.Semaphore(FETCHES_IN_FLIGHT)
        self._fetched = 0

    async def add(self, new_pmids: Sequence[str], refresh_pmids: Sequence[str]) -> None:
        """Take one topic's needs; start an efetch for every full batch. Raises the error
        of an efetch that has already failed (the batch's poll is over)."""
        self._raise_first_failure()
        for pmid in dict.fromkeys(refresh_pmids):
            if pmid not in self._fetching:
                self._fetching.add(pmid)
                self._pending.append(pmid)
        wanted = [
            pmid
            for pmid in dict.fromkeys(new_pmids)
            if pmid not in self._fetching and pmid not in self._looked_up
        ]
        self._looked_up.update(wanted)
        cached = await self._cache.get_many(wanted)
        for pmid in wanted:
            if pmid in cached:
                self._found.setdefault(pmid, cached[pmid])
            else:
                self._fetching.add(pmid)
                self._pending.append(pmid)
        while len(self._pending) >= self._batch_size:
            self._start(self._batch_size)

    async def finish(self) -> dict[str, Article]:
        """Fetch what is left and wait for every efetch; the articles by PMID. The first
        efetch to fail cancels the others and its error is raised."""
        if self._pending:
            self._start(len(self._pending))
        try:
            await asyncio.gather(*self._tasks)
        except BaseException:
            await self.cancel()
            raise
        return self._found

    async def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task

    def _start(self, size: int) -> None:
        batch, self._pending = self._pending[:size], self._pending[size:]
        self._tasks.append(asyncio.create_task(self._fetch(batch)))

    async def _fetch(self, pmids: list[str]) -> None:
        async with self._gate:
            fetched = await self._client.fetch_articles(pmids)
        await self._cache.put_many(list(fetched.values()))
        # A fresh record wins over a cached one (a refreshed retraction).
        self._found.update(fetched)
        self._fetched += len(pmids)
        if self._progress is not None:
            self._progress("fetch", self._fetched, len(self._fetching))

    def _raise_first_failure(self) -> None:
        for task in self._tasks:
            if task.done() and not task.cancelled():
                error = task.exception()
                if error is not None:
                    raise error
