"""``/admin``: the operator status page, behind HTTP Basic with PUBWATCH_ADMIN_TOKEN.

Basic auth, not a token in the URL: URLs end up in proxy logs and browser history. Any user
name is accepted; the password must be the token. With no token configured the page is off.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from pubwatch_notify.api.deps import QueueDep, ResourcesDep, SessionDep
from pubwatch_notify.ops.admin_page import gather, render

router = APIRouter(tags=["admin"], include_in_schema=False)
basic = HTTPBasic(realm="PubWatch operators", auto_error=False)


def require_operator(
    resources: ResourcesDep,
    credentials: Annotated[HTTPBasicCredentials | None, Depends(basic)],
) -> None:
    token = resources.settings.admin_token
    if not token:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Not Found")
    given = credentials.password if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "operator token required",
            headers={"WWW-Authenticate": 'Basic realm="PubWatch operators"'},
        )


@router.get("/admin", response_class=HTMLResponse, dependencies=[Depends(require_operator)])
async def admin(resources: ResourcesDep, session: SessionDep, queue: QueueDep) -> HTMLResponse:
    page = await gather(session, queue, resources.topics)
    # The page names failure reasons and topic activity: never cache it anywhere.
    return HTMLResponse(render(page), headers={"Cache-Control": "no-store"})
