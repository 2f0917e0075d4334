"""Email messages: a subject that says what changed, text + HTML bodies, list headers.

The headers make the message behave as bulk mail should (RFC 2369, RFC 8058): ``List-Id``,
``List-Unsubscribe`` with an HTTPS one-click URL and a mailto, ``List-Unsubscribe-Post``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.utils import format_datetime, parseaddr
from urllib.parse import quote

from markupsafe import escape

from pubwatch_notify.channels.base import OutgoingEmail
from pubwatch_notify.links import Links
from pubwatch_notify.messages.content import MessageContent
from pubwatch_notify.messages.levels import level_label
from pubwatch_notify.messages.templating import template_environment

DISCLAIMER = (
    "PubWatch shares educational information about new research. It is not medical advice: "
    "talk to your doctor before changing any treatment."
)


@dataclass(frozen=True)
class EmailRecipient:
    subscription_id: int
    token_version: int
    address: str


def sender_domain(email_from: str) -> str:
    address = parseaddr(email_from)[1]
    return address.rpartition("@")[2] or "pubwatch.localhost"


def email_subject(content: MessageContent) -> str:
    if content.new_items:
        subject = content.new_items_phrase()
        if content.digest:
            subject = f"Your {content.digest} PubWatch digest: {subject}"
        if content.corrections:
            subject += " (and a correction)"
        return subject
    if content.corrections:
        first = content.corrections[0]
        if len(content.corrections) == 1:
            return f"Correction: a study on {content.topic_name} we sent you {first.verb}"
        count = len(content.corrections)
        return f"Correction: {count} studies on {content.topic_name} we sent you changed"
    if len(content.notices) == 1:
        return f"Update on {content.topic_name}: {content.notices[0].title}"[:200]
    return f"{len(content.notices)} updates on {content.topic_name}"


# Stand-ins for the per-subscriber links while the bodies are rendered once per content:
# plain letters and hyphens, unchanged by HTML autoescaping and by the text template.
_UNSUBSCRIBE_MARK = "PUBWATCH-UNSUBSCRIBE-URL-MARK"
_PREFERENCES_MARK = "PUBWATCH-PREFERENCES-URL-MARK"


@dataclass(frozen=True)
class RenderedBodies:
    """A content's subject and bodies with the subscriber's links still to fill in."""

    subject: str
    text: str
    html: str


def render_bodies(content: MessageContent, links: Links) -> RenderedBodies:
    """Everything of a message that does not depend on who gets it (Jinja runs once)."""
    variables = {
        "content": content,
        "level_label": level_label,
        "unsubscribe_url": _UNSUBSCRIBE_MARK,
        "preferences_url": _PREFERENCES_MARK,
        "topic_url": links.topic(content.topic_slug),
        "disclaimer": DISCLAIMER,
    }
    environment = template_environment()
    text = environment.get_template("email/message.txt").render(variables)
    html = environment.get_template("email/message.html").render(variables)
    return RenderedBodies(email_subject(content), text, html)


def render_email(
    content: MessageContent,
    recipient: EmailRecipient,
    *,
    links: Links,
    email_from: str,
    message_key: str,
    now: datetime,
    bodies: RenderedBodies | None = None,
) -> OutgoingEmail:
    """One subscriber's message. ``bodies``: ``render_bodies(content, links)`` made once
    for every subscriber getting the same content; only their links are filled in here."""
    if bodies is None:
        bodies = render_bodies(content, links)
    domain = sender_domain(email_from)
    unsubscribe_url = links.unsubscribe(recipient.subscription_id, recipient.token_version)
    preferences_url = links.preferences(recipient.subscription_id, recipient.token_version)
    token = unsubscribe_url.rsplit("/", 1)[1]
    mailto = f"mailto:{parseaddr(email_from)[1]}?subject={quote('unsubscribe ' + token)}"
    text = bodies.text.replace(_UNSUBSCRIBE_MARK, unsubscribe_url).replace(
        _PREFERENCES_MARK, preferences_url
    )
    html = bodies.html.replace(_UNSUBSCRIBE_MARK, str(escape(unsubscribe_url))).replace(
        _PREFERENCES_MARK, str(escape(preferences_url))
    )
    list_address = Address(addr_spec=f"{content.topic_slug}.alerts@{domain}")
    headers = {
        "Message-ID": f"<{message_key}@{domain}>",
        "Date": format_datetime(now),
        "List-Id": f"PubWatch {content.topic_name} <{list_address.addr_spec.replace('@', '.')}>",
        "List-Unsubscribe": f"<{unsubscribe_url}>, <{mailto}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "Auto-Submitted": "auto-generated",
    }
    return OutgoingEmail(
        to=recipient.address, subject=bodies.subject, text=text, html=html, headers=headers
    )
