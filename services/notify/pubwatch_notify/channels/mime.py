"""One email as it goes on the wire (RFC 5322, CRLF line endings), shared by the SMTP
channel and the outbox, so the outbox shows exactly what SMTP would send."""

from __future__ import annotations

import email.policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from pubwatch_notify.channels.base import OutgoingEmail


def build_mime(message: OutgoingEmail, sender: str) -> EmailMessage:
    mime = EmailMessage(policy=email.policy.SMTP)
    mime["From"] = sender
    mime["To"] = message.to
    mime["Subject"] = message.subject
    for name, value in message.headers.items():
        mime[name] = value
    if "Date" not in mime:
        from datetime import UTC, datetime

        mime["Date"] = format_datetime(datetime.now(UTC))
    if "Message-ID" not in mime:
        mime["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2].strip(">") or None)
    mime.set_content(message.text, cte="quoted-printable")
    if message.html is not None:
        mime.add_alternative(message.html, subtype="html", cte="quoted-printable")
    return mime
