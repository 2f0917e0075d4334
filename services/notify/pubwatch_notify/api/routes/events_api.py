"""The events API for other systems: ``POST /v1/events``, ``GET /v1/events/{id}``,
``GET /v1/topics``.

A posted event goes through the same pipeline as PubMed's: it is stored once (unique source
and id) and only then acknowledged, and a ``handle_event`` job on the notify queue fans it
out. Checks run cheapest first: size and content type (before the body is read whole), the
API key, the client's rate limit, the signature (over the raw bytes), the contract, then
the topic rules.

``source`` must be the posting client's name; any other value is a 422 rather than being
overwritten, so a client that believes it posts as someone else finds out at once, and the
idempotency key (source, id) stays exactly what the client sent.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import (
    APIRouter,
    Body,
    Depends,
    FastAPI,
    Header,
    Path,
    Request,
    Response,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pubwatch_notify.api.client_ratelimit import ClientRateLimiter
from pubwatch_notify.api.clients import (
    SIGNATURE_HEADER,
    ApiClient,
    ClientRegistry,
    SignatureError,
    verify_signature,
)
from pubwatch_notify.api.deps import Resources, ResourcesDep, SessionDep, get_resources
from pubwatch_notify.api.event_writer import EventWriter, StoredNotQueued
from pubwatch_notify.delivery.intake import StoredSummary
from pubwatch_notify.store.models import Delivery, DeliveryStatus, StoredEvent
from pubwatch_shared.events import EXAMPLE_EVENT, ChangeEvent

log = logging.getLogger("pubwatch.notify.events_api")

TAG = "events API"
_STATE_KEY = "events_api"
_EVENT_ID_PATTERN = r"^[\x21-\x7e]+$"
_UNAVAILABLE_RETRY_S = 5
_EXAMPLE_CLIENT = "trial-watcher"
_EXAMPLE_POSTED = {
    **EXAMPLE_EVENT,
    "id": "trial-watcher:NCT01234567:2026-11-25",
    "type": "notice",
    "source": _EXAMPLE_CLIENT,
}
_UNAVAILABLE_DETAIL = (
    "PubWatch cannot reach its store right now; retry later. A posted event may or may "
    "not have been stored: posting it again with the same id is safe"
)
_STORED_NOT_QUEUED_DETAIL = (
    "the event was stored, but queuing it for delivery failed; it will be queued "
    "automatically within a few minutes. A retry with the same id is safe and queues it now"
)
_EXAMPLE_STATUS_URL = "http://127.0.0.1:8000/v1/events/trial-watcher%3ANCT01234567%3A2026-11-25"


# --- what the API answers ------------------------------------------------------------------


class FieldProblem(BaseModel):
    field: str = Field(description="Where the problem is: a path such as items[0].url.")
    message: str
    type: str = Field(description="A stable code for the kind of problem, e.g. missing.")


class ApiError(BaseModel):
    """Every error answer: a sentence, and for 422 each problem by field."""

    detail: str
    errors: list[FieldProblem] = Field(default_factory=list)


class EventAccepted(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": _EXAMPLE_POSTED["id"],
                    "source": _EXAMPLE_CLIENT,
                    "topic": EXAMPLE_EVENT["topic"],
                    "received_at": "2026-11-25T06:00:01Z",
                    "status_url": _EXAMPLE_STATUS_URL,
                    "duplicate": False,
                }
            ]
        }
    )

    id: str
    source: str
    topic: str
    received_at: datetime
    status_url: str = Field(description="GET it for the event's delivery counts.")
    duplicate: bool = Field(
        description="True when this (source, id) had been accepted before: nothing new was "
        "stored or sent, and the other fields describe the original."
    )


class DeliveryCounts(BaseModel):
    matched: int = Field(description="Subscriptions the event was matched to.")
    sent: int = Field(description="Accepted by the mail server or Twilio (or delivered).")
    failed: int = Field(description="Failed for good.")
    pending: int = Field(description="Queued, being sent, or waiting for a digest.")
    skipped: int = Field(description="Nothing to send after all (e.g. the subscriber left).")


class EventStatus(BaseModel):
    id: str
    source: str
    topic: str
    received_at: datetime
    fanned_out_at: datetime | None = Field(
        description="When every matching subscription had its delivery; null until then."
    )
    deliveries: DeliveryCounts
    event: ChangeEvent


class TopicInfo(BaseModel):
    slug: str
    name: str
    description: str


class TopicList(BaseModel):
    topics: list[TopicInfo]


class ApiProblem(Exception):
    """Raised anywhere in these routes; answered as an :class:`ApiError` JSON body."""

    def __init__(
        self,
        status_code: int,
        detail: str,
        *,
        errors: Sequence[FieldProblem] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.body = ApiError(detail=detail, errors=list(errors))
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        return JSONResponse(
            self.body.model_dump(mode="json"), status_code=self.status_code, headers=self.headers
        )


def _documented(description: str, examples: Mapping[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "model": ApiError,
        "description": description,
        "content": {
            "application/json": {
                "examples": {
                    name: {"value": {"detail": detail, "errors": []}}
                    for name, detail in examples.items()
                }
            }
        },
        **extra,
    }


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer"},
    }
}
_UNAUTHORIZED = _documented(
    "No API key, an unknown one, or (for clients that sign) a missing, stale or forged signature.",
    {
        "no key": "missing API key: send Authorization: Bearer <key> or X-API-Key: <key>",
        "replayed": "the signature's timestamp is 900 s old; more than 300 s is refused as a "
        "possible replay (sign each request when sending it)",
    },
)
_RATE_LIMITED = _documented(
    "Too many requests from this client.",
    {"rate limited": "rate limit of 600 requests per minute reached; retry after 1 s"},
    headers=_RETRY_AFTER,
)
_UNAVAILABLE = _documented(
    "The database or Redis is unreachable. Retry later.",
    {"down": _UNAVAILABLE_DETAIL},
    headers=_RETRY_AFTER,
)
_UNAVAILABLE_POST = _documented(
    "The database or Redis is unreachable. Retry the same post: an event is never stored "
    "or sent twice. When the answer says the event was stored, it will be delivered even "
    "without a retry (within a few minutes).",
    {"down": _UNAVAILABLE_DETAIL, "stored, not queued": _STORED_NOT_QUEUED_DETAIL},
    headers=_RETRY_AFTER,
)


def _invalid(examples: Mapping[str, list[dict[str, str]]]) -> dict[str, Any]:
    return {
        "model": ApiError,
        "description": "The request does not follow the contract; every problem is listed.",
        "content": {
            "application/json": {
                "examples": {
                    name: {"value": {"detail": _count_problems(len(errors)), "errors": errors}}
                    for name, errors in examples.items()
                }
            }
        },
    }


def _count_problems(count: int) -> str:
    noun = "problem" if count == 1 else "problems"
    return f"the request has {count} {noun}; each is listed in errors"


# --- the route class: checks before FastAPI reads the body, errors in one shape ------------


_UNAVAILABLE_ERRORS = (
    StoredNotQueued,
    RedisError,
    OperationalError,
    InterfaceError,
    PoolTimeoutError,
    OSError,
)


class EventsApiRoute(APIRoute):
    """Bounds the body before FastAPI reads it whole, and answers every error as ApiError.

    FastAPI reads and parses a body before any dependency runs, so the size limit and the
    content type are checked here, on the stream; the bytes are then replayed to FastAPI.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        takes_body = self.body_field is not None

        async def guarded(request: Request) -> Response:
            try:
                if takes_body:
                    limit = get_resources(request).settings.events_api_max_body_bytes
                    request = await _bounded_json_request(request, limit)
                return await handler(request)
            except ApiProblem as problem:
                return problem.response()
            except RequestValidationError as exc:
                return _validation_problem(exc.errors()).response()
            except HTTPException as exc:
                if not (takes_body and exc.status_code == 400):
                    raise
                # FastAPI's answer to a body it cannot even decode (not UTF-8, nested too
                # deep): for an integrator that is one more invalid-body problem.
                unreadable = FieldProblem(
                    field="body",
                    message="not valid JSON: the body must be UTF-8 text holding one JSON object",
                    type="json_invalid",
                )
                return ApiProblem(422, _count_problems(1), errors=[unreadable]).response()
            except _UNAVAILABLE_ERRORS as exc:
                return _unavailable(exc).response()

        return guarded


