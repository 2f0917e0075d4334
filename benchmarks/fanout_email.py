"""Fan-out of one event to N email subscribers through a separate SMTP sink process,
against a plain aiosmtplib loop (same connection count, same server, same run; above
``BASELINE_SAMPLE`` messages the loop sends a sample of that size).

    uv run python -m benchmarks.fanout_email [--quick]

Reports deliveries/s for both, their ratio, p50/p99 from event enqueued to message received,
and the notify worker's peak RSS (psutil) at each size.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib

from benchmarks import fanout_common
from benchmarks.fanout_common import (
    CONNECTIONS,
    FULL_SIZES,
    QUICK_SIZES,
    _get,
    _post,
    baseline_count,
    compared,
    fan_out,
    percentile,
    rss_mb,
    start_process,
    terminating,
    worker_env,
)
from pubwatch_shared.embedded_redis import RedisServer


def start_sink() -> tuple[subprocess.Popen[str], str, str]:
    process, (smtp_url, control_url) = start_process(
        [sys.executable, "-m", "tests.fakes.smtp", "--port", "0", "--control-port", "0"], 2
    )
    return process, smtp_url, control_url.rstrip("/")


async def seed(database_url: str, count: int) -> None:
    await fanout_common.seed(
        database_url, count, "email", lambda n: f"bench{n}@example.org", lambda n: f"bench{n}"
    )


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


async def notify_run(
    count: int, smtp_url: str, control_url: str, redis_url: str, work: Path
) -> dict[str, Any]:
    database_url = f"sqlite:///{work / f'bench{count}.db'}"
    await seed(database_url, count)
    env = worker_env(database_url, redis_url, work, {"PUBWATCH_SMTP_URL": smtp_url})
    run = await fan_out(
        env,
        redis_url,
        f"bench-{count}",
        count,
        reset_url=f"{control_url}/reset",
        stats_url=f"{control_url}/stats",
        poll_s=0.2,
    )
    stats = run.stats
    elapsed_s = stats["last_received_at"] - run.started_wall
    lat = latencies_s(control_url, count, run.started_wall)
    return {
        "delivered": stats["accepted"],
        "duplicates": stats["recipients"]["more_than_one"],
        "deliveries_per_s": round(stats["accepted"] / elapsed_s, 1),
        "p50_s": round(percentile(lat, 0.5), 2),
        "p99_s": round(percentile(lat, 0.99), 2),
        "worker_peak_rss_mb": rss_mb(run.peak_rss),
    }


def plain_message(n: int) -> EmailMessage:
    body = "A study numbered 9999 on mast cells.\n" * 20
    message = EmailMessage()
    message["From"] = "alerts@pubwatch.localhost"
    message["To"] = f"plain{n}@example.org"
    message["Subject"] = "New randomized trial on Indolent systemic mastocytosis"
    message.set_content(body)
    message.add_alternative(f"<p>{body}</p>", subtype="html")
    return message


async def plain_loop_run(
    count: int, smtp_url: str, control_url: str, *, prebuilt: bool = False
) -> dict[str, Any]:
    """The same number of connections sending comparable messages as fast as they can,
    each built with the ``email`` package as a simple sender would; ``prebuilt``: one
    message serialised once, its bytes sent every time (the SMTP floor: no building)."""
    host, port = smtp_url.removeprefix("smtp://").split(":")
    _post(f"{control_url}/reset")
    wire = bytes(plain_message(0))
    started = time.time()

    async def sender(indexes: range) -> None:
        async with aiosmtplib.SMTP(hostname=host, port=int(port)) as client:
            for n in indexes:
                if prebuilt:
                    recipient = f"plain{n}@example.org"
                    await client.sendmail("alerts@pubwatch.localhost", [recipient], wire)
                else:
                    await client.send_message(plain_message(n))

    await asyncio.gather(*(sender(range(i, count, CONNECTIONS)) for i in range(CONNECTIONS)))
    elapsed_s = time.time() - started
    return {"messages": count, "deliveries_per_s": round(count / elapsed_s, 1)}


async def run_async(quick: bool, sizes: list[int] | None = None) -> dict[str, Any]:
    sizes = sizes or (QUICK_SIZES if quick else FULL_SIZES)
    results: dict[str, Any] = {"connections": CONNECTIONS, "sizes": {}}
    sink, smtp_url, control_url = start_sink()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with RedisServer(work / "redis") as redis_server, terminating(sink):
            for count in sizes:
                notify = await notify_run(count, smtp_url, control_url, redis_server.url, work)
                plain = await plain_loop_run(baseline_count(count), smtp_url, control_url)
                floor = await plain_loop_run(
                    baseline_count(count), smtp_url, control_url, prebuilt=True
                )
                results["sizes"][count] = compared(notify, plain)
                results["sizes"][count]["prebuilt_loop"] = floor
                results["sizes"][count]["ratio_to_prebuilt"] = round(
                    notify["deliveries_per_s"] / floor["deliveries_per_s"], 2
                )
    return results


def table_rows(figures: dict[str, Any]) -> list[fanout_common.Row]:
    rows = fanout_common.size_rows("fanout_email", figures.get("sizes", {}))
    for count, fig in sorted(figures.get("sizes", {}).items(), key=lambda item: int(item[0])):
        if "prebuilt_loop" in fig:
            rows.append(
                (
                    "fanout_email",
                    f"{int(count):,}, vs prebuilt bytes",
                    f"{fig['notify']['deliveries_per_s']}/s",
                    f"prebuilt {fig['prebuilt_loop']['deliveries_per_s']}/s, "
                    f"ratio {fig['ratio_to_prebuilt']}",
                )
            )
    return rows


def run(quick: bool, sizes: list[int] | None = None) -> dict[str, Any]:
    return asyncio.run(run_async(quick, sizes))


def main() -> None:
    fanout_common.main(__doc__, "1,000 subscribers only, instead of 1k, 10k and 100k", run)


if __name__ == "__main__":
    main()
