"""Liveness (``/healthz``) and readiness (``/readyz``: Redis, database, schema current)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from pubwatch_notify.api.deps import ResourcesDep
from pubwatch_notify.ops.stats import live_worker_counts
from pubwatch_notify.store.migrate import current_revision, head_revision

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(resources: ResourcesDep) -> JSONResponse:
    """Ready to take traffic: Redis answers, the database answers, migrations are current."""
    checks: dict[str, str] = {}
    try:
        if resources.queue is None:
            raise RuntimeError("not started")
        await resources.queue.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"unavailable: {type(exc).__name__}"
    try:
        if resources.engine is None:
            raise RuntimeError("not started")
        async with resources.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        revision = await current_revision(resources.engine)
        head = head_revision()
        checks["database"] = "ok"
        checks["migrations"] = "ok" if revision == head else f"at {revision}, head is {head}"
    except Exception as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
    ready = all(value == "ok" for value in checks.values()) and len(checks) == 3
    # Informational only: the API serves pages and takes events without a worker running,
    # and a worker restarting must not take the API out of a load balancer.
    workers: dict[str, int] | str
    try:
        workers = await live_worker_counts(resources.queue) if resources.queue else "unknown"
    except Exception as exc:
        workers = f"unavailable: {type(exc).__name__}"
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks, "workers": workers},
        status_code=200 if ready else 503,
    )