def _unavailable(exc: BaseException) -> ApiProblem:
    log.error("events API: a backing service is unavailable", extra={"error": repr(exc)})
    stored = isinstance(exc, StoredNotQueued)
    return ApiProblem(
        503,
        _STORED_NOT_QUEUED_DETAIL if stored else _UNAVAILABLE_DETAIL,
        headers={"Retry-After": str(_UNAVAILABLE_RETRY_S)},
    )


def _too_large(limit: int) -> ApiProblem:
    return ApiProblem(413, f"the body is larger than {limit} bytes; send fewer items per event")


def _is_json(content_type: str) -> bool:
    media_type, *params = content_type.split(";")
    if media_type.strip().lower() != "application/json":
        return False
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in {
            "utf-8",
            "utf8",
        }:
            return False
    return True


async def _bounded_json_request(request: Request, limit: int) -> Request:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    if not _is_json(request.headers.get("content-type", "")):
        raise ApiProblem(415, "send the event as JSON, with Content-Type: application/json")
    body = bytearray()
    # The declared length may be absent (chunked) or lie; the stream is what counts.
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large(limit)
    return _replaying(request, bytes(body))


def _replaying(request: Request, body: bytes) -> Request:
    """The same request, whose body (already read) is handed out again."""
    handed_out = False

    async def receive() -> Message:
        nonlocal handed_out
        if not handed_out:
            handed_out = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await request.receive()  # from here on only the disconnect is left

    return Request(request.scope, receive)


