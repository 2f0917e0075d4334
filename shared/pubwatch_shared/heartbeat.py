"""Worker liveness through Redis: each worker process refreshes a key with a TTL.

``/readyz`` and ``pubwatch <service> check-worker`` read these keys; a worker that hangs or
dies stops refreshing and its key expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator

from redis.asyncio import Redis

log = logging.getLogger(__name__)

HEARTBEAT_PREFIX = "pubwatch:heartbeat:"
BEAT_INTERVAL_S = 10.0
BEAT_TTL_S = 45


def instance_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def heartbeat_key(service: str, instance: str) -> str:
    return f"{HEARTBEAT_PREFIX}{service}:{instance}"


async def beat(redis: Redis, service: str, instance: str) -> None:
    await redis.set(heartbeat_key(service, instance), f"{time.time():.3f}", ex=BEAT_TTL_S)


async def live_workers(redis: Redis, service: str) -> dict[str, float]:
    """Instance name → time of its last beat (Unix seconds), for live workers of ``service``."""
    prefix = f"{HEARTBEAT_PREFIX}{service}:"
    found: dict[str, float] = {}
    async for key in redis.scan_iter(match=f"{prefix}*", count=500):
        name = key.decode() if isinstance(key, bytes) else str(key)
        value = await redis.get(name)
        if value is not None:
            found[name.removeprefix(prefix)] = float(value)
    return found


@contextlib.asynccontextmanager
async def heartbeating(redis: Redis, service: str) -> AsyncIterator[str]:
    """Beat every few seconds while the block runs; remove the key on a clean exit."""
    instance = instance_name()

    async def loop() -> None:
        while True:
            try:
                await beat(redis, service, instance)
            except Exception as exc:  # Redis restarting: keep trying, the TTL covers gaps
                log.warning("heartbeat failed: %s", exc)
            await asyncio.sleep(BEAT_INTERVAL_S)

    task = asyncio.create_task(loop(), name=f"heartbeat-{service}")
    try:
        yield instance
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(Exception):
            await redis.delete(heartbeat_key(service, instance))
