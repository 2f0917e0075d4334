"""What routes depend on: the app's resources, a database session, and page rendering.

Everything is built once in :func:`pubwatch_notify.api.app.create_app` and kept on
``app.state.resources``; routes take it through the ``Annotated`` aliases below.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from arq import ArqRedis
from fastapi import Depends, Request, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from pubwatch_notify.api.security import CSRF_FIELD, Csrf, RateLimiter
from pubwatch_notify.links import Links
from pubwatch_notify.settings import NotifySettings
from pubwatch_notify.store.engine import WriteTurns
from pubwatch_notify.tokens import TokenSigner
from pubwatch_shared.topics import Topic

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


@dataclass
class Resources:
    settings: NotifySettings
    templates: Jinja2Templates
    topics: dict[str, Topic]
    signer: TokenSigner
    links: Links
    csrf: Csrf
    # Set by the lifespan once the database and Redis are up.
    engine: AsyncEngine | None = None
    sessionmaker: async_sessionmaker[AsyncSession] | None = None
    # Sessions for GET and HEAD, which only read: see ``store.engine.read_only``.
    read_sessionmaker: async_sessionmaker[AsyncSession] | None = None
    # Frequent write transactions (sign-ups) queue here on SQLite: see ``WriteTurns``.
    write_turns: WriteTurns | None = None
    queue: ArqRedis | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def get_resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


async def _resources(request: Request) -> Resources:
    # The dependencies are ``async def`` although nothing in them waits: FastAPI runs a plain
    # ``def`` dependency in a worker thread, a thread hop per request for a lookup.
    return get_resources(request)


ResourcesDep = Annotated[Resources, Depends(_resources)]


async def get_settings(resources: ResourcesDep) -> NotifySettings:
    return resources.settings


SettingsDep = Annotated[NotifySettings, Depends(get_settings)]


# Methods that never change state here: links in messages are opened by mail scanners, so
# every change is a POST behind a button.
READ_ONLY_METHODS = frozenset({"GET", "HEAD"})


async def get_session(request: Request, resources: ResourcesDep) -> AsyncIterator[AsyncSession]:
    reading = request.method in READ_ONLY_METHODS
    sessionmaker = resources.read_sessionmaker if reading else resources.sessionmaker
    if sessionmaker is None:
        raise RuntimeError("the database is not set up (the app's lifespan has not run)")
    async with sessionmaker() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def get_write_turns(resources: ResourcesDep) -> WriteTurns:
    if resources.write_turns is None:
        raise RuntimeError("the database is not set up (the app's lifespan has not run)")
    return resources.write_turns


WriteTurnsDep = Annotated[WriteTurns, Depends(get_write_turns)]


async def get_queue(resources: ResourcesDep) -> ArqRedis:
    if resources.queue is None:
        raise RuntimeError("Redis is not set up (the app's lifespan has not run)")
    return resources.queue


QueueDep = Annotated[ArqRedis, Depends(get_queue)]


async def get_rate_limiter(resources: ResourcesDep, queue: QueueDep) -> RateLimiter:
    return RateLimiter(queue, resources.settings.secret_key)


RateLimiterDep = Annotated[RateLimiter, Depends(get_rate_limiter)]


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def render(
    request: Request,
    name: str,
    context: Mapping[str, Any] | None = None,
    status_code: int = 200,
    *,
    with_csrf: bool = True,
) -> Response:
    """Render a page with what every page needs (settings, topics, a CSRF token).

    ``with_csrf=False`` for answers that must set no cookie (the one-click unsubscribe)."""
    resources = get_resources(request)
    csrf = resources.csrf.pair_for(request)
    page_context: dict[str, Any] = {
        "settings": resources.settings,
        "topics": resources.topics,
        "csrf_field": CSRF_FIELD,
        "csrf_token": csrf.token,
    }
    page_context.update(context or {})
    response = resources.templates.TemplateResponse(
        request, name, page_context, status_code=status_code
    )
    if with_csrf:
        resources.csrf.set_cookie(response, csrf)
    return response


def render_message(
    request: Request, title: str, message: str, status_code: int, *, embed: bool = False
) -> Response:
    """A plain page with a heading and one paragraph: for errors and dead ends."""
    return render(
        request,
        "message.html",
        {"title": title, "message": message, "embed": embed},
        status_code=status_code,
    )
