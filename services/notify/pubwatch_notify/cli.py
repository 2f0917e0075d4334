"""``pubwatch notify ...``: the notify service's processes and admin commands."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from pubwatch_notify.settings import NotifySettings
from pubwatch_shared.settings import load_settings_or_exit

if TYPE_CHECKING:
    from arq import ArqRedis
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

T = TypeVar("T")

log = logging.getLogger("pubwatch.notify")


def load_settings(process_name: str) -> NotifySettings:
    """Settings from the environment; a bad setting ends the process with a clear message."""
    return load_settings_or_exit(NotifySettings, process_name)


@click.group()
def notify() -> None:
    """Subscriptions, event fan-out and delivery by email and SMS."""


@notify.command()
def migrate() -> None:
    """Apply database migrations (whole, or not at all)."""
    from pubwatch_notify.store.engine import make_engine
    from pubwatch_notify.store.migrate import upgrade_to_head

    settings = load_settings("notify-migrate")

    async def run() -> tuple[str | None, str | None]:
        engine = make_engine(settings.resolved_database_url)
        try:
            return await upgrade_to_head(engine)
        finally:
            await engine.dispose()

    try:
        before, after = asyncio.run(run())
    except Exception as exc:
        log.error("migration failed, schema left as it was: %s", exc)
        sys.exit(1)
    if before == after:
        log.info("database schema is current (revision %s)", after)
    else:
        log.info("database migrated from revision %s to %s", before or "(empty)", after)


@notify.command()
def api() -> None:
    """Serve the web pages and the HTTP API on PUBWATCH_PUBLIC_URL's port."""
    settings = load_settings("notify-api")  # first: a bad setting is refused at once

    import uvicorn

    from pubwatch_notify.api.app import create_app

    serve: dict[str, Any] = {
        "host": settings.api_host,
        "port": settings.listen_port,
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": 20,
    }
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal under the handler
    # found at start-up; with the default one the process would die "killed by SIGTERM"
    # (exit 143 in a container) after a clean stop. This handler makes that exit 0.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    if settings.api_workers > 1:
        _serve_workers(settings, serve)
    else:
        app = create_app(settings)
        log.info("notify API listening", extra={"url": settings.public_url})
        uvicorn.run(app, **serve)
    log.info("notify API stopped")


def _serve_workers(settings: NotifySettings, serve: dict[str, Any]) -> None:
    """Several uvicorn worker processes on one socket (``PUBWATCH_API_WORKERS``). What must
    happen once happens here, before they start: the migrations (so workers never race to
    apply them), and an embedded Redis when none is configured (so all workers share one,
    and so one rate limit and one queue)."""
    import os

    import uvicorn

    from pubwatch_notify.store.engine import make_engine
    from pubwatch_notify.store.migrate import upgrade_to_head
    from pubwatch_shared.embedded_redis import redis_url_or_embedded

    async def migrate() -> None:
        engine = make_engine(settings.resolved_database_url)
        try:
            await upgrade_to_head(engine)
        finally:
            await engine.dispose()

    asyncio.run(migrate())
    with redis_url_or_embedded(settings.redis_url, settings.var_dir) as redis_url:
        # The workers read their settings from the environment, as this process did.
        os.environ["PUBWATCH_REDIS_URL"] = redis_url
        log.info(
            "notify API listening",
            extra={"url": settings.public_url, "workers": settings.api_workers},
        )
        uvicorn.run(
            "pubwatch_notify.api.app:create_app_from_env",
            factory=True,
            workers=settings.api_workers,
            **serve,
        )


@notify.command()
def worker() -> None:
    """Consume events, fan out, send messages and digests."""
    settings = load_settings("notify-worker")  # first: a bad setting is refused at once

    from pubwatch_notify.worker import run_worker

    sys.exit(run_worker(settings))


# -- operations ---------------------------------------------------------------------------


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@contextlib.asynccontextmanager
async def _backends(
    settings: NotifySettings, redis_url: str
) -> AsyncIterator[tuple[async_sessionmaker[AsyncSession], ArqRedis]]:
    """A session factory and a queue connection for one admin command."""
    from arq import create_pool

    from pubwatch_notify.store.engine import make_engine, make_sessionmaker
    from pubwatch_shared.queue import NOTIFY_QUEUE, deserialize, redis_settings, serialize

    engine = make_engine(settings.resolved_database_url)
    queue_settings = redis_settings(redis_url)
    # An admin command should fail fast, not wait half a minute for Redis.
    queue_settings.conn_retries = 1
    queue = await create_pool(
        queue_settings,
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name=NOTIFY_QUEUE,
    )
    try:
        yield make_sessionmaker(engine), queue
    finally:
        await queue.aclose()
        await engine.dispose()


