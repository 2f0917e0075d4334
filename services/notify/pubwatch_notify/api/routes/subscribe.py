"""The subscribe form's POST, on the topic page (``/topics/{slug}``) and the embeddable
form (``/embed/{slug}``). A mistake re-renders the form with each error beside its field and
the person's input kept; nothing is stored unless the whole form is right."""

from __future__ import annotations

import logging

from arq import ArqRedis
from fastapi import APIRouter, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from pubwatch_notify.api import forms
from pubwatch_notify.api.deps import (
    QueueDep,
    RateLimiterDep,
    Resources,
    ResourcesDep,
    SessionDep,
    WriteTurnsDep,
    client_ip,
    render,
    render_message,
)
from pubwatch_notify.api.routes.pages import (
    HONEYPOT_FIELD,
    form_context,
    topic_page_context,
)
from pubwatch_notify.api.security import RateLimiter
from pubwatch_notify.store.engine import WriteTurns
from pubwatch_notify.store.models import Channel
from pubwatch_notify.subscriptions import service
from pubwatch_notify.subscriptions.addresses import address_hash
from pubwatch_notify.subscriptions.confirmation import enqueue_confirmation
from pubwatch_notify.subscriptions.form import check_subscribe_form, first_text, read_values
from pubwatch_notify.subscriptions.wording import consent_wording
from pubwatch_shared.topics import Topic

log = logging.getLogger("pubwatch.notify.subscribe")
router = APIRouter(tags=["pages"], include_in_schema=False)


async def _render_form(
    request: Request,
    session: AsyncSession,
    resources: Resources,
    topic: Topic,
    values: dict[str, str],
    errors: dict[str, str],
    *,
    embed: bool,
    status_code: int,
) -> Response:
    context = form_context(resources, topic, values, errors, embed=embed, detect_timezone=False)
    if embed:
        return render(request, "embed.html", context, status_code)
    context = await topic_page_context(session, resources, topic, context)
    return render(request, "topic.html", context, status_code)


async def _subscribe(
    request: Request,
    slug: str,
    *,
    embed: bool,
    resources: Resources,
    session: AsyncSession,
    limiter: RateLimiter,
    queue: ArqRedis,
    turns: WriteTurns,
) -> Response:
    settings = resources.settings
    topic = resources.topics.get(slug)
    if topic is None:
        return render_message(
            request, "Topic not found", "PubWatch doesn't follow this topic.", 404, embed=embed
        )
    form = await forms.read_form(request)
    if form is None:
        return render_message(
            request,
            "Something went wrong",
            "The form could not be read. Please try again.",
            400,
            embed=embed,
        )
    ip = client_ip(request)
    if first_text(form, HONEYPOT_FIELD):
        return render(request, "check.html", {"topic": topic, "channel": "", "embed": embed})
    if not await forms.signup_ip_allowed(limiter, settings, ip):
        return render_message(
            request, "Too many sign-ups", forms.TOO_MANY_FROM_NETWORK, 429, embed=embed
        )
    values = read_values(form, settings.default_timezone)
    if not forms.csrf_ok(request, resources, form):
        errors = {"form": "This form had expired. Check your details and send it again."}
        return await _render_form(
            request, session, resources, topic, values, errors, embed=embed, status_code=403
        )
    source = "embed" if embed else "web"
    checked = await forms.run_check(
        settings,
        check_subscribe_form,
        form,
        topic.slug,
        forms.form_rules(settings),
        settings.default_timezone,
        source,
    )
    subscribe_request = checked.request
    if subscribe_request is None:
        return await _render_form(
            request,
            session,
            resources,
            topic,
            checked.values,
            checked.errors,
            embed=embed,
            status_code=422,
        )
    hashed = address_hash(settings.secret_key, subscribe_request.address)
    if not await forms.signup_address_allowed(limiter, settings, hashed):
        field = "phone" if subscribe_request.channel == Channel.SMS else "email"
        errors = {field: forms.TOO_MANY_FOR_ADDRESS}
        return await _render_form(
            request, session, resources, topic, checked.values, errors, embed=embed, status_code=429
        )
    wording = consent_wording(
        subscribe_request.channel,
        topic.name,
        settings.program_name,
        settings.consent_wording_version,
    )
    # Its first query takes SQLite's write lock until the commit: concurrent sign-ups wait
    # their turn in the process rather than in SQLite's busy handler (p99 ~1 s at 50 clients).
    async with turns.turn():
        result = await service.subscribe(
            session, subscribe_request, hashed_address=hashed, wording=wording, ip=ip
        )
    # Stored first, then queued: if Redis failed in between, the subscription waits as
    # pending and signing up again queues its confirmation.
    if result.needs_confirmation:
        await enqueue_confirmation(queue, result.subscription_id, result.token_version)
    log.info(
        "sign-up",
        extra={
            "subscription_id": result.subscription_id,
            "topic": topic.slug,
            "channel": subscribe_request.channel.value,
            "outcome": result.outcome.value,
        },
    )
    context = {"topic": topic, "channel": subscribe_request.channel.value, "embed": embed}
    return render(request, "check.html", context)


@router.post("/topics/{slug}")
async def subscribe_on_topic_page(
    slug: str,
    request: Request,
    resources: ResourcesDep,
    session: SessionDep,
    limiter: RateLimiterDep,
    queue: QueueDep,
    turns: WriteTurnsDep,
) -> Response:
    return await _subscribe(
        request,
        slug,
        embed=False,
        resources=resources,
        session=session,
        limiter=limiter,
        queue=queue,
        turns=turns,
    )


@router.post("/embed/{slug}")
async def subscribe_in_embed(
    slug: str,
    request: Request,
    resources: ResourcesDep,
    session: SessionDep,
    limiter: RateLimiterDep,
    queue: QueueDep,
    turns: WriteTurnsDep,
) -> Response:
    return await _subscribe(
        request,
        slug,
        embed=True,
        resources=resources,
        session=session,
        limiter=limiter,
        queue=queue,
        turns=turns,
    )
