"""One poll of a set of topics: search, find what is new, fetch it once, announce it once.

For each batch of topics (``topics_per_batch``) the poller

1. takes each topic's lock (a topic another poller holds is skipped: "busy"), renewing the
   locks in the background while it works;
2. finishes any outbox a killed poller left behind (see :mod:`pubwatch_ingest.state`);
3. searches each topic by entry date from its watermark minus the overlap window (the first
   poll searches everything: the baseline), and, when due, for retracted articles;
4. fetches the new PMIDs of all the batch's topics together, each once, in efetch batches
   started while the searches go on (see :mod:`pubwatch_ingest.fetching`), reusing articles
   another topic fetched moments ago (the shared article cache);
5. per topic: builds the events (ids derived from their content), writes them and the state
   change to the outbox, enqueues them on the notify queue, then applies the state change.

A failure of E-utilities ends the batch's topics without committing anything: the next poll
repeats the work, and the deterministic event ids make the repeat harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from arq import ArqRedis

from pubwatch_ingest.announcements import article_events, retraction_event
from pubwatch_ingest.articles import Article
from pubwatch_ingest.errors import EutilsError
from pubwatch_ingest.eutils import EutilsClient, SearchResult, eutils_date
from pubwatch_ingest.evidence import RETRACTED_TYPE
from pubwatch_ingest.fetching import ArticleStream, Progress
from pubwatch_ingest.opsmetrics import IngestMetrics
from pubwatch_ingest.settings import IngestSettings
from pubwatch_ingest.state import ArticleCache, LockLostError, StateChange, TopicState
from pubwatch_shared.events import ChangeEvent, EventType
from pubwatch_shared.queue import enqueue_event
from pubwatch_shared.topics import Topic

log = logging.getLogger("pubwatch.ingest")


def retraction_term(query: str) -> str:
    """The topic's query narrowed to retracted articles."""
    return f'({query}) AND "{RETRACTED_TYPE}"[pt]'


@dataclass
class TopicReport:
    """What one poll did for one topic (printed by the CLI, logged by the worker)."""

    slug: str
    status: str = "polled"  # polled, baseline, busy, not-due, failed
    found: int = 0
    new_articles: list[Article] = field(default_factory=list)
    notices: int = 0  # errata, comments and already-retracted records: seen, not announced
    missing: int = 0  # returned by esearch, not by efetch: retried next poll
    retracted: list[Article] = field(default_factory=list)
    events: list[ChangeEvent] = field(default_factory=list)
    recovered_events: int = 0
    error: str | None = None


@dataclass
class _Plan:
    topic: Topic
    state: TopicState
    report: TopicReport
    baseline: bool
    search: SearchResult
    new_pmids: list[str]
    retraction_pmids: list[str]
    retractions_checked: bool
    next_watermark: str