def _field_path(loc: Sequence[int | str]) -> str:
    where, *rest = loc or ("body",)
    path = ""
    for part in rest:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    if where == "body":
        return path or "body"
    return f"{where}.{path}" if path else str(where)


def _problem_for(error: Mapping[str, Any]) -> FieldProblem:
    kind = str(error.get("type", "invalid"))
    loc = tuple(error.get("loc", ()))
    message = str(error.get("msg", "invalid"))
    if kind == "json_invalid":
        reason = error.get("ctx", {}).get("error", "invalid JSON")
        where = loc[1] if len(loc) > 1 else 0
        return FieldProblem(
            field="body", message=f"not valid JSON: {reason} at character {where}", type=kind
        )
    field = _field_path(loc)
    if kind == "missing" and field == "body":
        message = "the body is empty; send the event as a JSON object"
    elif kind == "extra_forbidden":
        message = "unknown field: the event contract has no such field"
    return FieldProblem(field=field, message=message, type=kind)


def _validation_problem(errors: Sequence[Any]) -> ApiProblem:
    problems = [_problem_for(error) for error in errors]
    return ApiProblem(422, _count_problems(len(problems)), errors=problems)


# --- who is calling ------------------------------------------------------------------------


@dataclass
class _EventsApiState:
    registry: ClientRegistry
    limiter: ClientRateLimiter | None = None
    # Stores posted events in shared transactions (group commit). With SQLite, one writer
    # per process also spares concurrent requests SQLite's busy handler (sleeps of up to
    # 100 ms); the writer's batches hand the lock on the moment it is free.
    writer: EventWriter | None = None


def _state(resources: Resources) -> _EventsApiState:
    state = resources.extra.get(_STATE_KEY)
    if not isinstance(state, _EventsApiState):
        state = _EventsApiState(ClientRegistry.from_settings(resources.settings, resources.topics))
        resources.extra[_STATE_KEY] = state
    return state


def _limiter(resources: Resources) -> ClientRateLimiter:
    state = _state(resources)
    if state.limiter is None:
        if resources.queue is None:
            raise RuntimeError("Redis is not set up (the app's lifespan has not run)")
        settings = resources.settings
        state.limiter = ClientRateLimiter(
            resources.queue, settings.events_api_rate_per_minute, settings.events_api_burst
        )
    return state.limiter


_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="BearerKey",
    description="The client's API key: `Authorization: Bearer <key>`.",
)
_header_key = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    scheme_name="ApiKeyHeader",
    description="The client's API key, for clients that cannot set Authorization.",
)


