"""Names and deterministic ids of notify's own arq jobs (``handle_event`` is in shared)."""

from __future__ import annotations

import hashlib
from datetime import datetime

SEND_EVENT_PAGE_JOB = "send_event_page"
SEND_TO_SUBSCRIPTIONS_JOB = "send_to_subscriptions"
SEND_DIGESTS_JOB = "send_digests"


def event_page_job_id(event_pk: int, after_subscription_id: int, event_key: str = "") -> str:
    """``event_key`` (the event's source and id) keeps the id unique even where a primary
    key comes round again (a database recreated next to a Redis that remembers old jobs):
    a clash would make the enqueue a no-op and leave the page to the sweeper."""
    digest = hashlib.sha256(event_key.encode()).hexdigest()[:16] if event_key else ""
    return f"send:{event_pk}:{digest}:{after_subscription_id}"


def held_job_id(subscription_id: int, not_before: datetime) -> str:
    return f"held:{subscription_id}:{int(not_before.timestamp())}"


def sweep_job_id(run: str, first_subscription_id: int) -> str:
    """``run`` names one sweep (its minute, or a worker's start)."""
    return f"sweep:{run}:{first_subscription_id}"


def unfanned_event_job_id(run: str, event_pk: int) -> str:
    return f"refanout:{run}:{event_pk}"


def digest_job_id(minute: datetime, first_subscription_id: int) -> str:
    return f"digest:{minute:%Y%m%dT%H%M}:{first_subscription_id}"
