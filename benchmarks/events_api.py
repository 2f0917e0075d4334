"""Events API benchmark: accepted events per second and latency with 50 concurrent clients.

The API runs as operators run it (``pubwatch notify api``: uvicorn in its own process) on a
private Redis, with SQLite and, when ``PUBWATCH_TEST_POSTGRES_URL`` names a server, a fresh
PostgreSQL database. Fifty clients, each with its own API key and its own keep-alive
connection, post distinct events back to back; every answer must be 202. No worker runs:
this measures acceptance (validate, store, enqueue), not delivery.

The load generator speaks HTTP/1.1 over plain asyncio streams rather than through an HTTP
client library, so that on a small machine the measuring process takes as little CPU from
the measured one as it can. Goals: at least 1,000 events/s, p99 under 100 ms.

``run(quick)`` returns the figures; ``python -m benchmarks.events_api [--quick] [--workers N]``
prints them (``--workers``: the API's uvicorn worker processes, ``PUBWATCH_API_WORKERS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from pubwatch_shared.embedded_redis import RedisServer, free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
CLIENTS = 50
TOPIC = "indolent-systemic-mastocytosis"
GOAL_EVENTS_PER_S = 1000
GOAL_P99_MS = 100
# uvicorn worker processes (PUBWATCH_API_WORKERS); `--workers N` measures another count.
API_WORKERS = 1
POSTGRES_URL_ENV = "PUBWATCH_TEST_POSTGRES_URL"


def client_key(n: int) -> str:
    return f"benchmark-client-{n:02d}-key-0123456789"


def _event_body(client: int, n: int, run_id: str) -> bytes:
    return json.dumps(
        {
            "id": f"{run_id}-{n}",
            "type": "notice",
            "topic": TOPIC,
            "source": f"bench-{client:02d}",
            "occurred_at": "2026-11-25T06:00:00Z",
            "items": [
                {
                    "title": f"Trial update {n} for indolent systemic mastocytosis.",
                    "url": f"https://trials.example/NCT{n:08d}",
                    "summary": "A phase 3 trial comparing drug X with placebo opened a new site.",
                }
            ],
        }
    ).encode()


async def _post(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, key: str, body: bytes
) -> int:
    writer.write(
        (
            f"POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
    )
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def _client(
    port: int, client: int, count: int, run_id: str, latencies_s: list[float]
) -> dict[int, int]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    statuses: dict[int, int] = {}
    try:
        for n in range(count):
            body = _event_body(client, client * 1_000_000 + n, run_id)
            started = time.perf_counter()
            status = await _post(reader, writer, f"127.0.0.1:{port}", client_key(client), body)
            latencies_s.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return statuses


async def _load(port: int, per_client: int, run_id: str) -> dict[str, Any]:
    latencies_s: list[float] = []
    started = time.perf_counter()
    results = await asyncio.gather(
        *(_client(port, c, per_client, run_id, latencies_s) for c in range(CLIENTS))
    )
    elapsed_s = time.perf_counter() - started
    statuses: dict[int, int] = {}
    for result in results:
        for status, count in result.items():
            statuses[status] = statuses.get(status, 0) + count
    latencies_s.sort()

    def percentile_ms(p: float) -> float:
        return round(latencies_s[min(len(latencies_s) - 1, int(len(latencies_s) * p))] * 1000, 1)

    accepted = statuses.get(202, 0)
    return {
        "events": len(latencies_s),
        "accepted": accepted,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "elapsed_s": round(elapsed_s, 2),
        "accepted_per_s": round(accepted / elapsed_s),
        "p50_ms": percentile_ms(0.50),
        "p99_ms": percentile_ms(0.99),
        "max_ms": round(latencies_s[-1] * 1000, 1),
    }


def api_env(
    database_url: str, redis_url: str, port: int, var_dir: Path, workers: int
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUBWATCH_")}
    env.update(
        PUBWATCH_DATABASE_URL=database_url,
        PUBWATCH_REDIS_URL=redis_url,
        PUBWATCH_PUBLIC_URL=f"http://127.0.0.1:{port}",
        PUBWATCH_VAR_DIR=str(var_dir),
        PUBWATCH_TOPICS_FILE=str(REPO_ROOT / "topics.toml"),
        # Per-event info lines would measure the log handler, not the API.
        PUBWATCH_LOG_LEVEL="WARNING",
        PUBWATCH_EVENTS_API_KEYS=",".join(f"bench-{c:02d}:{client_key(c)}" for c in range(CLIENTS)),
        PUBWATCH_EVENTS_API_RATE_PER_MINUTE="1000000",
        PUBWATCH_EVENTS_API_BURST="100000",
        PUBWATCH_API_WORKERS=str(workers),
    )
    return env


@contextlib.contextmanager
def api_process(env: dict[str, str], port: int, log_path: Path) -> Iterator[None]:
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "pubwatch_shared.cli", "notify", "api"],
            env=env,
            cwd=REPO_ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the API did not start; see {log_path}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                        break
                time.sleep(0.2)
            yield
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    import sqlalchemy

    name = f"pubwatch_bench_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield (
            sqlalchemy.engine.make_url(admin_url)
            .set(database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _measure(database_url: str, work_dir: Path, per_client: int, workers: int) -> dict[str, Any]:
    redis = RedisServer(work_dir / "redis", appendonly=False)
    redis.start()
    try:
        port = free_port()
        env = api_env(database_url, redis.url, port, work_dir / "var", workers)
        with api_process(env, port, work_dir / "api.log"):
            asyncio.run(_load(port, 5, "warmup"))  # connections, caches, prepared statements
            figures = asyncio.run(_load(port, per_client, uuid.uuid4().hex[:8]))
    finally:
        redis.close()
    figures["meets_goal"] = (
        figures["accepted_per_s"] >= GOAL_EVENTS_PER_S and figures["p99_ms"] < GOAL_P99_MS
    )
    return figures


def run(quick: bool, workers: int = API_WORKERS) -> dict[str, Any]:
    """Figures per database; ``quick`` posts 40 events per client instead of 200."""
    per_client = 40 if quick else 200
    figures: dict[str, Any] = {
        "clients": CLIENTS,
        "api_workers": workers,
        "goal": {"accepted_per_s": GOAL_EVENTS_PER_S, "p99_ms": GOAL_P99_MS},
        "cpus": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory(prefix="pubwatch-bench-") as tmp:
        work = Path(tmp)
        sqlite_dir = work / "sqlite"
        sqlite_dir.mkdir()
        figures["sqlite"] = _measure(
            f"sqlite:///{sqlite_dir / 'bench.db'}", sqlite_dir, per_client, workers
        )
        admin_url = os.environ.get(POSTGRES_URL_ENV)
        if admin_url:
            pg_dir = work / "postgres"
            pg_dir.mkdir()
            with postgres_database(admin_url) as url:
                figures["postgres"] = _measure(url, pg_dir, per_client, workers)
        else:
            figures["postgres"] = f"skipped: set {POSTGRES_URL_ENV}"
    return figures


def table_rows(figures: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    rows = []
    for backend in ("sqlite", "postgres"):
        fig = figures.get(backend)
        if isinstance(fig, dict):
            rows.append(
                (
                    "events_api",
                    f"{backend}, {figures['clients']} clients",
                    f"{fig['accepted_per_s']} accepted/s, p99 {fig['p99_ms']} ms",
                    f"goal >= {GOAL_EVENTS_PER_S}/s, p99 < {GOAL_P99_MS} ms: "
                    f"{'met' if fig['meets_goal'] else 'NOT met'}",
                )
            )
    return rows


def main() -> None:
    args = sys.argv[1:]
    workers = int(args[args.index("--workers") + 1]) if "--workers" in args else API_WORKERS
    figures = run("--quick" in args, workers)
    print(
        f"{figures['clients']} concurrent clients, {figures['cpus']} CPUs, "
        f"{figures['api_workers']} API worker process(es)"
    )
    for backend in ("sqlite", "postgres"):
        f = figures[backend]
        if isinstance(f, str):
            print(f"{backend}: {f}")
            continue
        print(
            f"{backend}: {f['accepted']}/{f['events']} accepted in {f['elapsed_s']} s = "
            f"{f['accepted_per_s']} events/s; p50 {f['p50_ms']} ms, p99 {f['p99_ms']} ms, "
            f"max {f['max_ms']} ms; statuses {f['statuses']}; goal "
            f"(>= {GOAL_EVENTS_PER_S}/s, p99 < {GOAL_P99_MS} ms) "
            f"{'met' if f['meets_goal'] else 'NOT met'}"
        )


if __name__ == "__main__":
    main()
