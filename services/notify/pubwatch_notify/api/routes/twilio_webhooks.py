"""Twilio webhooks: inbound texts (keywords) and message status callbacks.

Both refuse (403) anything without a valid ``X-Twilio-Signature``, computed over the URL as
Twilio called it, i.e. under ``PUBWATCH_PUBLIC_URL`` (a proxy in front changes what the
app itself sees). Numbers are never logged.
"""

from __future__ import annotations

import logging
from xml.sax.saxutils import escape

from fastapi import APIRouter, HTTPException, Request, Response
from sqlalchemy import update
from twilio.request_validator import RequestValidator

from pubwatch_notify.api.deps import ResourcesDep, SessionDep
from pubwatch_notify.settings import NotifySettings
from pubwatch_notify.store.models import Delivery, DeliveryStatus, Subscription, SubscriptionStatus
from pubwatch_notify.subscriptions import service

log = logging.getLogger("pubwatch.notify.twilio")

router = APIRouter(prefix="/webhooks/twilio", tags=["twilio"])

OPT_OUT_WORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "END", "QUIT", "REVOKE", "OPTOUT", "CANCEL"}
)
OPT_IN_WORDS = frozenset({"START", "UNSTOP"})
CONFIRM_WORDS = frozenset({"YES"})
HELP_WORDS = frozenset({"HELP", "INFO"})
# Carrier error codes that mean the number will never take a text.
UNREACHABLE_FOR_GOOD = frozenset({30005, 30006})
TWIML_TYPE = "application/xml"


def _signed_url(settings: NotifySettings, request: Request) -> str:
    url = f"{settings.public_url}{request.url.path}"
    return f"{url}?{request.url.query}" if request.url.query else url


async def verified_params(request: Request, settings: NotifySettings) -> dict[str, str]:
    """The POSTed parameters, if Twilio signed them; 403 otherwise."""
    form = await request.form()
    params = {key: value for key, value in form.items() if isinstance(value, str)}
    signature = request.headers.get("X-Twilio-Signature", "")
    token = settings.twilio_auth_token
    if not token or not signature:
        raise HTTPException(status_code=403, detail="missing Twilio signature")
    if not RequestValidator(token).validate(_signed_url(settings, request), params, signature):
        raise HTTPException(status_code=403, detail="bad Twilio signature")
    return params


def twiml(reply: str | None) -> Response:
    body = f"<Message>{escape(reply)}</Message>" if reply else ""
    return Response(
        f'<?xml version="1.0" encoding="UTF-8"?><Response>{body}</Response>',
        media_type=TWIML_TYPE,
    )


def keyword(body: str) -> str:
    """Twilio's keywords are single words, in any case, perhaps with punctuation."""
    return body.strip().strip(".!").upper()


def help_text(settings: NotifySettings) -> str:
    return (
        f"{settings.program_name}: alerts on new medical evidence for the conditions you "
        f"follow. Msg & data rates may apply. Reply STOP to end. Help: {settings.public_url}"
    )


@router.post("/inbound")
async def inbound_message(
    request: Request, resources: ResourcesDep, session: SessionDep
) -> Response:
    settings = resources.settings
    params = await verified_params(request, settings)
    number = params.get("From", "")
    word = keyword(params.get("Body", ""))
    if word in OPT_OUT_WORDS:
        ended = await service.unsubscribe_by_sms_reply(session, number)
        log.info("sms opt-out received", extra={"subscriptions_ended": ended})
        return twiml(
            f"{settings.program_name}: you are unsubscribed and will get no more texts. "
            "Reply START to resubscribe."
        )
    if word in OPT_IN_WORDS:
        restored = await service.resubscribe_by_sms_reply(session, number)
        log.info("sms opt-in received", extra={"subscriptions_restored": restored})
        if restored:
            return twiml(
                f"{settings.program_name}: your alerts are back on. "
                "Reply STOP to end, HELP for help."
            )
        return twiml(help_text(settings))
    if word in CONFIRM_WORDS:
        confirmed = await service.confirm_by_sms_reply(session, number)
        log.info("sms confirmation received", extra={"confirmed": confirmed})
        if confirmed:
            return twiml(
                f"{settings.program_name}: you're subscribed. Msg & data rates may apply. "
                "Reply STOP to end, HELP for help."
            )
        return twiml(help_text(settings))
    if word in HELP_WORDS:
        return twiml(help_text(settings))
    return twiml(None)


@router.post("/status")
async def message_status(
    request: Request, resources: ResourcesDep, session: SessionDep
) -> Response:
    params = await verified_params(request, resources.settings)
    sid = params.get("MessageSid") or params.get("SmsSid") or ""
    status = params.get("MessageStatus") or params.get("SmsStatus") or ""
    error_code = params.get("ErrorCode") or None
    if not sid:
        return Response(status_code=204)
    received = (DeliveryStatus.SENT.value, DeliveryStatus.SENDING.value)
    if status == "delivered":
        await session.execute(
            update(Delivery)
            .where(Delivery.provider_id == sid, Delivery.status.in_(received))
            .values(status=DeliveryStatus.DELIVERED.value)
        )
    elif status in ("undelivered", "failed"):
        reason = f"Twilio status {status}" + (f", error {error_code}" if error_code else "")
        result = await session.execute(
            update(Delivery)
            .where(
                Delivery.provider_id == sid,
                Delivery.status.in_((*received, DeliveryStatus.DELIVERED.value)),
            )
            .values(status=DeliveryStatus.FAILED.value, last_error=reason)
            .returning(Delivery.subscription_id)
        )
        subscription_ids = sorted(set(result.scalars()))
        if error_code and error_code.isdigit() and int(error_code) in UNREACHABLE_FOR_GOOD:
            await session.execute(
                update(Subscription)
                .where(
                    Subscription.id.in_(subscription_ids),
                    Subscription.status == SubscriptionStatus.CONFIRMED.value,
                )
                .values(status=SubscriptionStatus.INVALID.value, end_reason=reason[:200])
            )
        log.info(
            "sms not delivered",
            extra={
                "subscription_ids": subscription_ids,
                "status": status,
                "error_code": error_code,
            },
        )
    await session.commit()
    return Response(status_code=204)
