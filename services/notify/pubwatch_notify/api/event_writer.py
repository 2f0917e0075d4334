"""Group commit for the events API: posts that arrive together share one transaction.

Each ``POST /v1/events`` hands its event to the process's :class:`EventWriter` and waits.
The writer takes every event waiting, stores them in one transaction (SQLAlchemy Core, a few
statements whatever their number), commits, queues their ``handle_event`` jobs in one Redis
round trip, and only then answers each waiting request. So the guarantee a client relies on
holds for every event of a batch: a 2xx answer means the event is committed and queued.
Requests that arrive while a batch is being written form the next batch; no request waits
for a timer.

A batch that fails as a whole because the store or Redis is down fails each of its requests
(503, nothing answered as accepted). When Redis fails after the commit, the events *are*
stored (:class:`StoredNotQueued`): the answer says so, a retry of the same post queues them,
and the notify worker's sweeper queues any event left un-fanned-out for over a minute.
Any other failure of a batch of several is retried one event at a time, so one bad event
cannot fail the others posted with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from arq import ArqRedis
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms
from redis.exceptions import RedisError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine

from pubwatch_notify.delivery.intake import StoredSummary, store_events_core
from pubwatch_shared.events import ChangeEvent
from pubwatch_shared.queue import HANDLE_EVENT_JOB, NOTIFY_QUEUE, event_job_id

log = logging.getLogger("pubwatch.notify.events_api")

# At most this many events per transaction; the rest wait for the next one.
MAX_BATCH = 200

# arq's enqueue_job, for many jobs in one atomic script: a job whose key or result exists
# is not queued again (the deterministic job id makes a re-enqueue a no-op).
# KEYS: the queue, then job key and result key per job. ARGV: expiry ms, score, then the
# serialized job per job.
_ENQUEUE_MANY = """
local queued = 0
local expires_ms = tonumber(ARGV[1])
local score = tonumber(ARGV[2])
for i = 2, #KEYS, 2 do
  local job_key = KEYS[i]
  if redis.call('EXISTS', job_key, KEYS[i + 1]) == 0 then
    redis.call('PSETEX', job_key, expires_ms, ARGV[2 + i / 2])
    redis.call('ZADD', KEYS[1], score, string.sub(job_key, ARGV_PREFIX_LEN + 1))
    queued = queued + 1
  end
end
return queued
""".replace("ARGV_PREFIX_LEN", str(len(job_key_prefix)))


class StoredNotQueued(Exception):
    """The batch was committed, but queuing its ``handle_event`` jobs failed (``__cause__``
    says why). Its events will still be fanned out: by a retried post, or by the sweeper."""


_UNAVAILABLE = (
    RedisError,
    OperationalError,
    InterfaceError,
    PoolTimeoutError,
    OSError,
    StoredNotQueued,
)


@dataclass
class _Waiting:
    event: ChangeEvent
    posted_by: str | None
    answer: asyncio.Future[StoredSummary]


class EventWriter:
    """Stores and queues posted events in shared transactions; one per API process."""

    def __init__(self, engine: AsyncEngine, queue: ArqRedis) -> None:
        self._engine = engine
        self._queue = queue
        self._enqueue_many: Any = queue.register_script(_ENQUEUE_MANY)
        self._waiting: list[_Waiting] = []
        self._flusher: asyncio.Task[None] | None = None

    async def store(self, event: ChangeEvent, posted_by: str | None) -> StoredSummary:
        """Store ``event`` (unless its (source, id) is stored) and queue it for fan-out when
        it is new or not fanned out yet; return once both are done."""
        answer: asyncio.Future[StoredSummary] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(event, posted_by, answer))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_all())
        return await asyncio.shield(answer)

    async def drain(self) -> None:
        """Wait until every event handed over so far is answered (at shutdown)."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    async def _flush_all(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
            try:
                await self._write(batch)
            except Exception as exc:
                if len(batch) > 1 and not isinstance(exc, _UNAVAILABLE):
                    log.warning(
                        "events API: a batch failed; storing its events one at a time",
                        extra={"error": repr(exc), "events": len(batch)},
                    )
                    for waiting in batch:
                        try:
                            await self._write([waiting])
                        except Exception as single_exc:
                            _fail([waiting], single_exc)
                else:
                    _fail(batch, exc)

    async def _write(self, batch: Sequence[_Waiting]) -> None:
        async with self._engine.begin() as conn:
            stored = await store_events_core(conn, [(w.event, w.posted_by) for w in batch])
        # Committed. Queue what is new, and a repeat not yet fanned out: the first answer
        # may have been lost to a Redis failure after its commit.
        to_queue: dict[str, dict[str, object]] = {}
        for waiting, summary in zip(batch, stored, strict=True):
            if summary.created or summary.fanned_out_at is None:
                event = (
                    waiting.event
                    if summary.created
                    else ChangeEvent.model_validate(summary.payload)
                )
                to_queue.setdefault(event_job_id(event), event.to_payload())
        if to_queue:
            try:
                await self._enqueue(to_queue)
            except (RedisError, OSError) as exc:
                raise StoredNotQueued(f"stored, but not queued: {exc!r}") from exc
        for waiting, summary in zip(batch, stored, strict=True):
            if not waiting.answer.done():
                waiting.answer.set_result(summary)

    async def _enqueue(self, payloads: dict[str, dict[str, object]]) -> None:
        queue = self._queue
        now_ms = timestamp_ms()
        keys: list[str] = [NOTIFY_QUEUE]
        args: list[Any] = [queue.expires_extra_ms, now_ms]
        for job_id, payload in payloads.items():
            keys += [job_key_prefix + job_id, result_key_prefix + job_id]
            args.append(
                serialize_job(
                    HANDLE_EVENT_JOB,
                    (payload,),
                    {},
                    None,
                    now_ms,
                    serializer=queue.job_serializer,
                )
            )
        await self._enqueue_many(keys=keys, args=args)


def _fail(batch: Sequence[_Waiting], exc: BaseException) -> None:
    for waiting in batch:
        if not waiting.answer.done():
            waiting.answer.set_exception(exc)
