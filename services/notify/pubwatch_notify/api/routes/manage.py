"""Pages reached by signed links in messages: confirm, preferences, unsubscribe.

The token in the path says which subscription and for what; a bad, expired or superseded
token gets a friendly page. ``POST /unsubscribe/{token}`` is also the RFC 8058 one-click
endpoint: no cookies, no CSRF field, no redirect, always 200 for a valid token.

The preferences page also switches a subscription to the other channel: that asks the new
address for its own confirmation, and the old subscription keeps running until the new one
is confirmed (see :func:`service.request_channel_switch`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Annotated, Any

from arq import ArqRedis
from fastapi import APIRouter, Depends, Request, Response
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData

from pubwatch_notify.api import forms
from pubwatch_notify.api.deps import (
    QueueDep,
    RateLimiterDep,
    Resources,
    ResourcesDep,
    SessionDep,
    client_ip,
    render,
    render_message,
)
from pubwatch_notify.api.security import RateLimiter
from pubwatch_notify.store.models import Channel, Frequency, Subscription, SubscriptionStatus
from pubwatch_notify.subscriptions import service
from pubwatch_notify.subscriptions.addresses import address_hash, mask_address
from pubwatch_notify.subscriptions.choices import (
    CHANNEL_LABELS,
    COMMON_TIMEZONES,
    FREQUENCY_LABELS,
    THRESHOLD_LABELS,
    canonical_timezone,
    threshold_words,
)
from pubwatch_notify.subscriptions.confirmation import enqueue_confirmation
from pubwatch_notify.subscriptions.form import (
    SWITCH_FIELDS,
    SwitchFormResult,
    check_switch_form,
    first_text,
)
from pubwatch_notify.subscriptions.wording import Wording, consent_wording, sms_disclosure
from pubwatch_notify.tokens import Purpose, TokenError
from pubwatch_shared.events import EvidenceLevel

log = logging.getLogger("pubwatch.notify.manage")


class _BadLink(Exception):
    """Raised while resolving a route's link: the page to send instead of the route's own."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class _LinkRoute(APIRoute):
    """A route that answers with a :class:`_BadLink`'s page."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except _BadLink as exc:
                return exc.response

        return route_handler


router = APIRouter(tags=["pages"], include_in_schema=False, route_class=_LinkRoute)

ONE_CLICK_FIELD = "List-Unsubscribe"
ONE_CLICK_VALUE = "One-Click"
SWITCH_ACTION = "switch-channel"
MAX_TOKEN_CHARS = 400


def _link_problem(request: Request, exc: TokenError) -> Response:
    if exc.expired:
        return render(request, "link_problem.html", {"expired": True}, status_code=410)
    return render(request, "link_problem.html", {"expired": False}, status_code=404)


def _linked(purpose: Purpose, *, active_only: bool = False) -> Any:
    """A dependency: the subscription that the path's ``{token}`` names for ``purpose``.
    A bad, expired or superseded token raises :class:`_BadLink` with the page that says so
    (with ``active_only``, so does a subscription that has ended)."""

    async def lookup(
        token: str, request: Request, resources: ResourcesDep, session: SessionDep
    ) -> Subscription:
        if len(token) > MAX_TOKEN_CHARS:
            raise _BadLink(_link_problem(request, TokenError("too long")))
        try:
            found = await service.subscription_for_token(session, resources.signer, purpose, token)
        except TokenError as exc:
            raise _BadLink(_link_problem(request, exc)) from None
        if active_only and found.status not in service.ACTIVE:
            raise _BadLink(_ended(request, resources, found))
        return found

    return Depends(lookup)


def _describe(resources: Resources, subscription: Subscription) -> dict[str, Any]:
    topic = resources.topics.get(subscription.topic)
    links = resources.links
    return {
        "subscription": subscription,
        "topic_name": topic.name if topic else subscription.topic,
        "topic_slug": subscription.topic,
        "masked_address": mask_address(subscription.address),
        "channel_label": _label(CHANNEL_LABELS, subscription.channel),
        "frequency_label": _label(FREQUENCY_LABELS, subscription.frequency),
        "threshold_label": threshold_words(subscription.min_level),
        "preferences_url": links.preferences(subscription.id, subscription.token_version),
        "unsubscribe_url": links.unsubscribe(subscription.id, subscription.token_version),
        "active": subscription.status in service.ACTIVE,
    }


def _label(labels: Mapping[Any, str], value: str) -> str:
    return labels.get(value, value)


def _ended(request: Request, resources: Resources, subscription: Subscription) -> Response:
    return render(request, "ended.html", _describe(resources, subscription))


# The subscription a route's link names (see _linked).
ConfirmLink = Annotated[Subscription, _linked(Purpose.CONFIRM)]
PreferencesLink = Annotated[Subscription, _linked(Purpose.PREFERENCES, active_only=True)]
UnsubscribeLink = Annotated[Subscription, _linked(Purpose.UNSUBSCRIBE)]

# --- confirm -------------------------------------------------------------------------------


@router.get("/confirm/{token}")
async def confirm_page(request: Request, resources: ResourcesDep, found: ConfirmLink) -> Response:
    # A page with a button, not a confirmation on GET: mail scanners open links in
    # messages, and their visit must not count as the person's consent.
    if found.status == SubscriptionStatus.CONFIRMED:
        return render(request, "confirmed.html", {**_describe(resources, found), "already": True})
    if found.status != SubscriptionStatus.PENDING:
        return _ended(request, resources, found)
    return render(request, "confirm.html", _describe(resources, found))


@router.post("/confirm/{token}")
async def confirm_submit(
    request: Request, resources: ResourcesDep, session: SessionDep, found: ConfirmLink
) -> Response:
    form = await forms.read_form(request)
    if form is None or not forms.csrf_ok(request, resources, form):
        context = {**_describe(resources, found), "form_error": "Please press the button again."}
        return render(request, "confirm.html", context, status_code=403)
    if found.status == SubscriptionStatus.CONFIRMED:
        return render(request, "confirmed.html", {**_describe(resources, found), "already": True})
    if not await service.confirm(session, found, ip=client_ip(request)):
        return _ended(request, resources, found)
    log.info("subscription confirmed", extra={"subscription_id": found.id})
    return render(request, "confirmed.html", {**_describe(resources, found), "already": False})


# --- preferences ---------------------------------------------------------------------------


def _preferences_context(
    resources: Resources,
    subscription: Subscription,
    values: dict[str, str],
    errors: dict[str, str],
    saved: bool = False,
    switch_requested: bool = False,
) -> dict[str, Any]:
    thresholds = dict(THRESHOLD_LABELS.items())
    try:
        current = EvidenceLevel(subscription.min_level)
    except ValueError:
        current = None
    if current is not None and current not in thresholds:
        # Set through another route (the API): keep it choosable rather than silently change it.
        thresholds[current] = threshold_words(current)
    settings = resources.settings
    described = _describe(resources, subscription)
    switch_channel = service.other_channel(subscription.channel)
    return {
        **described,
        # The switch form's fields start empty; what the person typed is kept on errors.
        "values": {**dict.fromkeys(SWITCH_FIELDS, ""), **values},
        "errors": errors,
        "saved": saved,
        "frequency_labels": FREQUENCY_LABELS,
        "threshold_labels": thresholds,
        "common_timezones": COMMON_TIMEZONES,
        "switch_channel": switch_channel.value,
        "switch_channel_label": _label(CHANNEL_LABELS, switch_channel),
        "switch_wording": _switch_wording(resources, subscription, switch_channel),
        "sms_disclosure": sms_disclosure(settings.program_name),
        "switch_requested": switch_requested,
    }


def _switch_wording(resources: Resources, subscription: Subscription, channel: Channel) -> Wording:
    settings = resources.settings
    topic = resources.topics.get(subscription.topic)
    return consent_wording(
        channel,
        topic.name if topic else subscription.topic,
        settings.program_name,
        settings.consent_wording_version,
    )


def _current_values(subscription: Subscription) -> dict[str, str]:
    return {
        "frequency": subscription.frequency,
        "min_level": subscription.min_level,
        "timezone": subscription.timezone,
    }


@router.get("/preferences/{token}")
async def preferences_page(
    request: Request, resources: ResourcesDep, found: PreferencesLink
) -> Response:
    context = _preferences_context(resources, found, _current_values(found), {})
    return render(request, "preferences.html", context)


@router.post("/preferences/{token}")
async def preferences_submit(
    request: Request,
    resources: ResourcesDep,
    session: SessionDep,
    limiter: RateLimiterDep,
    queue: QueueDep,
    found: PreferencesLink,
) -> Response:
    form = await forms.read_form(request)
    if form is None:
        return render_message(request, "Something went wrong", "Please try again.", 400)
    action = first_text(form, "action")
    if action == SWITCH_ACTION:
        return await _switch_channel(request, found, form, resources, session, limiter, queue)
    values = {
        name: first_text(form, name).strip() for name in ("frequency", "min_level", "timezone")
    }
    if action in ("unsubscribe-topic", "unsubscribe-all"):
        # The stop buttons have a form of their own, without the choices.
        values = _current_values(found)
    if not forms.csrf_ok(request, resources, form):
        errors = {"form": "This page had expired. Check your choices and save again."}
        context = _preferences_context(resources, found, values, errors)
        return render(request, "preferences.html", context, status_code=403)
    if action in ("unsubscribe-topic", "unsubscribe-all"):
        every_topic = action == "unsubscribe-all"
        count = await service.unsubscribe(
            session, found, every_topic=every_topic, source="web", ip=client_ip(request)
        )
        log.info("unsubscribed", extra={"subscription_id": found.id, "count": count})
        context = {**_describe(resources, found), "every_topic": every_topic}
        return render(request, "unsubscribed.html", context)
    errors = _check_preferences(
        values,
        allowed_levels=_preferences_context(resources, found, values, {})["threshold_labels"],
    )
    if errors:
        context = _preferences_context(resources, found, values, errors)
        return render(request, "preferences.html", context, status_code=422)
    timezone = canonical_timezone(values["timezone"]) or found.timezone
    await service.update_preferences(
        session,
        found,
        frequency=values["frequency"],
        min_level=values["min_level"],
        timezone=timezone,
    )
    context = _preferences_context(resources, found, _current_values(found), {}, saved=True)
    return render(request, "preferences.html", context)


async def _switch_channel(
    request: Request,
    found: Subscription,
    form: FormData,
    resources: Resources,
    session: AsyncSession,
    limiter: RateLimiter,
    queue: ArqRedis,
) -> Response:
    """Ask to get this topic's updates on the other channel instead.

    Checked like a sign-up (the new address, the consent box, CSRF, the per-IP and
    per-address limits); nothing is stored unless all is right. The current subscription
    keeps running: it ends when the new address confirms.
    """
    settings = resources.settings
    channel = service.other_channel(found.channel)
    address_field = "email" if channel == Channel.EMAIL else "phone"
    current = _current_values(found)

    def again(checked: SwitchFormResult, status_code: int) -> Response:
        values = {**current, **checked.values}
        context = _preferences_context(resources, found, values, checked.errors)
        return render(request, "preferences.html", context, status_code=status_code)

    typed = SwitchFormResult(values={name: first_text(form, name) for name in SWITCH_FIELDS})
    if not forms.csrf_ok(request, resources, form):
        typed.errors["switch"] = "This page had expired. Check the details and send them again."
        return again(typed, 403)
    ip = client_ip(request)
    if not await forms.signup_ip_allowed(limiter, settings, ip):
        typed.errors["switch"] = forms.TOO_MANY_FROM_NETWORK
        return again(typed, 429)
    checked = await forms.run_check(
        settings, check_switch_form, form, channel, forms.form_rules(settings)
    )
    if checked.address is None:
        return again(checked, 422)
    hashed = address_hash(settings.secret_key, checked.address)
    if not await forms.signup_address_allowed(limiter, settings, hashed):
        checked.errors[address_field] = forms.TOO_MANY_FOR_ADDRESS
        return again(checked, 429)
    try:
        result = await service.request_channel_switch(
            session,
            found,
            address=checked.address,
            hashed_address=hashed,
            wording=_switch_wording(resources, found, channel),
            ip=ip,
        )
    except ValueError:
        # Choices stored through another route that a sign-up could not have made.
        await session.rollback()
        await session.refresh(found)
        checked.errors["switch"] = (
            "We couldn't switch this subscription. Save your choices first, then try again."
        )
        return again(checked, 422)
    # The service may have rolled back (an address already confirmed): read it again.
    await session.refresh(found)
    # Stored first, then queued, as for a sign-up: if Redis failed in between, the new
    # subscription waits as pending and asking again queues its confirmation.
    if result.needs_confirmation:
        await enqueue_confirmation(queue, result.subscription_id, result.token_version)
    log.info(
        "channel switch requested",
        extra={
            "subscription_id": found.id,
            "new_subscription_id": result.subscription_id,
            "channel": channel.value,
            "outcome": result.outcome.value,
        },
    )
    # The same page whatever happened, so it reveals nothing about who is subscribed.
    context = _preferences_context(resources, found, current, {}, switch_requested=True)
    return render(request, "preferences.html", context)


def _check_preferences(
    values: dict[str, str], allowed_levels: dict[EvidenceLevel, str]
) -> dict[str, str]:
    errors: dict[str, str] = {}
    if values["frequency"] not in {frequency.value for frequency in Frequency}:
        errors["frequency"] = "Choose how often you want to hear from us."
    if values["min_level"] not in {level.value for level in allowed_levels}:
        errors["min_level"] = "Choose which studies you want to hear about."
    if canonical_timezone(values["timezone"]) is None:
        errors["timezone"] = (
            "We don't know this time zone. Use a name like America/Chicago or Europe/London."
        )
    return errors


# --- unsubscribe ---------------------------------------------------------------------------


@router.get("/unsubscribe/{token}")
async def unsubscribe_page(
    request: Request, resources: ResourcesDep, found: UnsubscribeLink
) -> Response:
    if found.status not in service.ACTIVE:
        context = {**_describe(resources, found), "every_topic": False}
        return render(request, "unsubscribed.html", context)
    return render(request, "unsubscribe.html", _describe(resources, found))


@router.post("/unsubscribe/{token}")
async def unsubscribe_submit(
    request: Request, resources: ResourcesDep, session: SessionDep, found: UnsubscribeLink
) -> Response:
    """The page's button and RFC 8058 one-click both land here. No CSRF check: the token is
    the authorization, exactly as for one-click, and refusing someone who wants to leave
    would be worse than anything a forged request could do with a token it cannot have."""
    form = await forms.read_form(request)
    one_click = form is not None and first_text(form, ONE_CLICK_FIELD) == ONE_CLICK_VALUE
    count = await service.unsubscribe(
        session,
        found,
        every_topic=False,
        source="one-click" if one_click else "web",
        ip=client_ip(request),
    )
    log.info(
        "unsubscribed",
        extra={"subscription_id": found.id, "count": count, "one_click": one_click},
    )
    context = {**_describe(resources, found), "every_topic": False}
    return render(request, "unsubscribed.html", context, with_csrf=False)
