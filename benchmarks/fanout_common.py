"""What the fan-out benchmarks (``fanout_email``, ``fanout_sms``) share: the local HTTP calls
to the fakes, starting and stopping their processes, seeding subscribers, running the notify
worker through one fan-out while sampling its peak RSS, percentiles and the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from arq import create_pool
from sqlalchemy import insert

from pubwatch_notify.store.engine import make_engine
from pubwatch_notify.store.migrate import upgrade_to_head
from pubwatch_notify.store.models import Subscription
from pubwatch_shared.queue import deserialize, enqueue_event, redis_settings, serialize
from tests.notify.delivery.helpers import REPO_ROOT, TOPIC, article, make_event

CONNECTIONS = 4
# Subscriber counts per mode, the same for both channels.
FULL_SIZES = [1_000, 10_000, 100_000]
QUICK_SIZES = [1_000]
# The plain loops' rate is steady after the first seconds, so above this many messages they
# send a sample of this size (in the same run, to the same server): a 100k plain loop
# would spend minutes of the full run's 20 to measure the same figure.
BASELINE_SAMPLE = 20_000
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


def start_process(command: list[str], lines: int) -> tuple[subprocess.Popen[str], list[str]]:
    """Start a fake server (run from the repository root) and read the first ``lines`` lines
    it prints (its URLs), stripped."""
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, [process.stdout.readline().strip() for _ in range(lines)]


@contextmanager
def terminating(process: subprocess.Popen[str], wait_s: float = 30) -> Iterator[None]:
    """Terminate ``process`` (and wait for it) when the block ends, however it ends."""
    try:
        yield
    finally:
        process.terminate()
        process.wait(wait_s)


def subscription_pages(
    count: int,
    channel: str,
    address: Callable[[int], str],
    hashed: Callable[[int], str],
    *,
    topic: str = TOPIC,
    frequency: str = "immediate",
    next_digest_at: datetime | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """Rows of ``count`` confirmed subscriptions, 5,000 at a time; subscriber ``n`` has
    ``address(n)``, hashed from ``hashed(n)``."""
    now = datetime.now(UTC)
    for start in range(0, count, 5000):
        yield [
            {
                "topic": topic,
                "channel": channel,
                "address": address(n),
                "address_hash": hashlib.sha256(hashed(n).encode()).hexdigest(),
                "status": "confirmed",
                "frequency": frequency,
                "min_level": "other",
                "timezone": "UTC",
                "token_version": 1,
                "created_at": now,
                "next_digest_at": next_digest_at,
            }
            for n in range(start, min(start + 5000, count))
        ]


async def seed(
    database_url: str,
    count: int,
    channel: str,
    address: Callable[[int], str],
    hashed: Callable[[int], str],
) -> None:
    """Migrate ``database_url`` and add ``count`` confirmed, immediate subscriptions to
    ``TOPIC`` on ``channel``."""
    engine = make_engine(database_url)
    await upgrade_to_head(engine)
    async with engine.begin() as connection:
        for rows in subscription_pages(count, channel, address, hashed):
            await connection.execute(insert(Subscription), rows)
    await engine.dispose()


def worker_env(
    database_url: str, redis_url: str, work: Path, extra: Mapping[str, str]
) -> dict[str, str]:
    """The notify worker's environment for one run, with the channel's own ``extra``."""
    return {
        **os.environ,
        "PUBWATCH_DATABASE_URL": database_url,
        "PUBWATCH_REDIS_URL": redis_url,
        "PUBWATCH_VAR_DIR": str(work / "var"),
        "PUBWATCH_TOPICS_FILE": str(REPO_ROOT / "topics.toml"),
        "PUBWATCH_WORKER_MAX_JOBS": str(CONNECTIONS),
        "PUBWATCH_LOG_LEVEL": "WARNING",
        **extra,
    }


@dataclass
class Fanout:
    stats: dict[str, Any]  # the fake's stats once every message was accepted (or time ran out)
    started_wall: float  # time.time() as the event was enqueued
    elapsed_s: float  # monotonic seconds from enqueueing to the last stats poll
    peak_rss: int  # the worker's peak RSS in bytes


async def fan_out(
    env: dict[str, str],
    redis_url: str,
    event_name: str,
    count: int,
    reset_url: str,
    stats_url: str,
    poll_s: float,
) -> Fanout:
    """Start the notify worker, reset the fake, enqueue one event and wait (an hour at most)
    until the fake has accepted ``count`` messages, sampling the worker's RSS meanwhile."""
    worker = subprocess.Popen([sys.executable, "-c", WORKER_CODE], env=env, cwd=REPO_ROOT)
    peak_rss = 0
    try:
        pool = await create_pool(
            redis_settings(redis_url), job_serializer=serialize, job_deserializer=deserialize
        )
        _post(reset_url)
        await asyncio.sleep(2)  # worker start-up is not part of the fan-out
        started_wall = time.time()
        started = time.monotonic()
        await enqueue_event(pool, make_event(event_name, [article("9999", "rct")]))
        await pool.aclose()
        deadline = time.monotonic() + 3600
        process = psutil.Process(worker.pid)
        while time.monotonic() < deadline:
            peak_rss = max(peak_rss, process.memory_info().rss)
            if _get(stats_url)["accepted"] >= count:
                break
            await asyncio.sleep(poll_s)
        elapsed_s = time.monotonic() - started
        stats = _get(stats_url)
    finally:
        worker.terminate()
        worker.wait(60)
    return Fanout(stats, started_wall, elapsed_s, peak_rss)


def rss_mb(peak_rss: int) -> float:
    return round(peak_rss / 2**20, 1)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def baseline_count(count: int) -> int:
    """How many messages the plain loop sends to give the baseline for ``count``."""
    return min(count, BASELINE_SAMPLE)


def compared(notify: dict[str, Any], plain: dict[str, Any]) -> dict[str, Any]:
    """One size's figures: PubWatch's, the plain loop's and their deliveries/s ratio."""
    return {
        "notify": notify,
        "plain_loop": plain,
        "ratio": round(notify["deliveries_per_s"] / plain["deliveries_per_s"], 2),
    }


Row = tuple[str, str, str, str]  # benchmark, figure, PubWatch, baseline and ratio


def size_rows(benchmark: str, sizes: dict[str, Any]) -> list[Row]:
    """Summary-table rows for one channel's sizes (subscriber count → ``compared`` figures)."""
    rows: list[Row] = []
    for count, fig in sorted(sizes.items(), key=lambda item: int(item[0])):
        notify, plain = fig["notify"], fig["plain_loop"]
        latency = f", p99 {notify['p99_s']} s" if "p99_s" in notify else ""
        rows.append(
            (
                benchmark,
                f"{int(count):,} subscribers",
                f"{notify['deliveries_per_s']}/s{latency}, "
                f"RSS {notify.get('worker_peak_rss_mb', '?')} MB",
                f"plain {plain['deliveries_per_s']}/s, ratio {fig['ratio']}",
            )
        )
    return rows


def main(
    doc: str | None,
    quick_help: str,
    run: Callable[[bool, list[int] | None], dict[str, Any]],
) -> None:
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(size) for size in text.split(",")],
        help="subscriber counts to run instead, comma-separated (e.g. 10000)",
    )
    args = parser.parse_args()
    print(json.dumps(run(args.quick, args.sizes), indent=2))