class Poller:
    """Polls topics against E-utilities and posts their change events on the notify queue."""

    def __init__(
        self,
        settings: IngestSettings,
        redis: ArqRedis,
        client: EutilsClient,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.client = client
        self.clock = clock
        self.cache = ArticleCache(redis, settings.article_cache_ttl_s)
        self.metrics = IngestMetrics(redis)
        # Strong references to the lock-renewal tasks (the loop only keeps weak ones).
        self._renewers: set[asyncio.Task[None]] = set()

    async def poll(
        self,
        topics: Sequence[Topic],
        *,
        dry_run: bool = False,
        only_due: bool = False,
        progress: Progress | None = None,
    ) -> list[TopicReport]:
        """Poll ``topics`` now (``only_due``: those whose interval has passed)."""
        reports: list[TopicReport] = []
        size = self.settings.topics_per_batch
        for start in range(0, len(topics), size):
            batch = topics[start : start + size]
            reports += await self._poll_batch(
                batch, dry_run=dry_run, only_due=only_due, progress=progress
            )
        return reports

    async def _is_due(self, state: TopicState) -> bool:
        polled_at = await state.polled_at()
        if polled_at is None:
            return True
        # A little slack so a schedule tick that lands a moment early still polls.
        interval_s = self.settings.poll_interval_min * 60 - 30
        return self.clock().timestamp() - polled_at >= interval_s

    async def _poll_batch(
        self,
        topics: Sequence[Topic],
        *,
        dry_run: bool,
        only_due: bool,
        progress: Progress | None,
    ) -> list[TopicReport]:
        reports: list[TopicReport] = []
        owned: list[tuple[Topic, TopicState, TopicReport]] = []
        for topic in topics:
            state = TopicState(self.redis, topic.slug)
            report = TopicReport(topic.slug)
            reports.append(report)
            if only_due and not await self._is_due(state):
                report.status = "not-due"
                continue
            if not dry_run and not await state.try_lock(self.settings.lock_ttl_s):
                report.status = "busy"
                log.info(
                    "topic %s is being polled elsewhere; skipped",
                    topic.slug,
                    extra={"topic": topic.slug},
                )
                continue
            owned.append((topic, state, report))
        if not owned:
            return reports
        held = [state for _, state, _ in owned if state.held]
        self._renewers.add(renewer := asyncio.create_task(self._renew_locks(held)))
        try:
            await self._work(owned, dry_run=dry_run, progress=progress)
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            self._renewers.discard(renewer)
            for _, state, _ in owned:
                if state.held:
                    with contextlib.suppress(Exception):
                        await state.unlock()
        return reports

    async def _renew_locks(self, states: list[TopicState]) -> None:
        ttl_s = self.settings.lock_ttl_s
        while True:
            await asyncio.sleep(ttl_s / 3)
            for state in states:
                if not state.held:
                    continue
                try:
                    if not await state.renew(ttl_s):
                        log.warning(
                            "lost the lock on topic %s", state.slug, extra={"topic": state.slug}
                        )
                except Exception as exc:
                    # Redis briefly away: the next renewal (or the commit's check) decides.
                    log.warning("could not renew the lock on topic %s: %s", state.slug, exc)

    async def _work(
        self,
        owned: list[tuple[Topic, TopicState, TopicReport]],
        *,
        dry_run: bool,
        progress: Progress | None,
    ) -> None:
        plans: list[_Plan] = []
        stream = ArticleStream(self.client, self.cache, self.settings.efetch_batch_size, progress)
        try:
            for topic, state, report in owned:
                try:
                    if not dry_run:
                        report.recovered_events = await self._finish_outbox(state)
                    plan = await self._plan(topic, state, report)
                except (EutilsError, LockLostError) as exc:
                    self._fail(report, exc)
                    continue
                plans.append(plan)
                await stream.add(plan.new_pmids, plan.retraction_pmids)
            articles = await stream.finish()
        except EutilsError as exc:
            # An efetch failed: no topic of the batch commits anything.
            for _, _, report in owned:
                if report.status != "failed":
                    self._fail(report, exc)
            return
        finally:
            await stream.cancel()
        for plan in plans:
            try:
                await self._announce(plan, articles, dry_run=dry_run)
            except LockLostError as exc:
                self._fail(plan.report, exc)

    def _fail(self, report: TopicReport, exc: Exception) -> None:
        report.status = "failed"
        report.error = str(exc)
        log.error(
            "poll of topic %s failed, nothing committed: %s",
            report.slug,
            exc,
            extra={"topic": report.slug},
        )

    async def _finish_outbox(self, state: TopicState) -> int:
        """Enqueue and commit what a killed poller left in the outbox; the events it held."""
        outbox = await state.outbox()
        if outbox is None:
            return 0
        for payload in outbox.events:
            await enqueue_event(self.redis, ChangeEvent.model_validate(payload))
        await state.apply_outbox()
        log.info(
            "topic %s: finished an interrupted poll (%d events re-sent)",
            state.slug,
            len(outbox.events),
            extra={"topic": state.slug, "events": len(outbox.events)},
        )
        return len(outbox.events)

    async def _plan(self, topic: Topic, state: TopicState, report: TopicReport) -> _Plan:
        now = self.clock()
        watermark = await state.watermark()
        baseline = watermark is None
        if baseline:
            search = await self.client.esearch(topic.query)
        else:
            assert watermark is not None
            since = _parse_day(watermark) - timedelta(days=self.settings.overlap_days)
            # NCBI dates entries in US Eastern time; tomorrow (UTC) as the end covers today there.
            until = now.date() + timedelta(days=1)
            search = await self.client.esearch(
                topic.query, datetype="edat", mindate=since, maxdate=until
            )
        if search.truncated:
            log.warning(
                "topic %s: PubMed has %d matches, only the newest %d are read",
                topic.slug,
                search.count,
                len(search.pmids),
                extra={"topic": topic.slug},
            )
        new_pmids = await state.unseen(search.pmids)
        retraction_pmids: list[str] = []
        checked = False
        if not baseline and await self._retractions_due(state, now):
            retracted = await self.client.esearch(retraction_term(topic.query))
            retraction_pmids = await state.announced_not_retracted(retracted.pmids)
            checked = True
        report.status = "baseline" if baseline else "polled"
        report.found = len(search.pmids)
        return _Plan(
            topic=topic,
            state=state,
            report=report,
            baseline=baseline,
            search=search,
            new_pmids=new_pmids,
            retraction_pmids=retraction_pmids,
            retractions_checked=checked,
            next_watermark=eutils_date(now.date()),
        )

    async def _retractions_due(self, state: TopicState, now: datetime) -> bool:
        checked_at = await state.retractions_checked_at()
        if (
            checked_at is not None
            and now.timestamp() - checked_at < self.settings.retraction_check_interval_s
        ):
            return False
        return await state.has_announced()

    async def _announce(self, plan: _Plan, articles: dict[str, Article], *, dry_run: bool) -> None:
        report = plan.report
        now = self.clock()
        fetched = [articles[p] for p in plan.new_pmids if p in articles]
        report.missing = len(plan.new_pmids) - len(fetched)
        # Errata, comments and the like are not evidence; nor is a study already retracted.
        skipped = [a for a in fetched if a.is_notice_only or a.is_retracted]
        announced = [a for a in fetched if not (a.is_notice_only or a.is_retracted)]
        report.notices = len(skipped)
        report.new_articles = announced
        report.retracted = [articles[p] for p in plan.retraction_pmids if p in articles]
        event_type = EventType.BASELINE if plan.baseline else EventType.NEW
        events = article_events(
            plan.topic.slug, event_type, announced, now, self.settings.event_chunk_size
        )
        events += [retraction_event(plan.topic.slug, a, now) for a in report.retracted]
        report.events = events
        if not dry_run:
            change = StateChange(
                seen=[a.pmid for a in fetched],
                announced=[a.pmid for a in announced],
                retracted=[a.pmid for a in report.retracted],
                watermark=plan.next_watermark,
                polled_at=now.timestamp(),
                # A baseline has announced nothing yet, so it counts as a check.
                retractions_checked_at=(
                    now.timestamp() if plan.retractions_checked or plan.baseline else None
                ),
            )
            await plan.state.write_outbox([e.to_payload() for e in events], change)
            for event in events:
                await enqueue_event(self.redis, event)
            await plan.state.apply_outbox()
            await self.metrics.poll_committed(plan.topic.slug, change.polled_at, len(announced))
        log.info(
            "topic %s %s: %d found, %d new, %d retracted, %d events%s",
            plan.topic.slug,
            "baseline recorded" if plan.baseline else "polled",
            report.found,
            len(announced),
            len(report.retracted),
            len(events),
            " (dry run, nothing sent)" if dry_run else "",
            extra={
                "topic": plan.topic.slug,
                "found": report.found,
                "new": len(announced),
                "notices": report.notices,
                "missing": report.missing,
                "retracted": len(report.retracted),
                "events": len(events),
            },
        )


def _parse_day(value: str) -> date:
    return datetime.strptime(value, "%Y/%m/%d").replace(tzinfo=UTC).date()