def _run_with_backends(
    settings: NotifySettings,
    action: Callable[[async_sessionmaker[AsyncSession], ArqRedis], Awaitable[T]],
) -> T:
    """Run ``action`` against the database and Redis; every failure becomes a clear exit."""
    from pubwatch_notify.ops.actions import ActionError
    from pubwatch_shared.embedded_redis import EmbeddedRedisError, redis_url_or_embedded

    async def run(redis_url: str) -> T:
        async with _backends(settings, redis_url) as (sessions, queue):
            return await action(sessions, queue)

    try:
        with redis_url_or_embedded(settings.redis_url, settings.var_dir) as redis_url:
            return asyncio.run(run(redis_url))
    except ActionError as exc:
        _fail(str(exc))
    except EmbeddedRedisError as exc:
        _fail(f"{exc} (set PUBWATCH_REDIS_URL to reach a running system's Redis)", 2)
    except Exception as exc:
        # Redis or the database unreachable, a schema not migrated: name it, no traceback.
        _fail(f"{type(exc).__name__}: {exc}")


@notify.command("check-worker")
def check_worker() -> None:
    """Exit 0 when a notify worker on this host is alive (its heartbeat is fresh)."""
    from pubwatch_notify.worker import HEARTBEAT_SERVICE
    from pubwatch_shared.liveness import run_check

    settings = load_settings("notify-check-worker")
    result = run_check(settings.redis_url, HEARTBEAT_SERVICE)
    click.echo(result.message, err=not result.ok)
    sys.exit(0 if result.ok else 1)


@notify.command()
def queue() -> None:
    """Show the notify queue: jobs waiting, deferred, in progress, the oldest one's age."""
    from pubwatch_notify.ops.stats import QueueStats, live_worker_counts, queue_stats

    settings = load_settings("notify-admin")

    async def read(
        _: async_sessionmaker[AsyncSession], pool: ArqRedis
    ) -> tuple[QueueStats, dict[str, int]]:
        return await queue_stats(pool), await live_worker_counts(pool)

    stats, workers = _run_with_backends(settings, read)
    click.echo(f"jobs on the queue:   {stats.queued}")
    click.echo(f"  due now:           {stats.ready}")
    click.echo(f"  deferred:          {stats.deferred}")
    click.echo(f"  in progress:       {stats.in_progress}")
    click.echo(f"oldest due job:      {stats.oldest_ready_age_s:.0f} s")
    click.echo("live workers:        " + ", ".join(f"{k} {v}" for k, v in workers.items()))


@notify.command("export-subscriber")
@click.argument("address")
def export_subscriber(address: str) -> None:
    """Print everything held about ADDRESS (email or mobile number) as JSON."""
    from pubwatch_notify.ops.actions import export_subscriber as export

    settings = load_settings("notify-admin")

    async def read(sessions: async_sessionmaker[AsyncSession], _: ArqRedis) -> dict[str, Any]:
        async with sessions() as session:
            return await export(
                session,
                address,
                secret_key=settings.secret_key,
                default_region=settings.phone_default_region,
            )

    data = _run_with_backends(settings, read)
    if not data["subscriptions"] and not data["consent_log"]:
        _fail("nothing is held for that address")
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@notify.command("delete-subscriber")
@click.argument("address")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def delete_subscriber(address: str, yes: bool) -> None:
    """Delete ADDRESS's subscriptions and deliveries; the consent log keeps only a hash."""
    from pubwatch_notify.subscriptions.addresses import mask_address
    from pubwatch_notify.subscriptions.service import delete_subscriber_data

    settings = load_settings("notify-admin")
    masked = mask_address(address.strip())
    if not yes:
        click.confirm(f"Delete every subscription and delivery of {masked}?", abort=True)

    async def delete(sessions: async_sessionmaker[AsyncSession], _: ArqRedis) -> int:
        async with sessions() as session:
            return await delete_subscriber_data(
                session, address, default_region=settings.phone_default_region
            )

    deleted = _run_with_backends(settings, delete)
    if deleted == 0:
        _fail(f"no subscriptions found for {masked}")
    click.echo(f"deleted {deleted} subscription(s) of {masked} and their deliveries")
    log.info("subscriber data deleted on request", extra={"subscriptions": deleted})


@notify.command()
@click.argument("delivery_id", type=int)
def resend(delivery_id: int) -> None:
    """Queue a failed delivery again and enqueue its send job."""
    from pubwatch_notify.ops.actions import resend as requeue

    settings = load_settings("notify-admin")

    async def act(sessions: async_sessionmaker[AsyncSession], pool: ArqRedis) -> str:
        async with sessions() as session:
            return await requeue(session, pool, delivery_id)

    click.echo(_run_with_backends(settings, act))


@notify.command("run-digests")
@click.option(
    "--all",
    "all_now",
    is_flag=True,
    help="Send every daily/weekly subscriber's digest now, not only those due.",
)
def run_digests(all_now: bool) -> None:
    """Enqueue the digest pass now (a notify worker runs it)."""
    from pubwatch_notify.ops.actions import run_digests as enqueue_digests

    settings = load_settings("notify-admin")

    async def act(sessions: async_sessionmaker[AsyncSession], pool: ArqRedis) -> str:
        async with sessions() as session:
            return await enqueue_digests(session, pool, all_now=all_now)

    click.echo(_run_with_backends(settings, act))
