"""``/outbox``: the messages the outbox channel stored (dev mode only).

When SMTP or Twilio is not configured, messages go to files under ``var/outbox``; this page
shows them as subscribers would have received them.
"""

from __future__ import annotations

import email
import email.policy
import json
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage

from fastapi import APIRouter, HTTPException, Request, Response

from pubwatch_notify.api.deps import ResourcesDep, render
from pubwatch_notify.channels.outbox import OutboxEntry, list_outbox

router = APIRouter(tags=["outbox"])


@dataclass(frozen=True)
class ShownMessage:
    kind: str
    stored_at: datetime
    to: str
    subject: str | None
    text: str


def _show(entry: OutboxEntry) -> ShownMessage:
    data = entry.path.read_bytes()
    if entry.kind == "sms":
        record = json.loads(data)
        return ShownMessage("sms", entry.stored_at, record["to"], None, record["body"])
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    body = parsed.get_body(preferencelist=("plain",))
    text = body.get_content() if body is not None else ""
    return ShownMessage("email", entry.stored_at, str(parsed["To"]), str(parsed["Subject"]), text)


@router.get("/outbox", name="outbox")
async def outbox_page(request: Request, resources: ResourcesDep) -> Response:
    settings = resources.settings
    if not settings.dev_mode:
        raise HTTPException(status_code=404)
    messages = [_show(entry) for entry in list_outbox(settings.resolved_outbox_dir)]
    return render(
        request,
        "outbox.html",
        {"messages": messages, "outbox_dir": settings.resolved_outbox_dir},
    )
