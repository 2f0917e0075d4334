"""``/metrics``: Prometheus text, from the database and Redis (see :mod:`pubwatch_notify.ops`)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from pubwatch_notify.api.deps import QueueDep, SessionDep
from pubwatch_notify.ops.metrics import CONTENT_TYPE, render, take_snapshot

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response)
async def metrics(session: SessionDep, queue: QueueDep) -> Response:
    snapshot = await take_snapshot(session, queue)
    return Response(render(snapshot), media_type=CONTENT_TYPE)
