"""/metrics, /readyz's worker report and /admin against a real Redis and SQLite."""

from __future__ import annotations

import base64
import time
from pathlib import Path

from redis.asyncio import Redis

from pubwatch_ingest.opsmetrics import IngestMetrics
from pubwatch_notify.settings import NotifySettings
from pubwatch_shared.heartbeat import heartbeating
from pubwatch_shared.queue import NOTIFY_QUEUE
from tests.notify.web.helpers import app_client
from tests.ops.helpers import EMAIL, PHONE, SECRET, add_history

TOKEN = "operator-token-for-tests"


def _settings(tmp_path: Path, redis_url: str, sqlite_url: str, **extra: object) -> NotifySettings:
    topics = tmp_path / "topics.toml"
    topics.write_text('[[topic]]\nslug = "alpha"\nname = "Alpha condition"\nquery = "a[tiab]"\n')
    return NotifySettings(
        redis_url=redis_url,
        database_url=sqlite_url,
        topics_file=topics,
        var_dir=tmp_path / "var",
        secret_key=SECRET,
        **extra,  # type: ignore[arg-type]
    )


def _basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"ops:{password}".encode()).decode()}


async def _seed_redis(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    await redis.flushdb()
    metrics = IngestMetrics(redis)
    await metrics.ncbi_request("esearch.fcgi", "ok", 0.2)
    await metrics.ncbi_request("esearch.fcgi", "http_429", 0.05)
    await metrics.ncbi_request("efetch.fcgi", "ok", 3.0)
    await metrics.poll_committed("alpha", time.time() - 600, 4)
    # A job due ten seconds ago, and one deferred to the future.
    now_ms = time.time() * 1000
    await redis.zadd(NOTIFY_QUEUE, {"job-old": now_ms - 10_000, "job-later": now_ms + 600_000})
    await redis.aclose()


async def test_metrics_report_events_deliveries_queue_and_ingest(
    tmp_path: Path, redis_url: str, sqlite_url: str
) -> None:
    await _seed_redis(redis_url)
    settings = _settings(tmp_path, redis_url, sqlite_url)
    async with app_client(settings) as (app, client):
        async with app.state.resources.sessionmaker() as session:
            await add_history(session)
        redis = Redis.from_url(redis_url)
        async with heartbeating(redis, "notify"):
            ready = (await client.get("/readyz")).json()
            text = (await client.get("/metrics")).text
        await redis.aclose()

    assert ready["status"] == "ready"
    assert ready["workers"] == {"ingest": 0, "notify": 1}
    expected = [
        'pubwatch_events_received_total{source="pubmed",type="evidence.new"} 1.0',
        'pubwatch_deliveries{channel="email",status="sent"} 1.0',
        'pubwatch_deliveries{channel="sms",status="failed"} 1.0',
        'pubwatch_delivery_failed_attempts_total{channel="sms"} 3.0',
        "pubwatch_queue_jobs 2.0",
        "pubwatch_queue_ready_jobs 1.0",
        "pubwatch_queue_deferred_jobs 1.0",
        'pubwatch_workers_live{service="notify"} 1.0',
        'pubwatch_ncbi_requests_total{endpoint="esearch",outcome="http_429"} 1.0',
        'pubwatch_ncbi_requests_total{endpoint="efetch",outcome="ok"} 1.0',
        'pubwatch_ncbi_request_duration_seconds_bucket{le="0.25"} 2.0',
        "pubwatch_ncbi_request_duration_seconds_count 3.0",
        'pubwatch_ingest_articles_announced_total{topic="alpha"} 4.0',
    ]
    for line in expected:
        assert line in text, (line, text)
    age = next(
        line for line in text.splitlines() if line.startswith("pubwatch_queue_oldest_job_age")
    )
    assert 9 <= float(age.split()[-1]) < 60
    assert 'pubwatch_ingest_last_successful_poll_timestamp_seconds{topic="alpha"}' in text
    for private in (EMAIL, PHONE):
        assert private not in text


async def test_admin_needs_the_token_and_masks_addresses(
    tmp_path: Path, redis_url: str, sqlite_url: str
) -> None:
    await _seed_redis(redis_url)
    async with app_client(_settings(tmp_path, redis_url, sqlite_url)) as (_, client):
        assert (await client.get("/admin")).status_code == 404  # off without a token

    settings = _settings(tmp_path, redis_url, sqlite_url, admin_token=TOKEN)
    async with app_client(settings) as (app, client):
        async with app.state.resources.sessionmaker() as session:
            ids = await add_history(session)
        anonymous = await client.get("/admin")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Basic")
        assert (await client.get("/admin", headers=_basic("wrong"))).status_code == 401
        assert (await client.get(f"/admin?token={TOKEN}")).status_code == 401
        page = await client.get("/admin", headers=_basic(TOKEN))

    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    html = page.text
    assert "<svg" in html
    assert "<script" not in html
    assert "Alpha condition" in html
    assert "10 min ago" in html
    assert "Twilio 21211" in html
    assert f"<td>{ids['failed']}</td>" in html
    assert "•••0123" in html
    assert PHONE not in html
    assert EMAIL not in html
