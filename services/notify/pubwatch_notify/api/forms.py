"""What the routes that take a posted form share: reading the form, the CSRF check, the
sign-up limits (per network and per address) and running a form check that may block."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import ParamSpec, TypeVar

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from pubwatch_notify.api.deps import Resources
from pubwatch_notify.api.security import CSRF_FIELD, RateLimiter
from pubwatch_notify.settings import NotifySettings
from pubwatch_notify.subscriptions.form import FormRules, first_text

P = ParamSpec("P")
T = TypeVar("T")

TOO_MANY_FROM_NETWORK = (
    "There have been too many sign-ups from your network in the last hour. Please try again later."
)
TOO_MANY_FOR_ADDRESS = "There have been too many sign-ups for this address. Try again in an hour."


async def read_form(request: Request) -> FormData | None:
    """The posted form, or None when the body cannot be read as one."""
    try:
        return await request.form()
    except (HTTPException, MultiPartException, UnicodeDecodeError, ValueError):
        return None


def csrf_ok(request: Request, resources: Resources, form: Mapping[str, object]) -> bool:
    """Whether the form's CSRF field matches this request."""
    return resources.csrf.verify(request, first_text(form, CSRF_FIELD))


async def signup_ip_allowed(limiter: RateLimiter, settings: NotifySettings, ip: str | None) -> bool:
    """Counts a sign-up from ``ip`` against the per-network limit."""
    return await limiter.allow("signup-ip", ip or "unknown", settings.signup_limit_per_ip)


async def signup_address_allowed(
    limiter: RateLimiter, settings: NotifySettings, hashed: str
) -> bool:
    """Counts a sign-up for the address hashed as ``hashed`` against the per-address limit."""
    return await limiter.allow("signup-address", hashed, settings.signup_limit_per_address)


def form_rules(settings: NotifySettings) -> FormRules:
    return FormRules(settings.phone_default_region, settings.check_email_deliverability)


async def run_check(
    settings: NotifySettings, check: Callable[P, T], *args: P.args, **kwargs: P.kwargs
) -> T:
    """``check(*args, **kwargs)``, in a thread when it may block on DNS (deliverability)."""
    if settings.check_email_deliverability:
        return await run_in_threadpool(check, *args, **kwargs)
    return check(*args, **kwargs)
