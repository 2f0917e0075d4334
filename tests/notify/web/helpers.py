"""Helpers for the web tests: settings, the app with its lifespan, forms, queued jobs."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from arq import ArqRedis, create_pool
from arq.worker import Retry
from fastapi import FastAPI

from pubwatch_notify.api.app import create_app
from pubwatch_notify.channels.factory import make_email_channel, make_sms_channel
from pubwatch_notify.settings import NotifySettings
from pubwatch_notify.store.engine import make_engine, make_sessionmaker
from pubwatch_notify.subscriptions.confirmation import send_confirmation
from pubwatch_shared.embedded_redis import free_port
from pubwatch_shared.queue import NOTIFY_QUEUE, deserialize, redis_settings, serialize

REPO_ROOT = Path(__file__).resolve().parents[3]
TOPICS_FILE = REPO_ROOT / "topics.toml"
TOPIC = "indolent-systemic-mastocytosis"
OTHER_TOPIC = "mast-cell-activation-syndrome"
TWILIO_FROM = "+15005550006"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def make_settings(
    database_url: str,
    redis_url: str,
    var_dir: Path,
    *,
    public_url: str = "http://127.0.0.1:8000",
    smtp_url: str | None = None,
    twilio: Any = None,
    **overrides: Any,
) -> NotifySettings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "var_dir": var_dir,
        "topics_file": TOPICS_FILE,
        "public_url": public_url,
        "secret_key": "test-secret-key-for-the-web-tests",
        "check_email_deliverability": False,
        "smtp_url": smtp_url,
        "embed_allowed_origins": "https://health.example",
    }
    if twilio is not None:
        values.update(
            twilio_account_sid=twilio.account_sid,
            twilio_auth_token=twilio.auth_token,
            twilio_api_url=twilio.url,
            twilio_from=TWILIO_FROM,
        )
    values.update(overrides)
    return NotifySettings(**values)


@contextlib.asynccontextmanager
async def app_client(settings: NotifySettings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app with its lifespan run (migrations, Redis pool) and an in-process client."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url=settings.public_url) as client:
            yield app, client


def csrf_token(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "the page has no CSRF field"
    return match.group(1)


def signup_form(**fields: str) -> dict[str, str]:
    form = {
        "channel": "email",
        "email": "ann@example.org",
        "phone": "",
        "frequency": "immediate",
        "min_level": "other",
        "timezone": "America/Chicago",
        "consent": "yes",
    }
    form.update(fields)
    return form


async def post_signup(
    client: httpx.AsyncClient, topic: str = TOPIC, **fields: str
) -> httpx.Response:
    page = await client.get(f"/topics/{topic}")
    data = signup_form(**fields)
    data["csrf_token"] = csrf_token(page.text)
    return await client.post(f"/topics/{topic}", data=data)


@dataclass
class SimpleChannels:
    email: Any
    sms: Any


def job_context(settings: NotifySettings, redis: ArqRedis) -> dict[str, Any]:
    """What the notify worker puts in ``ctx`` for ``send_confirmation``."""
    engine = make_engine(settings.resolved_database_url)
    return {
        "settings": settings,
        "sessionmaker": make_sessionmaker(engine),
        "channels": SimpleChannels(make_email_channel(settings), make_sms_channel(settings)),
        "redis": redis,
        "engine": engine,
    }


@contextlib.asynccontextmanager
async def job_runner(settings: NotifySettings) -> AsyncIterator[JobRunner]:
    assert settings.redis_url
    pool = await create_pool(
        redis_settings(settings.redis_url),
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name=NOTIFY_QUEUE,
    )
    ctx = job_context(settings, pool)
    try:
        yield JobRunner(pool, ctx)
    finally:
        await ctx["engine"].dispose()
        await pool.aclose()


class JobRunner:
    """Runs the confirmation jobs waiting on the queue, as the worker would."""

    def __init__(self, pool: ArqRedis, ctx: dict[str, Any]) -> None:
        self.pool = pool
        self.ctx = ctx

    async def queued(self) -> list[Any]:
        return list(await self.pool.queued_jobs(queue_name=NOTIFY_QUEUE))

    async def run_queued(self) -> list[str]:
        outcomes: list[str] = []
        for job in await self.queued():
            assert job.function == "send_confirmation"
            try:
                outcomes.append(await send_confirmation(self.ctx, *job.args))
            except Retry:
                outcomes.append("retry")
                continue
            await self.pool.zrem(NOTIFY_QUEUE, job.job_id)
            await self.pool.delete(f"arq:job:{job.job_id}")
        return outcomes


class ServedNotifyApp:
    """The notify app served by uvicorn on a real port, lifespan included (migrations and
    pools are made in the server's own event loop)."""

    def __init__(self, app: FastAPI, port: int) -> None:
        self.app = app
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> ServedNotifyApp:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the notify app did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.should_exit = True
        self._thread.join(15)


@contextlib.contextmanager
def served(settings_factory: Any) -> Iterator[tuple[ServedNotifyApp, NotifySettings]]:
    port = free_port()
    settings = settings_factory(f"http://127.0.0.1:{port}")
    with ServedNotifyApp(create_app(settings), port) as server:
        yield server, settings