async def current_client(
    resources: ResourcesDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header_key: Annotated[str | None, Depends(_header_key)],
) -> ApiClient:
    """The client whose API key came with the request, within its rate limit."""
    key = bearer.credentials if bearer is not None else header_key
    challenge = {"WWW-Authenticate": 'Bearer realm="pubwatch-events"'}
    if not key:
        raise ApiProblem(
            401,
            "missing API key: send Authorization: Bearer <key> or X-API-Key: <key>",
            headers=challenge,
        )
    client = _state(resources).registry.authenticate(key)
    if client is None:
        raise ApiProblem(401, "unknown API key", headers=challenge)
    retry_after_s = await _limiter(resources).retry_after_s(client.name)
    if retry_after_s:
        raise _rate_limited(resources, retry_after_s)
    return client


def _rate_limited(resources: Resources, retry_after_s: int) -> ApiProblem:
    per_minute = resources.settings.events_api_rate_per_minute
    return ApiProblem(
        429,
        f"rate limit of {per_minute} requests per minute reached; retry after {retry_after_s} s",
        headers={"Retry-After": str(retry_after_s)},
    )


CurrentClientDep = Annotated[ApiClient, Depends(current_client)]


async def signed_client(
    client: CurrentClientDep,
    request: Request,
    resources: ResourcesDep,
    signature: Annotated[
        str | None,
        Header(
            alias=SIGNATURE_HEADER,
            description='`t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`. '
            "Required for clients configured with a signing secret; refused when older "
            "than 5 minutes.",
            examples=["t=1795500000,v1=5f2b...e9"],
        ),
    ] = None,
) -> ApiClient:
    """The current client, its signature checked when it is configured to sign."""
    if client.requires_signature:
        try:
            verify_signature(
                signature,
                await request.body(),
                client.signing_secrets,
                now_s=time.time(),
                tolerance_s=resources.settings.events_api_signature_tolerance_s,
            )
        except SignatureError as exc:
            raise ApiProblem(401, str(exc)) from None
    return client


SignedClientDep = Annotated[ApiClient, Depends(signed_client)]


# --- the routes ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _load_clients(app: FastAPI) -> AsyncIterator[None]:
    # Parse the client settings at start-up, so a mistake stops the process with a message
    # instead of failing every request.
    state = _state(app.state.resources)
    log.info("events API clients loaded", extra={"clients": state.registry.client_names})
    try:
        yield
    finally:
        # Answer every event handed over before the engine and Redis pool close.
        if state.writer is not None:
            await state.writer.drain()


router = APIRouter(lifespan=_load_clients)
_events = APIRouter(route_class=EventsApiRoute, tags=[TAG])


def status_url(public_url: str, event_id: str) -> str:
    # Ids may hold '/', ':' or '?': escape all of them so the URL names exactly this id.
    return f"{public_url}/v1/events/{quote(event_id, safe='')}"


async def _posted_by(session: AsyncSession, client: str, event_id: str) -> StoredEvent | None:
    stored: StoredEvent | None = await session.scalar(
        select(StoredEvent).where(
            StoredEvent.source == client,
            StoredEvent.event_id == event_id,
            StoredEvent.posted_by == client,
        )
    )
    return stored


def _writer(resources: Resources) -> EventWriter:
    state = _state(resources)
    if state.writer is None:
        if resources.engine is None or resources.queue is None:
            raise RuntimeError("the database or Redis is not set up (the lifespan has not run)")
        state.writer = EventWriter(resources.engine, resources.queue)
    return state.writer


def _topic_problems(
    event: ChangeEvent, client: ApiClient, topics: Mapping[str, Any]
) -> list[FieldProblem]:
    problems = []
    if event.source != client.name:
        problems.append(
            FieldProblem(
                field="source",
                message=f"must be {client.name!r}, the name this API key is registered under",
                type="source_mismatch",
            )
        )
    if event.topic not in topics:
        problems.append(
            FieldProblem(
                field="topic",
                message=f"unknown topic {event.topic!r}; GET /v1/topics lists the topics",
                type="unknown_topic",
            )
        )
    return problems


