"""When a daily or weekly subscriber's next digest is due, in their own time zone."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from pubwatch_notify.store.models import Frequency

DIGEST_LOCAL_TIME = time(8, 0)  # morning, inside any quiet-hours window
WEEKLY_DIGEST_WEEKDAY = 0  # Monday


def next_digest_at(frequency: str, timezone: str, now: datetime) -> datetime | None:
    """The first digest time after ``now`` (UTC), or None for immediate subscribers."""
    if frequency == Frequency.IMMEDIATE:
        return None
    zone = ZoneInfo(timezone)
    local_now = now.astimezone(zone)
    candidate = datetime.combine(local_now.date(), DIGEST_LOCAL_TIME, tzinfo=zone)
    if candidate <= local_now:
        candidate += timedelta(days=1)
    if frequency == Frequency.WEEKLY:
        days_ahead = (WEEKLY_DIGEST_WEEKDAY - candidate.weekday()) % 7
        candidate += timedelta(days=days_ahead)
    # Re-attaching the zone after date arithmetic gives the right offset across DST changes.
    candidate = datetime.combine(candidate.date(), DIGEST_LOCAL_TIME, tzinfo=zone)
    return candidate.astimezone(UTC)
