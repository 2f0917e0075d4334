"""Per-topic ingest state in Redis, and the steps that change it atomically.

Keys (``{slug}`` is a Redis Cluster hash tag, so one topic's keys live together and one
Lua script may touch them all)::

    pubwatch:ingest:topic:{slug}:watermark        last poll's entry date, YYYY/MM/DD
    pubwatch:ingest:topic:{slug}:seen             set of PMIDs already handled
    pubwatch:ingest:topic:{slug}:announced        set of PMIDs posted in an event
    pubwatch:ingest:topic:{slug}:retracted        set of PMIDs whose retraction was posted
    pubwatch:ingest:topic:{slug}:polled_at        epoch seconds of the last committed poll
    pubwatch:ingest:topic:{slug}:retractions_checked_at   epoch seconds
    pubwatch:ingest:topic:{slug}:lock             token of the poller that owns the topic
    pubwatch:ingest:topic:{slug}:outbox:events    JSON list of event payloads to enqueue
    pubwatch:ingest:topic:{slug}:outbox:state     JSON of the state change they imply
    pubwatch:ingest:article:<pmid>                short-lived cache of a parsed article

Crash safety: a poll writes its outbox (the events with their ids, and the state change)
in one step, enqueues every event, then applies the outbox in one step. Killed before the
outbox exists, the poll left no trace and is simply repeated; killed after, the next poll
of the topic re-enqueues the *same* events (arq drops a job id it already has, notify
drops an event id it already stored) and applies the outbox. Both steps check the lock
token, so a poller that lost its lock (paused past the TTL) cannot overwrite a successor.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from redis.asyncio import Redis

from pubwatch_ingest.articles import Article

PREFIX = "pubwatch:ingest:"
ARTICLE_PREFIX = PREFIX + "article:"

_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS: lock, outbox:events, outbox:state. ARGV: token, events JSON, state JSON.
_WRITE_OUTBOX = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SET', KEYS[3], ARGV[3])
return 1
"""
# KEYS: lock, outbox:events, outbox:state, seen, announced, retracted, watermark, polled_at,
# retractions_checked_at. ARGV: token. Returns -1 without the lock, 0 with no outbox.
_APPLY_OUTBOX = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local raw = redis.call('GET', KEYS[3])
if not raw then return 0 end
local change = cjson.decode(raw)
local function add_all(key, members)
  for i = 1, #members, 1000 do
    redis.call('SADD', key, unpack(members, i, math.min(i + 999, #members)))
  end
end
add_all(KEYS[4], change['seen'])
add_all(KEYS[5], change['announced'])
add_all(KEYS[6], change['retracted'])
if change['watermark'] ~= cjson.null then redis.call('SET', KEYS[7], change['watermark']) end
redis.call('SET', KEYS[8], change['polled_at'])
if change['retractions_checked_at'] ~= cjson.null then
  redis.call('SET', KEYS[9], change['retractions_checked_at'])
end
redis.call('DEL', KEYS[2], KEYS[3])
return 1
"""


T = TypeVar("T")


async def awaited(value: Awaitable[T] | T) -> T:
    """redis-py types its commands as sync-or-async; on the asyncio client they are async."""
    if isinstance(value, Awaitable):
        return await value
    return value


def topic_key(slug: str, name: str) -> str:
    return f"{PREFIX}topic:{{{slug}}}:{name}"


class LockLostError(RuntimeError):
    """This poller no longer owns the topic; another one may have taken over."""


@dataclass
class StateChange:
    """What a committed poll changes; stored in the outbox before any event is enqueued."""

    seen: list[str] = field(default_factory=list)
    announced: list[str] = field(default_factory=list)
    retracted: list[str] = field(default_factory=list)
    watermark: str | None = None  # YYYY/MM/DD
    polled_at: float = 0.0
    retractions_checked_at: float | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


@dataclass(frozen=True)
class Outbox:
    events: list[dict[str, Any]]
    change: StateChange


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


class TopicState:
    """One topic's state, and the lock that makes one poller at a time its owner."""

    def __init__(self, redis: Redis, slug: str) -> None:
        self.redis = redis
        self.slug = slug
        self.token = uuid.uuid4().hex
        self.held = False

    def key(self, name: str) -> str:
        return topic_key(self.slug, name)

    async def _eval(self, script: str, keys: list[str], args: list[str]) -> Any:
        return await awaited(self.redis.eval(script, len(keys), *keys, *args))

    # -- the lock -------------------------------------------------------------------------

    async def try_lock(self, ttl_s: float) -> bool:
        ttl_ms = str(int(ttl_s * 1000))
        self.held = bool(await self._eval(_ACQUIRE, [self.key("lock")], [self.token, ttl_ms]))
        return self.held

    async def renew(self, ttl_s: float) -> bool:
        ttl_ms = str(int(ttl_s * 1000))
        self.held = bool(await self._eval(_RENEW, [self.key("lock")], [self.token, ttl_ms]))
        return self.held

    async def unlock(self) -> None:
        await self._eval(_RELEASE, [self.key("lock")], [self.token])
        self.held = False

    # -- reading --------------------------------------------------------------------------

    async def watermark(self) -> str | None:
        return _text(await self.redis.get(self.key("watermark")))

    async def polled_at(self) -> float | None:
        value = _text(await self.redis.get(self.key("polled_at")))
        return float(value) if value else None

    async def retractions_checked_at(self) -> float | None:
        value = _text(await self.redis.get(self.key("retractions_checked_at")))
        return float(value) if value else None

    async def _members(self, name: str, pmids: Sequence[str]) -> list[bool]:
        flags: list[bool] = []
        for start in range(0, len(pmids), 5000):
            chunk = list(pmids[start : start + 5000])
            answer = await awaited(self.redis.smismember(self.key(name), chunk))
            flags += [bool(flag) for flag in answer]
        return flags

    async def unseen(self, pmids: Sequence[str]) -> list[str]:
        """``pmids`` this topic has not handled yet, in the given order."""
        flags = await self._members("seen", pmids)
        return [pmid for pmid, seen in zip(pmids, flags, strict=True) if not seen]

    async def announced_not_retracted(self, pmids: Sequence[str]) -> list[str]:
        announced = await self._members("announced", pmids)
        retracted = await self._members("retracted", pmids)
        return [
            pmid
            for pmid, was_announced, was_retracted in zip(pmids, announced, retracted, strict=True)
            if was_announced and not was_retracted
        ]

    async def has_announced(self) -> bool:
        return bool(await awaited(self.redis.scard(self.key("announced"))))

    async def members(self, name: str) -> set[str]:
        found = await awaited(self.redis.smembers(self.key(name)))
        return {_text(member) or "" for member in found}

    async def outbox(self) -> Outbox | None:
        events_raw, change_raw = await self.redis.mget(
            [self.key("outbox:events"), self.key("outbox:state")]
        )
        if change_raw is None:
            return None
        events = json.loads(events_raw) if events_raw is not None else []
        return Outbox(events=events, change=StateChange(**json.loads(change_raw)))

    # -- the two atomic steps of a commit ------------------------------------------------

    async def write_outbox(self, events: list[dict[str, Any]], change: StateChange) -> None:
        keys = [self.key("lock"), self.key("outbox:events"), self.key("outbox:state")]
        args = [self.token, json.dumps(events, separators=(",", ":")), change.to_json()]
        if await self._eval(_WRITE_OUTBOX, keys, args) != 1:
            raise LockLostError(f"lost the lock on topic {self.slug} before writing its outbox")

    async def apply_outbox(self) -> bool:
        """Apply the pending state change; False when there was none."""
        names = ["lock", "outbox:events", "outbox:state", "seen", "announced", "retracted"]
        names += ["watermark", "polled_at", "retractions_checked_at"]
        applied = await self._eval(_APPLY_OUTBOX, [self.key(n) for n in names], [self.token])
        if applied == -1:
            raise LockLostError(f"lost the lock on topic {self.slug} before committing")
        return bool(applied)


class ArticleCache:
    """Parsed articles shared by every topic and process for a short while, so an article
    that several topics find in one cycle is fetched once."""

    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s

    async def get_many(self, pmids: Sequence[str]) -> dict[str, Article]:
        if not pmids:
            return {}
        raws = await self.redis.mget([ARTICLE_PREFIX + pmid for pmid in pmids])
        return {pmid: Article.from_json(raw) for pmid, raw in zip(pmids, raws, strict=True) if raw}

    async def put_many(self, articles: Sequence[Article]) -> None:
        if not articles:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for article in articles:
                pipe.set(ARTICLE_PREFIX + article.pmid, article.to_json(), ex=self.ttl_s)
            await pipe.execute()