@_events.post(
    "/v1/events",
    status_code=202,
    response_model=EventAccepted,
    summary="Post an event",
    responses={
        200: {
            "model": EventAccepted,
            "description": "This (source, id) was accepted before: the original result; "
            "nothing is sent again.",
            "headers": {
                "Location": {"description": "The status URL.", "schema": {"type": "string"}}
            },
        },
        202: {
            "description": "Stored; it will be delivered to the topic's subscribers.",
            "headers": {
                "Location": {"description": "The status URL.", "schema": {"type": "string"}}
            },
        },
        401: _UNAUTHORIZED,
        403: _documented(
            "This client may not post to the event's topic.",
            {"topic": "client 'trial-watcher' may not post to topic 'other-topic'"},
        ),
        413: _documented(
            "The body is over 64 KiB.",
            {"too large": "the body is larger than 65536 bytes; send fewer items per event"},
        ),
        415: _documented(
            "The body is not JSON.",
            {"not JSON": "send the event as JSON, with Content-Type: application/json"},
        ),
        422: _invalid(
            {
                "contract": [
                    {"field": "occurred_at", "message": "Field required", "type": "missing"},
                    {
                        "field": "items[0].url",
                        "message": "Input should be a valid URL, relative URL without a base",
                        "type": "url_parsing",
                    },
                ],
                "unknown topic": [
                    {
                        "field": "topic",
                        "message": "unknown topic 'no-such-topic'; GET /v1/topics lists the topics",
                        "type": "unknown_topic",
                    }
                ],
            }
        ),
        429: _RATE_LIMITED,
        503: _UNAVAILABLE_POST,
    },
)
async def post_event(
    event: Annotated[
        ChangeEvent,
        Body(
            openapi_examples={
                "notice": {
                    "summary": "A notice from a trial-registry watcher",
                    "value": _EXAMPLE_POSTED,
                }
            }
        ),
    ],
    client: SignedClientDep,
    response: Response,
    resources: ResourcesDep,
) -> EventAccepted:
    """Post one event (the shared event contract, version 1) for the subscribers of its topic.

    `source` must be the name the API key is registered under. The event is stored before
    the answer: **202** means it will be delivered. Posting the same `id` again answers
    **200** with the original result and sends nothing again, so a client may retry freely.
    """
    problems = _topic_problems(event, client, resources.topics)
    if problems:
        raise ApiProblem(422, _count_problems(len(problems)), errors=problems)
    if not client.may_post_to(event.topic):
        raise ApiProblem(403, f"client {client.name!r} may not post to topic {event.topic!r}")
    # Stored and committed, and queued when new or not fanned out yet (the first answer may
    # have been lost to a Redis failure after the commit; the job id is deterministic, so a
    # job already queued or done is not queued twice), before this returns.
    stored = await _writer(resources).store(event, posted_by=client.name)
    accepted = _accepted(resources, stored)
    response.headers["Location"] = accepted.status_url
    if not stored.created:
        response.status_code = 200
    return accepted


def _accepted(resources: Resources, stored: StoredSummary) -> EventAccepted:
    return EventAccepted(
        id=stored.event_id,
        source=stored.source,
        topic=stored.topic,
        received_at=stored.received_at,
        status_url=status_url(resources.settings.public_url, stored.event_id),
        duplicate=not stored.created,
    )


_PENDING = {DeliveryStatus.QUEUED, DeliveryStatus.SENDING, DeliveryStatus.PENDING}
_SENT = {DeliveryStatus.SENT, DeliveryStatus.DELIVERED}


async def _delivery_counts(session: AsyncSession, event_pk: int) -> DeliveryCounts:
    rows = await session.execute(
        select(Delivery.status, func.count())
        .where(Delivery.event_id == event_pk)
        .group_by(Delivery.status)
    )
    by_status = {str(status): int(count) for status, count in rows}
    return DeliveryCounts(
        matched=sum(by_status.values()),
        sent=sum(by_status.get(s, 0) for s in _SENT),
        failed=by_status.get(DeliveryStatus.FAILED, 0),
        pending=sum(by_status.get(s, 0) for s in _PENDING),
        skipped=by_status.get(DeliveryStatus.SKIPPED, 0),
    )


