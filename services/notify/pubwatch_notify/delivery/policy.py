"""When an SMS may go out: never in the subscriber's quiet hours, at most N a week.

Both rules only ever *delay* a message (``not_before``); held items are merged into the
next message that goes out.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from pubwatch_notify.store.models import Channel, Delivery, DeliveryStatus

CAP_WINDOW = timedelta(days=7)


def _zone(timezone: str) -> ZoneInfo:
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def quiet_hours_end(
    now: datetime, timezone: str, start_hour: int, end_hour: int
) -> datetime | None:
    """When the quiet hours ``now`` falls in end (UTC), or None if ``now`` is not quiet."""
    zone = _zone(timezone)
    local = now.astimezone(zone)
    hour = local.hour
    quiet = (
        (hour >= start_hour or hour < end_hour)
        if start_hour > end_hour
        else (start_hour <= hour < end_hour)
    )
    if not quiet:
        return None
    end_day = local.date() if hour < end_hour else local.date() + timedelta(days=1)
    # Built from the wall-clock time, so a DST change overnight still gives 08:00 local.
    return datetime.combine(end_day, time(end_hour), tzinfo=zone).astimezone(now.tzinfo)


async def weekly_cap_release(
    session: AsyncSession, subscription_id: int, now: datetime, cap: int
) -> datetime | None:
    """When the subscriber may get another SMS, or None if they are under the cap now."""
    rows = (
        await session.execute(
            select(func.min(Delivery.sent_at))
            .where(
                Delivery.subscription_id == subscription_id,
                Delivery.channel == Channel.SMS.value,
                Delivery.status.in_((DeliveryStatus.SENT.value, DeliveryStatus.DELIVERED.value)),
                Delivery.sent_at > now - CAP_WINDOW,
            )
            .group_by(Delivery.message_key)
            .order_by(func.min(Delivery.sent_at))
        )
    ).all()
    sent_times = [row[0] for row in rows if row[0] is not None]
    if len(sent_times) < cap:
        return None
    # The window frees a place when the oldest message that keeps it full turns 7 days old.
    oldest_blocking: datetime = sent_times[len(sent_times) - cap]
    return oldest_blocking + CAP_WINDOW


async def weekly_cap_releases(
    session: AsyncSession, subscription_ids: Iterable[int], now: datetime, cap: int
) -> dict[int, datetime]:
    """``weekly_cap_release`` for many subscribers in one query, as of ``now``: only the
    subscribers at the cap are in the result. A release time that has passed by the time a
    message is about to go (the batch went on) means that subscriber is under the cap."""
    ids = sorted(set(subscription_ids))
    if not ids:
        return {}
    rows = await session.execute(
        select(Delivery.subscription_id, func.min(Delivery.sent_at))
        .where(
            Delivery.subscription_id.in_(ids),
            Delivery.channel == Channel.SMS.value,
            Delivery.status.in_((DeliveryStatus.SENT.value, DeliveryStatus.DELIVERED.value)),
            Delivery.sent_at > now - CAP_WINDOW,
        )
        .group_by(Delivery.subscription_id, Delivery.message_key)
    )
    sent_times: dict[int, list[datetime]] = {}
    for subscription_id, sent_at in rows:
        if sent_at is not None:
            sent_times.setdefault(subscription_id, []).append(sent_at)
    releases: dict[int, datetime] = {}
    for subscription_id, times in sent_times.items():
        if len(times) >= cap:
            times.sort()
            releases[subscription_id] = times[len(times) - cap] + CAP_WINDOW
    return releases
