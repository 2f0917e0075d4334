"""``pubwatch <service> check-worker``: is a worker of this service alive on this host?

Docker health checks run the command inside the worker's container, whose host name is the
container's, so "a live heartbeat from this host" means "this container's worker beats".
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from pubwatch_shared.heartbeat import live_workers

CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class WorkerCheck:
    ok: bool
    message: str


async def check_local_worker(redis_url: str, service: str, host: str | None = None) -> WorkerCheck:
    host = host or socket.gethostname()
    redis = Redis.from_url(
        redis_url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=CONNECT_TIMEOUT_S
    )
    try:
        workers = await live_workers(redis, service)
    except Exception as exc:
        return WorkerCheck(False, f"cannot read heartbeats from Redis: {type(exc).__name__}")
    finally:
        await redis.aclose()
    local = {name: beat for name, beat in workers.items() if name.rpartition(":")[0] == host}
    if not local:
        others = f" ({len(workers)} on other hosts)" if workers else ""
        return WorkerCheck(False, f"no live {service} worker heartbeat from {host}{others}")
    age_s = time.time() - max(local.values())
    message = f"{len(local)} live {service} worker(s) on {host}, last beat {age_s:.0f} s ago"
    return WorkerCheck(True, message)


def run_check(redis_url: str | None, service: str) -> WorkerCheck:
    if not redis_url:
        return WorkerCheck(
            False,
            "PUBWATCH_REDIS_URL is not set: a worker on an embedded Redis cannot be checked "
            "from another process",
        )
    return asyncio.run(check_local_worker(redis_url, service))
