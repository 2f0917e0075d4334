"""Rows for operations tests: an event, subscribers and deliveries written straight to the store."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from pubwatch_notify.store.models import Delivery, EventItemRow, StoredEvent, Subscription
from pubwatch_notify.subscriptions.addresses import address_hash

SECRET = "ops-test-secret-key-long-enough-to-be-real"
EMAIL = "patient.person@example.org"
PHONE = "+12015550123"


async def add_history(session: AsyncSession) -> dict[str, int]:
    """One event on topic ``alpha``; an email delivery sent, an SMS delivery failed."""
    now = datetime.now(UTC)
    event = StoredEvent(
        event_id="evt-1",
        source="pubmed",
        type="evidence.new",
        topic="alpha",
        occurred_at=now,
        strongest_level="rct",
        payload={},
    )
    event.items = [
        EventItemRow(
            position=0,
            title="A trial",
            url="https://pubmed.ncbi.nlm.nih.gov/1/",
            summary="s",
            pmid="1",
            evidence_level="rct",
        )
    ]
    email = Subscription(
        topic="alpha",
        channel="email",
        address=EMAIL,
        address_hash=address_hash(SECRET, EMAIL),
        status="confirmed",
    )
    sms = Subscription(
        topic="alpha",
        channel="sms",
        address=PHONE,
        address_hash=address_hash(SECRET, PHONE),
        status="confirmed",
    )
    session.add_all([event, email, sms])
    await session.flush()
    sent = Delivery(
        subscription_id=email.id, event_id=event.id, channel="email", status="sent", sent_at=now
    )
    failed = Delivery(
        subscription_id=sms.id,
        event_id=event.id,
        channel="sms",
        status="failed",
        attempts=3,
        last_error="Twilio 21211: invalid 'To' phone number",
    )
    session.add_all([sent, failed])
    await session.commit()
    return {"sent": sent.id, "failed": failed.id, "sms_subscription": sms.id}
