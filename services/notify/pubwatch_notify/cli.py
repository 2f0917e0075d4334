"""``pubwatch notify ...``: the notify service's processes and admin commands."""

from __future__ import annotations

import asyncio
import logging
import sys

import click
from pubwatch_shared.logs import configure_logging
from pydantic import ValidationError

from pubwatch_notify.settings import NotifySettings

log = logging.getLogger("pubwatch.notify")


def load_settings(process_name: str) -> NotifySettings:
    """Settings from the environment; a bad setting ends the process with a clear message."""
    try:
        settings = NotifySettings()
    except ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"]) or "settings"
            name = f"PUBWATCH_{field.upper()}" if error["loc"] else "settings"
            click.echo(f"error: {name}: {error['msg']}", err=True)
        sys.exit(2)
    configure_logging(process_name, settings.log_level, settings.log_format)
    return settings


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
    import uvicorn

    from pubwatch_notify.api.app import create_app

    settings = load_settings("notify-api")
    app = create_app(settings)
    log.info("notify API listening", extra={"url": settings.public_url})
    uvicorn.run(
        app,
        host=settings.api_host,
        port=settings.listen_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=20,
    )


@notify.command()
def worker() -> None:
    """Consume events, fan out, send messages and digests."""
    from pubwatch_notify.worker import run_worker

    settings = load_settings("notify-worker")
    sys.exit(run_worker(settings))