@_events.get(
    "/v1/events/{event_id:path}",
    response_model=EventStatus,
    summary="An event and its delivery counts",
    responses={
        401: _UNAUTHORIZED,
        404: _documented(
            "No event with this id was posted by this client.",
            {"unknown": "no event with this id was posted by this client"},
        ),
        422: _invalid(
            {
                "bad id": [
                    {
                        "field": "path.event_id",
                        "message": "String should have at most 200 characters",
                        "type": "string_too_long",
                    }
                ]
            }
        ),
        429: _RATE_LIMITED,
        503: _UNAVAILABLE,
    },
)
async def get_event(
    event_id: Annotated[
        str,
        Path(
            min_length=1,
            max_length=200,
            pattern=_EVENT_ID_PATTERN,
            description="The event's id as posted (URL-encoded).",
            examples=[_EXAMPLE_POSTED["id"]],
        ),
    ],
    client: CurrentClientDep,
    session: SessionDep,
) -> EventStatus:
    """The event as stored and how its deliveries stand. Only the client that posted an event
    can see it; to any other it does not exist (404)."""
    stored = await _posted_by(session, client.name, event_id)
    if stored is None:
        raise ApiProblem(404, "no event with this id was posted by this client")
    return EventStatus(
        id=stored.event_id,
        source=stored.source,
        topic=stored.topic,
        received_at=stored.received_at,
        fanned_out_at=stored.fanned_out_at,
        deliveries=await _delivery_counts(session, stored.id),
        event=ChangeEvent.model_validate(stored.payload),
    )


@_events.get(
    "/v1/topics",
    response_model=TopicList,
    summary="The topics events may be posted to",
    responses={503: _UNAVAILABLE},
)
async def list_topics(resources: ResourcesDep) -> TopicList:
    """Every topic PubWatch follows, with the slug an event's `topic` names. Public: the same
    topics are on PubWatch's web pages."""
    return TopicList(
        topics=[
            TopicInfo(slug=topic.slug, name=topic.name, description=topic.description)
            for topic in resources.topics.values()
        ]
    )


router.include_router(_events)


# --- the fast path for a well-formed post ----------------------------------------------------


class EventsFastPath:
    """ASGI middleware answering a well-formed ``POST /v1/events`` without FastAPI's routing
    and dependency machinery, which cost a small request more than storing it does.

    It runs only the side-effect-free checks first (size, content type, API key, a client
    that does not sign, the contract, the topic rules). A request that fails any of them is
    handed, body and all, to the route above, which answers it exactly as it always does (so
    every error answer comes from one place). A request that passes them all can end only
    in the route's own three ways: 429 from the rate limit, 503 when a backing service is
    down, or accepted: stored and queued by the same :class:`EventWriter`, answered with the
    same :class:`EventAccepted` body and ``Location`` header.
    """

    def __init__(self, app: ASGIApp, resources: Resources) -> None:
        self.app = app
        self._resources = resources

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (
            scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/v1/events"
        ):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        limit = self._resources.settings.events_api_max_body_bytes
        declared = headers.get("content-length", "")
        if (declared.isdigit() and int(declared) > limit) or not _is_json(
            headers.get("content-type", "")
        ):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                await _too_large(limit).response()(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        answer = await self._answer(headers, body)
        if answer is None:
            await self.app(scope, _replay(body, receive), send)
            return
        await answer(scope, receive, send)

    async def _answer(self, headers: Headers, body: bytes) -> Response | None:
        """The answer, or None for a request the route must answer."""
        resources = self._resources
        key = _api_key(headers)
        if not key:
            return None
        client = _state(resources).registry.authenticate(key)
        if client is None or client.requires_signature:
            return None
        try:
            event = ChangeEvent.model_validate(json.loads(body))
        except ValueError:  # not JSON, not UTF-8, or not the contract (pydantic's errors)
            return None
        if _topic_problems(event, client, resources.topics) or not client.may_post_to(event.topic):
            return None
        try:
            retry_after_s = await _limiter(resources).retry_after_s(client.name)
            if retry_after_s:
                return _rate_limited(resources, retry_after_s).response()
            stored = await _writer(resources).store(event, posted_by=client.name)
        except _UNAVAILABLE_ERRORS as exc:
            return _unavailable(exc).response()
        accepted = _accepted(resources, stored)
        return JSONResponse(
            accepted.model_dump(mode="json"),
            status_code=202 if stored.created else 200,
            headers={"Location": accepted.status_url},
        )


def _api_key(headers: Headers) -> str | None:
    """The key as the route's security schemes read it: ``Authorization: Bearer <key>``
    first, else ``X-API-Key``."""
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer" and credentials:
        return credentials
    return headers.get("x-api-key") or None


def _replay(body: bytes, receive: Receive) -> Receive:
    handed_out = False

    async def replaying() -> Message:
        nonlocal handed_out
        if not handed_out:
            handed_out = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replaying
