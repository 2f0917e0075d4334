"""E-utilities answers parsed in worker processes, off the event loop's process.

``Bio.Entrez.read`` on a 200-record efetch answer holds the GIL for a tenth of a second or
more; in a thread it still stalls the event loop (lock renewals, the next request). A
:class:`ParsePool` runs it in a small ``ProcessPoolExecutor`` instead, created once per
E-utilities client and shut down with it. The workers apply the same DTD cache folder as
the parent (:func:`pubwatch_ingest.articles.use_dtd_cache`).

What crosses the process boundary is plain picklable data: :class:`SearchResult`,
:class:`~pubwatch_ingest.articles.Article` dataclasses, and this project's own exceptions.
biopython's parse errors do not survive pickling, so the workers translate them here:
truncated or malformed XML becomes :class:`~pubwatch_ingest.errors.MalformedXMLError` (a
transient error, retried like any other), a DTD mismatch
:class:`~pubwatch_ingest.errors.DTDMismatchError` (permanent).
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import os
import select
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from xml.parsers.expat import ExpatError

from Bio.Entrez.Parser import CorruptedXMLError, NotXMLError, ValidationError

from pubwatch_ingest.articles import Article, parse_efetch, read_xml, use_dtd_cache
from pubwatch_ingest.errors import DTDMismatchError, MalformedXMLError, TransientEutilsError

T = TypeVar("T")

PARSE_WORKERS = 2


@dataclass(frozen=True)
class SearchResult:
    count: int  # every match PubMed knows of; may exceed len(pmids)
    pmids: list[str]

    @property
    def truncated(self) -> bool:
        return self.count > len(self.pmids)


def _read(body: bytes) -> Any:
    try:
        return read_xml(body)
    except (CorruptedXMLError, NotXMLError, ExpatError) as exc:
        raise MalformedXMLError(f"truncated or malformed XML ({type(exc).__name__})") from None
    except ValidationError as exc:
        raise DTDMismatchError(str(exc)) from None


def parse_esearch(body: bytes) -> SearchResult:
    record = _read(body)
    if "ERROR" in record:
        # NCBI reports back-end trouble inside a 200 answer; the same search usually works
        # a moment later.
        raise TransientEutilsError(f"esearch error: {record['ERROR']}")
    if "Count" not in record or "IdList" not in record:
        raise TransientEutilsError("esearch answer without Count or IdList")
    return SearchResult(count=int(record["Count"]), pmids=[str(pmid) for pmid in record["IdList"]])


def parse_efetch_batch(body: bytes, requested: int) -> list[Article]:
    """The articles of an efetch answer for ``requested`` PMIDs."""
    articles = parse_efetch(_read(body))
    if requested and not articles:
        # A well-formed but empty set for ids that esearch just returned is a hiccup (NCBI
        # does this under load), not proof the records are gone.
        raise TransientEutilsError(f"efetch returned none of {requested} records")
    return articles


def _init_worker(dtd_cache_dir: str, owner_pid: int) -> None:
    use_dtd_cache(Path(dtd_cache_dir))
    threading.Thread(
        target=_exit_with_owner, args=(owner_pid,), name="owner-watch", daemon=True
    ).start()


def _exit_with_owner(owner_pid: int) -> None:
    """End this worker when the process that owns the pool dies.

    A pool's workers hold both ends of its pipes, so they never see the owner go: after a
    SIGKILL they (and the forkserver) would wait forever.
    """
    try:
        pidfd = os.pidfd_open(owner_pid)
    except (AttributeError, OSError):
        pidfd = None
    if pidfd is not None:
        select.select([pidfd], [], [])  # readable once the owner has exited
        os._exit(0)
    while True:
        time.sleep(1.0)
        try:
            os.kill(owner_pid, 0)
        except ProcessLookupError:
            os._exit(0)
        except PermissionError:
            pass


def _ready() -> None:
    """A no-op: submitted once so the workers start before the first answer arrives."""


class ParsePool:
    """Worker processes for parsing; :meth:`close` (or ``aclose``) when done."""

    def __init__(self, dtd_cache_dir: Path, workers: int = PARSE_WORKERS) -> None:
        self._dtd_cache_dir = dtd_cache_dir
        self._workers = workers
        self._executor = self._start()

    def _start(self) -> ProcessPoolExecutor:
        # forkserver: no fork of this (threaded) process, and workers start in milliseconds
        # from a server that has already imported the parsing code.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["pubwatch_ingest.parsing"])
        executor = ProcessPoolExecutor(
            max_workers=self._workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(str(self._dtd_cache_dir), os.getpid()),
        )
        executor.submit(_ready)
        return executor

    async def run(self, parse: Callable[..., T], *args: Any) -> T:
        """``parse(*args)`` in a worker; its exceptions are raised here."""
        loop = asyncio.get_running_loop()
        executor = self._executor
        try:
            return await loop.run_in_executor(executor, functools.partial(parse, *args))
        except BrokenProcessPool as exc:
            # A worker died (killed, out of memory): start afresh and let the caller retry.
            if executor is self._executor:
                executor.shutdown(wait=False, cancel_futures=True)
                self._executor = self._start()
            raise TransientEutilsError(f"parse worker died ({exc})") from exc

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)
