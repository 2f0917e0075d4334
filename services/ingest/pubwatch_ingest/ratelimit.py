"""One NCBI rate limit shared by every ingest process, kept in Redis.

NCBI counts requests per identity (the API key, else the caller's address) per second, and
answers 429 over the limit. Every process that polls with the same identity goes through
one sliding-window log in Redis: a sorted set of admission times, trimmed and checked in a
single Lua script, so N workers together never admit more than ``limit`` requests in any
window. The clock is Redis's own (``TIME``), so processes on hosts with skewed clocks still
agree. Over the limit, :meth:`RateLimiter.acquire` waits until the oldest admission leaves
the window; it never fails.
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

# Returns 0 when admitted, else the microseconds until the oldest admission expires.
_SLIDING_WINDOW = """
local now_parts = redis.call('TIME')
local now_us = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local limit = tonumber(ARGV[1])
local window_us = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_us - window_us)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now_us, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window_us / 1000) + 1000)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window_us - now_us)
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
    """Admit at most ``limit`` requests per ``window_s`` across every process using ``key``."""

    def __init__(self, redis: Redis, key: str, limit: int, window_s: float = 1.0) -> None:
        self.redis = redis
        self.key = key
        self.limit = limit
        self.window_us = int(window_s * 1_000_000)
        self._script = redis.register_script(_SLIDING_WINDOW)

    async def acquire(self) -> float:
        """Wait until a request may be sent; returns the seconds spent waiting."""
        waited_s = 0.0
        member = uuid.uuid4().hex
        while True:
            wait_us = int(
                await self._script(keys=[self.key], args=[self.limit, self.window_us, member])
            )
            if wait_us == 0:
                if waited_s > 0:
                    log.debug("rate limit wait", extra={"waited_s": round(waited_s, 3)})
                return waited_s
            # A little jitter keeps waiting processes from all retrying in the same instant.
            pause_s = wait_us / 1_000_000 + random.uniform(0, 0.01)
            waited_s += pause_s
            await asyncio.sleep(pause_s)
