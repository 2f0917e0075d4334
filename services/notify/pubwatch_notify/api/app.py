"""The notify web app: wiring only. Each group of routes lives in ``api/routes/<name>.py``."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from arq import create_pool
from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from pubwatch_notify.api.deps import (
    STATIC_DIR,
    TEMPLATES_DIR,
    Resources,
    render_message,
)
from pubwatch_notify.api.routes import (
    admin,
    event_pages,
    events_api,
    health,
    manage,
    metrics,
    outbox,
    pages,
    subscribe,
    twilio_webhooks,
)
from pubwatch_notify.api.security import Csrf, install_security_headers
from pubwatch_notify.links import Links
from pubwatch_notify.settings import NotifySettings
from pubwatch_notify.store.engine import (
    WriteTurns,
    make_engine,
    make_sessionmaker,
    read_only,
)
from pubwatch_notify.store.migrate import upgrade_to_head
from pubwatch_notify.tokens import TokenSigner
from pubwatch_shared.embedded_redis import redis_url_or_embedded
from pubwatch_shared.queue import NOTIFY_QUEUE, deserialize, redis_settings, serialize
from pubwatch_shared.topics import load_topics

log = logging.getLogger("pubwatch.notify.api")


def create_app(settings: NotifySettings) -> FastAPI:
    signer = TokenSigner(settings.secret_key)
    resources = Resources(
        settings=settings,
        templates=Jinja2Templates(directory=TEMPLATES_DIR),
        topics={topic.slug: topic for topic in load_topics(settings.topics_file)},
        signer=signer,
        links=Links(settings.public_url, signer),
        csrf=Csrf(settings.secret_key, settings.public_url),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with redis_url_or_embedded(settings.redis_url, settings.var_dir) as redis_url:
            engine = make_engine(settings.resolved_database_url)
            before, after = await upgrade_to_head(engine)
            if before != after:
                log.info("database migrated", extra={"from": before, "to": after})
            queue = await create_pool(
                redis_settings(redis_url),
                job_serializer=serialize,
                job_deserializer=deserialize,
                default_queue_name=NOTIFY_QUEUE,
            )
            resources.engine = engine
            resources.sessionmaker = make_sessionmaker(engine)
            resources.read_sessionmaker = make_sessionmaker(read_only(engine))
            resources.write_turns = WriteTurns(engine)
            resources.queue = queue
            # Everything built so far lives as long as the process: move it out of the
            # garbage collector's sight, so a full collection no longer walks the whole of
            # FastAPI, SQLAlchemy and pydantic (measured: pauses of 50-130 ms about once a
            # second under load, every request in flight waiting them out).
            gc.collect()
            gc.freeze()
            try:
                yield
            finally:
                gc.unfreeze()  # an app built again in this process (tests) starts afresh
                await queue.aclose()
                await engine.dispose()

    app = FastAPI(title="PubWatch notify", lifespan=lifespan)
    app.state.resources = resources
    # Inside the security headers (added later, so outside it): its answers get them too.
    app.add_middleware(events_api.EventsFastPath, resources=resources)
    install_security_headers(app, settings)
    install_error_pages(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(health.router)
    app.include_router(pages.router)
    app.include_router(subscribe.router)
    app.include_router(manage.router)
    app.include_router(events_api.router)
    app.include_router(event_pages.router)
    app.include_router(outbox.router)
    app.include_router(twilio_webhooks.router)
    app.include_router(metrics.router)
    app.include_router(admin.router)
    return app


def create_app_from_env() -> FastAPI:
    """The app with settings from the environment: for uvicorn's worker processes
    (``PUBWATCH_API_WORKERS`` > 1), each of which builds its own."""
    from pubwatch_shared.settings import load_settings_or_exit

    return create_app(load_settings_or_exit(NotifySettings, "notify-api"))


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def install_error_pages(app: FastAPI) -> None:
    """Friendly pages for people; the default JSON for API clients."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404 and _wants_html(request):
            return render_message(
                request, "Page not found", "There is no page at this address.", 404
            )
        return await http_exception_handler(request, exc)

    @app.exception_handler(RedisError)
    @app.exception_handler(OperationalError)
    async def backend_down(request: Request, exc: Exception) -> Response:
        log.error("a backing service is unavailable", extra={"error": type(exc).__name__})
        return render_message(
            request,
            "Please try again in a few minutes",
            "PubWatch can't reach one of its services right now. Nothing was changed.",
            503,
        )
