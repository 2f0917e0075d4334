"""One NCBI rate limit shared by every ingest process, kept in Redis.

NCBI counts requests per identity (the API key, else the caller's address) per second, as
they *arrive* at its servers, and answers 429 over the limit. Every process that polls with
the same identity goes through one sliding-window log in Redis: a sorted set of request
times, trimmed and checked in a single Lua script, so N workers together never admit more
than ``limit`` requests in any window.

When a request reaches NCBI is known only within bounds: after its admission, and before
its answer starts to come back. An admission time alone is not enough: a process whose
event loop or CPU is starved between admission and the write delivers the request late,
bunched with later ones. So each request holds its slot in two phases:

1. :meth:`RateLimiter.acquire` admits it and records it as *in flight* (scored at admission
   + ``lease_s``, so it counts however long it takes);
2. :meth:`RateLimiter.sent`, called once the response headers arrived (or the attempt
   failed), re-scores it with the time of that call, by which the request has certainly
   reached the server. It then counts for ``window_s`` from there.

For any ``limit + 1`` requests that arrive within one second, the last one admitted was
admitted no earlier than its arrival, and the others were in flight or re-scored no earlier
than their arrival, so within ``window_s`` (>= 1 s) of it: the limiter would have held it
back. Hence ``window_s`` needs only a hair over 1 s, whatever the delays; the cost is
that a slot is held for the request's latency on top of the window. The clock is Redis's own
(``TIME``), so processes on hosts with skewed clocks still agree. Over the limit,
:meth:`RateLimiter.acquire` waits until a slot frees; it never fails. A process killed with
a request in flight leaves its slot counted until the lease runs out.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import uuid

from redis.asyncio import Redis

log = logging.getLogger(__name__)

KEY_PREFIX = "pubwatch:ncbi:rate:"

# ARGV: limit, window_us, member, lease_us. Returns 0 when admitted, else the microseconds
# to wait before asking again.
_ADMIT = """
local now_parts = redis.call('TIME')
local now_us = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local limit = tonumber(ARGV[1])
local window_us = tonumber(ARGV[2])
local lease_us = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_us - window_us)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now_us + lease_us, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil((window_us + lease_us) / 1000) + 1000)
  return 0
end
local oldest = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2])
if oldest > now_us then
  -- Every slot is in flight: none can free sooner than a window after it is re-scored.
  return window_us
end
return math.max(1, oldest + window_us - now_us)
"""

# ARGV: member, window_us, lease_us. Re-scores a request with now; re-adds it if its lease
# ran out meanwhile (it still counts from now on).
_SENT = """
local now_parts = redis.call('TIME')
local now_us = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
redis.call('ZADD', KEYS[1], now_us, ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil((tonumber(ARGV[2]) + tonumber(ARGV[3])) / 1000) + 1000)
return 0
"""


def identity_key(api_key: str | None) -> str:
    """The Redis key for an NCBI identity. The API key itself never appears in Redis."""
    if not api_key:
        # Without a key NCBI counts per IP address; processes sharing a Redis are assumed
        # to share an egress address, the safe assumption.
        return KEY_PREFIX + "anonymous"
    digest = hashlib.sha256(api_key.encode()).hexdigest()[:16]
    return KEY_PREFIX + "key-" + digest


class RateLimiter:
    """At most ``limit`` requests reach the server per ``window_s``, across every process.

    ``lease_s`` bounds how long a request may take from admission to its response headers;
    the caller enforces it (see :class:`pubwatch_ingest.eutils.EutilsClient`).
    """

    def __init__(
        self,
        redis: Redis,
        key: str,
        limit: int,
        window_s: float = 1.0,
        lease_s: float = 60.0,
    ) -> None:
        self.redis = redis
        self.key = key
        self.limit = limit
        self.window_us = int(window_s * 1_000_000)
        self.lease_s = lease_s
        self._lease_us = int(lease_s * 1_000_000)
        self._admit = redis.register_script(_ADMIT)
        self._sent = redis.register_script(_SENT)

    async def acquire(self) -> str:
        """Wait until a request may be sent; returns its slot, for :meth:`sent`.

        Send the request right after this returns, with no other await in between.
        """
        waited_s = 0.0
        slot = uuid.uuid4().hex
        while True:
            wait_us = int(
                await self._admit(
                    keys=[self.key], args=[self.limit, self.window_us, slot, self._lease_us]
                )
            )
            if wait_us == 0:
                if waited_s > 0:
                    log.debug("rate limit wait", extra={"waited_s": round(waited_s, 3)})
                return slot
            # A little jitter keeps waiting processes from all retrying in the same instant.
            pause_s = wait_us / 1_000_000 + random.uniform(0, 0.01)
            waited_s += pause_s
            await asyncio.sleep(pause_s)

    async def sent(self, slot: str) -> None:
        """The request of ``slot`` has reached the server (its response began, or it failed)."""
        await self._sent(keys=[self.key], args=[slot, self.window_us, self._lease_us])
