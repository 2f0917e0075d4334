"""Notify's tables. Alembic migrations under ``pubwatch_notify/migrations`` create them.

Times are stored as UTC. Addresses (email or E.164 number) are stored once, in
``subscriptions.address``; everything that must outlive a deletion request (the consent log)
keeps only ``address_hash``, an HMAC of the normalized address.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeEngine


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on SQLite too (which stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime written to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigId: TypeEngine[int] = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime()}


class Channel(enum.StrEnum):
    EMAIL = "email"
    SMS = "sms"


class SubscriptionStatus(enum.StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    INVALID = "invalid"


class Frequency(enum.StrEnum):
    IMMEDIATE = "immediate"
    DAILY = "daily"
    WEEKLY = "weekly"


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # waits for the subscriber's digest
    QUEUED = "queued"  # a send job will pick it up
    SENDING = "sending"  # claimed by a send job; may be in flight
    SENT = "sent"  # the SMTP server or Twilio accepted it
    DELIVERED = "delivered"  # Twilio's status callback confirmed the handset got it
    FAILED = "failed"  # permanent failure, reason in last_error
    SKIPPED = "skipped"  # nothing to send after all (subscriber left, below threshold ...)


class Subscription(Base):
    __tablename__ = "subscriptions"
    __table_args__ = (
        UniqueConstraint("topic", "channel", "address_hash", name="uq_subscription_address"),
        Index("ix_subscriptions_fanout", "topic", "status", "id"),
        Index("ix_subscriptions_next_digest", "status", "next_digest_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(100))
    channel: Mapped[str] = mapped_column(String(10))
    address: Mapped[str] = mapped_column(String(320))
    address_hash: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(20), default=SubscriptionStatus.PENDING)
    frequency: Mapped[str] = mapped_column(String(20), default=Frequency.IMMEDIATE)
    min_level: Mapped[str] = mapped_column(String(30), default="other")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    # Bumped on every state change a token must not survive (unsubscribe, re-subscribe):
    # a link signed for an older version is refused.
    token_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(default=None)
    confirmation_sent_at: Mapped[datetime | None] = mapped_column(default=None)
    ended_at: Mapped[datetime | None] = mapped_column(default=None)
    end_reason: Mapped[str | None] = mapped_column(String(200), default=None)
    next_digest_at: Mapped[datetime | None] = mapped_column(default=None)
    last_digest_at: Mapped[datetime | None] = mapped_column(default=None)
    # Set on a pending subscription made by a channel switch on the preferences page: the
    # subscription it takes over from, which ends only once this one is confirmed.
    replaces_subscription_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscriptions.id", ondelete="SET NULL"), default=None, index=True
    )

    deliveries: Mapped[list[Delivery]] = relationship(back_populates="subscription")


class ConsentRecord(Base):
    """Append-only proof of consent: rows are inserted, never updated or deleted.

    After a deletion request the row keeps only the address hash and dates
    (``subscription_id`` is set to NULL by the foreign key).
    """

    __tablename__ = "consent_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    subscription_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscriptions.id", ondelete="SET NULL"), default=None, index=True
    )
    address_hash: Mapped[str] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(30))  # subscribe, confirm, unsubscribe, ...
    channel: Mapped[str] = mapped_column(String(10))
    topic: Mapped[str] = mapped_column(String(100))
    wording_version: Mapped[str] = mapped_column(String(40))
    wording: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(40))  # web, embed, sms, email-link, one-click
    ip: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class StoredEvent(Base):
    """Every change event notify accepted; (source, event_id) is the idempotency key."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("source", "event_id", name="uq_event_source_id"),
        Index("ix_events_topic_time", "topic", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(100))
    type: Mapped[str] = mapped_column(String(40))
    topic: Mapped[str] = mapped_column(String(100))
    occurred_at: Mapped[datetime]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    strongest_level: Mapped[str] = mapped_column(String(30))
    payload: Mapped[dict[str, object]] = mapped_column(JSON)
    # Set once fan-out has walked every matching subscription.
    fanned_out_at: Mapped[datetime | None] = mapped_column(default=None)
    # The API client that posted it (None for events from the queue).
    posted_by: Mapped[str | None] = mapped_column(String(100), default=None)

    items: Mapped[list[EventItemRow]] = relationship(
        back_populates="event", order_by="EventItemRow.position"
    )


class EventItemRow(Base):
    """The items of an event, one row each: topic pages list them, retractions find them."""

    __tablename__ = "event_items"
    __table_args__ = (
        UniqueConstraint("event_id", "position", name="uq_event_item_position"),
        Index("ix_event_items_pmid", "pmid"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(Text)
    url: Mapped[str] = mapped_column(String(2000))
    summary: Mapped[str] = mapped_column(Text)
    pmid: Mapped[str | None] = mapped_column(String(20), default=None)
    doi: Mapped[str | None] = mapped_column(String(300), default=None)
    journal: Mapped[str | None] = mapped_column(String(500), default=None)
    published: Mapped[str | None] = mapped_column(String(10), default=None)
    evidence_level: Mapped[str] = mapped_column(String(30))

    event: Mapped[StoredEvent] = relationship(back_populates="items")


class Delivery(Base):
    """One (subscription, event) pair: the unit of 'nothing lost, nothing doubled'."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("subscription_id", "event_id", name="uq_delivery_subscription_event"),
        Index("ix_deliveries_status", "status", "not_before"),
        Index("ix_deliveries_event", "event_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    subscription_id: Mapped[int] = mapped_column(
        ForeignKey("subscriptions.id", ondelete="CASCADE"), index=True
    )
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(20), default=DeliveryStatus.QUEUED)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    not_before: Mapped[datetime | None] = mapped_column(default=None)
    claimed_at: Mapped[datetime | None] = mapped_column(default=None)
    sent_at: Mapped[datetime | None] = mapped_column(default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    provider_id: Mapped[str | None] = mapped_column(String(100), default=None, index=True)
    last_error: Mapped[str | None] = mapped_column(String(500), default=None)
    # The message this delivery went out in (several deliveries share one for digests).
    message_key: Mapped[str | None] = mapped_column(String(100), default=None)
    # Positions of the event's items this delivery carries: those at or above the
    # subscriber's threshold at fan-out. Rendering and retraction matching read it.
    item_positions: Mapped[list[int]] = mapped_column(JSON, default=list)

    subscription: Mapped[Subscription] = relationship(back_populates="deliveries")
