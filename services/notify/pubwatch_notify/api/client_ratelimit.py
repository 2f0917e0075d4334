"""Per-client rate limit for the events API, shared by every API process through Redis.

A GCRA (generic cell rate algorithm) in one Lua script: each client has one key holding the
"theoretical arrival time" of its next request. It allows ``burst`` requests at once, then
one every ``60 / per_minute`` seconds, and tells a refused caller exactly how long to wait,
which becomes the ``Retry-After`` header. One atomic script means no two API processes can
both spend the last unit, and Redis's own clock means their clocks need not agree.
"""

from __future__ import annotations

import math
from typing import Any

from redis.asyncio import Redis

KEY_PREFIX = "pubwatch:events-api:rate:"

# KEYS[1]: the client's key. ARGV[1]: ms between requests. ARGV[2]: burst.
# Returns 0 when allowed, else the ms until a request would be.
_GCRA = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval_ms = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now_ms)
if tat < now_ms then tat = now_ms end
local new_tat = tat + interval_ms
local wait_ms = new_tat - burst * interval_ms - now_ms
if wait_ms > 0 then
  return math.ceil(wait_ms)
end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(new_tat - now_ms) + 1)
return 0
"""


class ClientRateLimiter:
    """``per_minute`` requests per client, after an initial ``burst``."""

    def __init__(self, redis: Redis, per_minute: int, burst: int) -> None:
        self._script: Any = redis.register_script(_GCRA)
        self._interval_ms = 60_000 / per_minute
        self._burst = burst

    async def retry_after_s(self, client_name: str) -> int:
        """Count one request by ``client_name``: 0 when allowed, else whole seconds to wait."""
        wait_ms = int(
            await self._script(
                keys=[KEY_PREFIX + client_name], args=[self._interval_ms, self._burst]
            )
        )
        return math.ceil(wait_ms / 1000) if wait_ms > 0 else 0
