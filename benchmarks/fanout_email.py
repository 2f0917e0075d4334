"""Fan-out of one event to N email subscribers through a separate SMTP sink process,
against a plain aiosmtplib loop (same connection count, same server, same run).

    uv run python -m benchmarks.fanout_email [--quick]

Reports deliveries/s for both, their ratio, p50/p99 from event enqueued to message received,
and the notify worker's peak RSS (psutil) at each size.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import psutil
from arq import create_pool
from sqlalchemy import insert

from pubwatch_notify.store.engine import make_engine
from pubwatch_notify.store.migrate import upgrade_to_head
from pubwatch_notify.store.models import Subscription
from pubwatch_shared.embedded_redis import RedisServer
from pubwatch_shared.queue import deserialize, enqueue_event, redis_settings, serialize
from tests.notify.delivery.helpers import REPO_ROOT, TOPIC, article, make_event

CONNECTIONS = 4
WORKER_CODE = (
    "from pubwatch_notify.settings import NotifySettings\n"
    "from pubwatch_notify.worker import run_worker\n"
    "raise SystemExit(run_worker(NotifySettings()))\n"
)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - local sink
        return json.loads(response.read())


def _post(url: str) -> None:
    request = urllib.request.Request(url, method="POST")  # noqa: S310
    with urllib.request.urlopen(request, timeout=30):  # noqa: S310
        pass


def start_sink() -> tuple[subprocess.Popen[str], str, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.smtp", "--port", "0", "--control-port", "0"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    smtp_url = process.stdout.readline().strip()
    control_url = process.stdout.readline().strip().rstrip("/")
    return process, smtp_url, control_url


async def seed(database_url: str, count: int) -> None:
    engine = make_engine(database_url)
    await upgrade_to_head(engine)
    now = datetime.now(UTC)
    async with engine.begin() as connection:
        for start in range(0, count, 5000):
            rows = [
                {
                    "topic": TOPIC,
                    "channel": "email",
                    "address": f"bench{n}@example.org",
                    "address_hash": hashlib.sha256(f"bench{n}".encode()).hexdigest(),
                    "status": "confirmed",
                    "frequency": "immediate",
                    "min_level": "other",
                    "timezone": "UTC",
                    "token_version": 1,
                    "created_at": now,
                }
                for n in range(start, min(start + 5000, count))
            ]
            await connection.execute(insert(Subscription), rows)
    await engine.dispose()


def wait_for_accepted(control_url: str, count: int, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        stats: dict[str, Any] = _get(f"{control_url}/stats")
        if stats["accepted"] >= count or time.monotonic() > deadline:
            return stats
        time.sleep(0.2)


def latencies_s(control_url: str, count: int, started_wall: float) -> list[float]:
    values: list[float] = []
    for offset in range(0, count, 10_000):
        page = _get(f"{control_url}/received?limit=10000&offset={offset}")
        values += [item["received_at"] - started_wall for item in page["received"]]
    return values


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


async def notify_run(
    count: int, smtp_url: str, control_url: str, redis_url: str, work: Path
) -> dict[str, Any]:
    database_url = f"sqlite:///{work / f'bench{count}.db'}"
    await seed(database_url, count)
    env = {
        **os.environ,
        "PUBWATCH_DATABASE_URL": database_url,
        "PUBWATCH_REDIS_URL": redis_url,
        "PUBWATCH_SMTP_URL": smtp_url,
        "PUBWATCH_VAR_DIR": str(work / "var"),
        "PUBWATCH_TOPICS_FILE": str(REPO_ROOT / "topics.toml"),
        "PUBWATCH_WORKER_MAX_JOBS": str(CONNECTIONS),
        "PUBWATCH_LOG_LEVEL": "WARNING",
    }
    worker = subprocess.Popen([sys.executable, "-c", WORKER_CODE], env=env, cwd=REPO_ROOT)
    peak_rss = 0
    try:
        pool = await create_pool(
            redis_settings(redis_url), job_serializer=serialize, job_deserializer=deserialize
        )
        _post(f"{control_url}/reset")
        await asyncio.sleep(2)  # worker start-up is not part of the fan-out
        started_wall = time.time()
        await enqueue_event(pool, make_event(f"bench-{count}", [article("9999", "rct")]))
        await pool.aclose()
        deadline = time.monotonic() + 3600
        process = psutil.Process(worker.pid)
        while time.monotonic() < deadline:
            peak_rss = max(peak_rss, process.memory_info().rss)
            if _get(f"{control_url}/stats")["accepted"] >= count:
                break
            await asyncio.sleep(0.2)
        stats = _get(f"{control_url}/stats")
    finally:
        worker.terminate()
        worker.wait(60)
    elapsed_s = stats["last_received_at"] - started_wall
    lat = latencies_s(control_url, count, started_wall)
    return {
        "delivered": stats["accepted"],
        "duplicates": stats["recipients"]["more_than_one"],
        "deliveries_per_s": round(stats["accepted"] / elapsed_s, 1),
        "p50_s": round(percentile(lat, 0.5), 2),
        "p99_s": round(percentile(lat, 0.99), 2),
        "worker_peak_rss_mb": round(peak_rss / 2**20, 1),
    }


async def plain_loop_run(count: int, smtp_url: str, control_url: str) -> dict[str, Any]:
    """The same number of connections sending comparable messages as fast as they can."""
    host, port = smtp_url.removeprefix("smtp://").split(":")
    _post(f"{control_url}/reset")
    body = "A study numbered 9999 on mast cells.\n" * 20
    started = time.time()

    async def sender(indexes: range) -> None:
        async with aiosmtplib.SMTP(hostname=host, port=int(port)) as client:
            for n in indexes:
                message = EmailMessage()
                message["From"] = "alerts@pubwatch.localhost"
                message["To"] = f"plain{n}@example.org"
                message["Subject"] = "New randomized trial on Indolent systemic mastocytosis"
                message.set_content(body)
                message.add_alternative(f"<p>{body}</p>", subtype="html")
                await client.send_message(message)

    await asyncio.gather(*(sender(range(i, count, CONNECTIONS)) for i in range(CONNECTIONS)))
    elapsed_s = time.time() - started
    return {"deliveries_per_s": round(count / elapsed_s, 1)}


async def run_async(quick: bool, sizes: list[int] | None = None) -> dict[str, Any]:
    sizes = sizes or ([1_000, 5_000] if quick else [10_000, 100_000])
    results: dict[str, Any] = {"connections": CONNECTIONS, "sizes": {}}
    sink, smtp_url, control_url = start_sink()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with RedisServer(work / "redis") as redis_server:
            try:
                for count in sizes:
                    notify = await notify_run(count, smtp_url, control_url, redis_server.url, work)
                    plain = await plain_loop_run(count, smtp_url, control_url)
                    results["sizes"][count] = {
                        "notify": notify,
                        "plain_loop": plain,
                        "ratio": round(notify["deliveries_per_s"] / plain["deliveries_per_s"], 2),
                    }
            finally:
                sink.terminate()
                sink.wait(30)
    return results


def run(quick: bool, sizes: list[int] | None = None) -> dict[str, Any]:
    return asyncio.run(run_async(quick, sizes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1,000 and 5,000 instead of 10k/100k")
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(size) for size in text.split(",")],
        help="subscriber counts to run instead, comma-separated (e.g. 10000)",
    )
    args = parser.parse_args()
    print(json.dumps(run(args.quick, args.sizes), indent=2))


if __name__ == "__main__":
    main()
