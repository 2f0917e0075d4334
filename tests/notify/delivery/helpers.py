"""Building blocks for the delivery tests: settings, subscribers, events, a worker to drain."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from arq.worker import Worker
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from pubwatch_notify.settings import NotifySettings
from pubwatch_notify.store.engine import make_engine, make_sessionmaker
from pubwatch_notify.store.migrate import upgrade_to_head
from pubwatch_notify.store.models import Delivery, Subscription
from pubwatch_notify.worker import build_worker
from pubwatch_shared.events import ChangeEvent
from pubwatch_shared.queue import NOTIFY_QUEUE, enqueue_event

REPO_ROOT = Path(__file__).resolve().parents[3]
TOPIC = "indolent-systemic-mastocytosis"
OTHER_TOPIC = "mast-cell-activation-syndrome"
SIGNING_TOKEN = "test-auth-token-0123456789abcdef"


def make_settings(
    tmp_path: Path, database_url: str, redis_url: str, **overrides: Any
) -> NotifySettings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "var_dir": tmp_path / "var",
        "topics_file": REPO_ROOT / "topics.toml",
        "public_url": "https://pubwatch.example.org",
        "retry_base_delay_s": 0.05,
        "retry_max_delay_s": 1.0,
        "worker_max_jobs": 4,
    }
    values.update(overrides)
    return NotifySettings(**values)


class Clock:
    """A clock tests move by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


async def migrated_sessions(
    settings: NotifySettings,
) -> tuple[Any, async_sessionmaker[AsyncSession]]:
    engine = make_engine(settings.resolved_database_url)
    await upgrade_to_head(engine)
    return engine, make_sessionmaker(engine)


async def add_subscribers(
    sessions: async_sessionmaker[AsyncSession],
    count: int,
    *,
    topic: str = TOPIC,
    channel: str = "email",
    status: str = "confirmed",
    frequency: str = "immediate",
    min_level: str = "other",
    timezone: str = "UTC",
    prefix: str = "reader",
    next_digest_at: datetime | None = None,
) -> list[int]:
    """Subscriptions inserted directly (the subscription flow has its own tests)."""
    rows = []
    for n in range(count):
        address = f"+1555{n:07d}" if channel == "sms" else f"{prefix}{n}@example.org"
        rows.append(
            {
                "topic": topic,
                "channel": channel,
                "address": address,
                "address_hash": hashlib.sha256(f"{topic}{channel}{address}".encode()).hexdigest(),
                "status": status,
                "frequency": frequency,
                "min_level": min_level,
                "timezone": timezone,
                "token_version": 1,
                "created_at": datetime.now(UTC),
                "next_digest_at": next_digest_at,
            }
        )
    async with sessions.begin() as session:
        for start in range(0, len(rows), 2000):
            await session.execute(insert(Subscription), rows[start : start + 2000])
        ids = await session.scalars(
            select(Subscription.id)
            .where(
                Subscription.address.in_([r["address"] for r in rows]), Subscription.topic == topic
            )
            .order_by(Subscription.id)
        )
        return list(ids)


def article(pmid: str, level: str = "rct", title: str | None = None) -> dict[str, Any]:
    return {
        "title": title or f"A study numbered {pmid} on mast cells.",
        "url": f"https://pubmed.ncbi.nlm.nih.gov/{pmid}/",
        "summary": f"What study {pmid} found, in plain words.",
        "pmid": pmid,
        "journal": "Example Journal",
        "published": "2026-11",
        "publication_types": ["Journal Article"],
        "evidence_level": level,
    }


def make_event(
    event_id: str, items: list[dict[str, Any]], *, topic: str = TOPIC, type_: str = "evidence.new"
) -> ChangeEvent:
    return ChangeEvent.model_validate(
        {
            "id": event_id,
            "type": type_,
            "topic": topic,
            "source": "pubmed",
            "occurred_at": "2026-11-25T06:00:00Z",
            "items": items,
        }
    )


async def deliveries(sessions: async_sessionmaker[AsyncSession]) -> list[Delivery]:
    async with sessions() as session:
        return list(await session.scalars(select(Delivery).order_by(Delivery.id)))


@dataclass
class RunningWorker:
    """An in-process notify worker that tests drain: run until nothing is due soon."""

    worker: Worker
    task: asyncio.Task[None]
    jobs_seen: list[str] = field(default_factory=list)

    @property
    def ctx(self) -> dict[str, Any]:
        return self.worker.ctx

    @property
    def redis(self) -> Any:
        return self.worker.ctx["redis"]

    async def enqueue(self, event: ChangeEvent) -> None:
        await enqueue_event(self.redis, event)

    async def drain(self, timeout_s: float = 60.0, horizon_s: float = 30.0) -> None:
        """Wait until no job is due within ``horizon_s`` and none is running."""
        deadline = time.monotonic() + timeout_s
        idle_checks = 0
        while idle_checks < 3:
            if time.monotonic() > deadline:
                raise TimeoutError("the worker did not go idle")
            await asyncio.sleep(0.05)
            horizon_ms = int((time.time() + horizon_s) * 1000)
            due = await self.redis.zcount(NOTIFY_QUEUE, "-inf", horizon_ms)
            busy = any(not task.done() for task in self.worker.tasks.values())
            idle_checks = idle_checks + 1 if (due == 0 and not busy) else 0


@contextlib.asynccontextmanager
async def running_worker(
    settings: NotifySettings, redis_url: str, clock: Any = None
) -> AsyncIterator[RunningWorker]:
    kwargs: dict[str, Any] = {"poll_delay_s": 0.02, "handle_signals": False}
    if clock is not None:
        kwargs["clock"] = clock
    worker = build_worker(settings, redis_url, **kwargs)
    task = asyncio.create_task(worker.async_run())
    while "pubwatch" not in worker.ctx:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield RunningWorker(worker, task)
    finally:
        with warnings.catch_warnings():
            # arq 0.28 closes its pool with redis' deprecated close(); not ours to fix.
            warnings.simplefilter("ignore", DeprecationWarning)
            await worker.close()
        with contextlib.suppress(asyncio.CancelledError):
            await task
