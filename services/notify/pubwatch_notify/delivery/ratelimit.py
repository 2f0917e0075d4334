"""Sends per second per provider sender, shared by every worker through Redis.

Each send reserves the next free slot (one every ``1/rate`` seconds) atomically in Redis and
sleeps until it; several processes sending from one Twilio number thus stay, together,
within that number's throughput.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

# Reserve the next slot: max(now, next_free), and move next_free one interval on.
_RESERVE_SLOT = """
local now_us = tonumber(ARGV[1])
local interval_us = tonumber(ARGV[2])
local next_free = tonumber(redis.call('GET', KEYS[1]) or '0')
local slot = math.max(now_us, next_free)
local ttl_ms = math.ceil((slot - now_us + interval_us) / 1000) + 1000
redis.call('SET', KEYS[1], slot + interval_us, 'PX', ttl_ms)
return slot - now_us
"""

KEY_PREFIX = "pubwatch:ratelimit:"
# Slots a little wider than 1/rate: evenly spaced sends at exactly the limit let a provider's
# sliding one-second window (timer jitter, clocks) now and then count limit + 1 (a 429).
SPACING_MARGIN = 1.05


class RateLimiter:
    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self._script = redis.register_script(_RESERVE_SLOT)

    async def wait_for_slot(self, rate_key: str, max_per_second: float | None) -> None:
        if not max_per_second:
            return
        # The key may name a sender (a phone number): store a digest, never the number.
        key = KEY_PREFIX + hashlib.sha256(rate_key.encode()).hexdigest()[:32]
        interval_us = int(1_000_000 * SPACING_MARGIN / max_per_second)
        now_us = int(time.time() * 1_000_000)
        wait_us = int(await self._script(keys=[key], args=[now_us, interval_us]))
        if wait_us > 0:
            await asyncio.sleep(wait_us / 1_000_000)
