"""Claiming deliveries for sending, and recording what became of them.

A claim moves deliveries ``queued -> sending`` with a claim time, atomically: two jobs
never claim the same row. A claim older than the send-job timeout belongs to a job that died
(or was cancelled) with the message possibly in flight; it may be claimed again. Every state
change after a send attempt is committed right after that attempt.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, update
from sqlalchemy.ext.asyncio import AsyncSession

from pubwatch_notify.store.models import Delivery, DeliveryStatus

_ERROR_CHARS = 500


@dataclass(frozen=True)
class ClaimedDelivery:
    id: int
    subscription_id: int
    event_pk: int
    channel: str
    item_positions: tuple[int, ...]
    attempts: int


def _claimable(now: datetime, stale_before: datetime, source_status: DeliveryStatus) -> Any:
    return and_(
        or_(
            Delivery.status == source_status.value,
            and_(
                Delivery.status == DeliveryStatus.SENDING.value,
                Delivery.claimed_at < stale_before,
            ),
        ),
        or_(Delivery.not_before.is_(None), Delivery.not_before <= now),
    )


async def claim(
    session: AsyncSession,
    scope: Sequence[Any],
    now: datetime,
    stale_before: datetime,
    source_status: DeliveryStatus = DeliveryStatus.QUEUED,
) -> list[ClaimedDelivery]:
    """Claim the due deliveries matching ``scope`` (SQL conditions). The caller commits."""
    statement = (
        update(Delivery)
        .where(*scope, _claimable(now, stale_before, source_status))
        .values(status=DeliveryStatus.SENDING.value, claimed_at=now)
        .returning(
            Delivery.id,
            Delivery.subscription_id,
            Delivery.event_id,
            Delivery.channel,
            Delivery.item_positions,
            Delivery.attempts,
        )
        .execution_options(synchronize_session=False)
    )
    rows = (await session.execute(statement)).all()
    claimed = [
        ClaimedDelivery(row[0], row[1], row[2], row[3], tuple(row[4] or ()), row[5]) for row in rows
    ]
    claimed.sort(key=lambda delivery: (delivery.subscription_id, delivery.id))
    return claimed


async def _update(
    session: AsyncSession,
    ids: Iterable[int],
    _where: Any = None,
    **values: Any,
) -> None:
    id_list = list(ids)
    if id_list:
        conditions = [Delivery.id.in_(id_list)]
        if _where is not None:
            conditions.append(_where)
        await session.execute(
            update(Delivery)
            .where(*conditions)
            .values(**values)
            .execution_options(synchronize_session=False)
        )


async def release(
    session: AsyncSession,
    ids: Iterable[int],
    status: DeliveryStatus,
    reason: str | None = None,
    *,
    attempted: bool = False,
    not_before: datetime | None = None,
    only_claimed: bool = False,
) -> None:
    """Give claimed deliveries back (to ``queued`` or ``pending``) for a later try.

    ``only_claimed`` leaves alone any that is no longer ``sending`` (settled meanwhile)."""
    values: dict[str, Any] = {"status": status.value, "claimed_at": None}
    if reason is not None:
        values["last_error"] = reason[:_ERROR_CHARS]
    if attempted:
        values["attempts"] = Delivery.attempts + 1
    if not_before is not None:
        values["not_before"] = not_before
    if only_claimed:
        await _update(
            session, ids, _where=Delivery.status == DeliveryStatus.SENDING.value, **values
        )
    else:
        await _update(session, ids, **values)


async def mark_failed(session: AsyncSession, ids: Iterable[int], reason: str) -> None:
    await _update(
        session,
        ids,
        status=DeliveryStatus.FAILED.value,
        claimed_at=None,
        last_error=reason[:_ERROR_CHARS],
        attempts=Delivery.attempts + 1,
    )


async def mark_skipped(session: AsyncSession, ids: Iterable[int], reason: str) -> None:
    await _update(
        session,
        ids,
        status=DeliveryStatus.SKIPPED.value,
        claimed_at=None,
        last_error=reason[:_ERROR_CHARS],
    )
