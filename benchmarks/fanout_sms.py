"""Fan-out of one event to N SMS subscribers through the fake Twilio server (its own
process), against a plain httpx loop posting the same messages to the same server in the
same run (same number of concurrent connections; above ``BASELINE_SAMPLE`` messages the
loop posts a sample of that size).

    uv run python -m benchmarks.fanout_sms [--quick]

Two parts:

- ``unlimited``: the fake's per-sender limit off and PubWatch's ``twilio_max_per_second``
  off: PubWatch's own cost, as deliveries/s and the ratio to the plain loop;
- ``limited``: the fake enforces ``MPS_LIMIT`` messages/s per sender (429 above it) and
  PubWatch is told the same limit: every message arrives, none is refused with 429, and the
  highest count per sender in any one-second window (``/_fake/stats``) stays within it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks import fanout_common
from benchmarks.fanout_common import (
    CONNECTIONS,
    FULL_SIZES,
    QUICK_SIZES,
    _post,
    baseline_count,
    compared,
    fan_out,
    rss_mb,
    start_process,
    terminating,
    worker_env,
)
from pubwatch_shared.embedded_redis import RedisServer
from tests.fakes.twilio import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN

SENDER = "+15005550006"
MPS_LIMIT = 20.0
STATUS_CALLBACK = "http://pubwatch.localhost/webhooks/twilio/status"


def start_fake(mps_limit: float | None) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "tests.fakes.twilio", "--port", "0"]
    if mps_limit:
        command += ["--mps-limit", str(mps_limit)]
    process, (api_url,) = start_process(command, 1)
    return process, api_url.rstrip("/")


def phone(n: int) -> str:
    return f"+1555{n:07d}"


async def seed(database_url: str, count: int) -> None:
    await fanout_common.seed(database_url, count, "sms", phone, phone)


async def notify_run(
    name: str, count: int, api_url: str, mps_limit: float | None, redis_url: str, work: Path
) -> dict[str, Any]:
    database_url = f"sqlite:///{work / f'sms-{name}-{count}.db'}"
    await seed(database_url, count)
    env = worker_env(
        database_url,
        redis_url,
        work,
        {
            "PUBWATCH_TWILIO_ACCOUNT_SID": DEFAULT_ACCOUNT_SID,
            "PUBWATCH_TWILIO_AUTH_TOKEN": DEFAULT_AUTH_TOKEN,
            "PUBWATCH_TWILIO_API_URL": api_url,
            "PUBWATCH_TWILIO_FROM": SENDER,
            "PUBWATCH_TWILIO_MAX_PER_SECOND": str(mps_limit or 0),
            # No quiet hours (start == end) so that nothing is held whatever the time of day.
            "PUBWATCH_SMS_QUIET_START_HOUR": "0",
            "PUBWATCH_SMS_QUIET_END_HOUR": "0",
        },
    )
    run = await fan_out(
        env,
        redis_url,
        f"sms-{name}-{count}",
        count,
        reset_url=f"{api_url}/_fake/reset",
        stats_url=f"{api_url}/_fake/stats",
        poll_s=0.1,
    )
    stats = run.stats
    return {
        "delivered": stats["accepted"],
        "requests": stats["requests"],
        "rejected": stats["rejected"],
        "deliveries_per_s": round(stats["accepted"] / run.elapsed_s, 1),
        "max_per_second": stats["max_per_second"],
        "worker_peak_rss_mb": rss_mb(run.peak_rss),
    }


async def plain_loop_run(count: int, api_url: str) -> dict[str, Any]:
    """The same number of connections posting comparable messages as fast as they can."""
    _post(f"{api_url}/_fake/reset")
    url = f"{api_url}/2010-04-01/Accounts/{DEFAULT_ACCOUNT_SID}/Messages.json"
    body = "PubWatch: new randomized trial on Indolent systemic mastocytosis. " * 2
    started = time.monotonic()

    async def sender(client: httpx.AsyncClient, indexes: range) -> None:
        for n in indexes:
            response = await client.post(
                url,
                data={
                    "To": phone(n),
                    "From": SENDER,
                    "Body": body,
                    "StatusCallback": STATUS_CALLBACK,
                },
            )
            response.raise_for_status()

    async with httpx.AsyncClient(
        auth=(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN),
        limits=httpx.Limits(max_connections=CONNECTIONS),
        timeout=30,
    ) as client:
        await asyncio.gather(
            *(sender(client, range(i, count, CONNECTIONS)) for i in range(CONNECTIONS))
        )
    elapsed_s = time.monotonic() - started
    return {"messages": count, "deliveries_per_s": round(count / elapsed_s, 1)}


async def run_async(quick: bool, sizes: list[int] | None = None) -> dict[str, Any]:
    sizes = sizes or (QUICK_SIZES if quick else FULL_SIZES)
    limited_count = int(MPS_LIMIT * (5 if quick else 20))
    results: dict[str, Any] = {
        "connections": CONNECTIONS,
        "unlimited": {},
        "limited": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with RedisServer(work / "redis") as redis_server:
            fake, api_url = start_fake(None)
            with terminating(fake):
                for count in sizes:
                    notify = await notify_run(
                        "unlimited", count, api_url, None, redis_server.url, work
                    )
                    plain = await plain_loop_run(baseline_count(count), api_url)
                    results["unlimited"][count] = compared(notify, plain)
            fake, api_url = start_fake(MPS_LIMIT)
            with terminating(fake):
                notify = await notify_run(
                    "limited", limited_count, api_url, MPS_LIMIT, redis_server.url, work
                )
            peak = max(notify["max_per_second"].values(), default=0)
            results["limited"] = {
                "mps_limit": MPS_LIMIT,
                "count": limited_count,
                "notify": notify,
                "peak_per_second": peak,
                "respected": peak <= MPS_LIMIT,
                # Refused by the fake's sliding window (a send retried later), if any.
                "rejected_429": notify["rejected"].get("20429", 0),
            }
    return results


def table_rows(figures: dict[str, Any]) -> list[fanout_common.Row]:
    rows = fanout_common.size_rows("fanout_sms", figures.get("unlimited", {}))
    limited = figures.get("limited")
    if limited:
        rows.append(
            (
                "fanout_sms",
                f"{limited['mps_limit']:g}/s sender limit",
                f"{limited['notify']['delivered']}/{limited['count']} delivered, "
                f"peak {limited['peak_per_second']} in a second",
                f"{limited['rejected_429']} answered 429, "
                f"{'respected' if limited['respected'] else 'EXCEEDED'}",
            )
        )
    return rows


def run(quick: bool, sizes: list[int] | None = None) -> dict[str, Any]:
    return asyncio.run(run_async(quick, sizes))


def main() -> None:
    fanout_common.main(__doc__, "1,000 subscribers only, instead of 1k, 10k and 100k", run)


if __name__ == "__main__":
    main()
