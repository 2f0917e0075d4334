"""Email messages: a subject that says what changed, text + HTML bodies, list headers.

The headers make the message behave as bulk mail should (RFC 2369, RFC 8058): ``List-Id``,
``List-Unsubscribe`` with an HTTPS one-click URL and a mailto, ``List-Unsubscribe-Post``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.utils import format_datetime, parseaddr
from urllib.parse import quote

from markupsafe import escape

from pubwatch_notify.channels.base import OutgoingEmail
from pubwatch_notify.channels.mime import WireTemplate, build_template
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


@functools.lru_cache(maxsize=16)
def sender_address(email_from: str) -> str:
    return parseaddr(email_from)[1]


def sender_domain(email_from: str) -> str:
    address = sender_address(email_from)
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


@functools.lru_cache(maxsize=64)
def _list_id_for(topic_slug: str, topic_name: str, domain: str) -> str:
    list_address = Address(addr_spec=f"{topic_slug}.alerts@{domain}")
    return f"PubWatch {topic_name} <{list_address.addr_spec.replace('@', '.')}>"


def _list_id(content: MessageContent, domain: str) -> str:
    return _list_id_for(content.topic_slug, content.topic_name, domain)


def email_template(
    content: MessageContent, bodies: RenderedBodies, email_from: str
) -> WireTemplate:
    """The wire form of every subscriber's copy of this content, with their address,
    Message-ID, Date and links left as slots (headers in ``render_email``'s order)."""
    domain = sender_domain(email_from)
    return build_template(
        email_from,
        bodies.subject,
        [
            ("Message-ID", None),
            ("Date", None),
            ("List-Id", _list_id(content, domain)),
            ("List-Unsubscribe", None),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
            ("Auto-Submitted", "auto-generated"),
        ],
        [("plain", bodies.text), ("html", bodies.html)],
        [_UNSUBSCRIBE_MARK, _PREFERENCES_MARK],
    )


def render_email(
    content: MessageContent,
    recipient: EmailRecipient,
    *,
    links: Links,
    email_from: str,
    message_key: str,
    now: datetime,
    bodies: RenderedBodies | None = None,
    template: WireTemplate | None = None,
) -> OutgoingEmail:
    """One subscriber's message. ``bodies``: ``render_bodies(content, links)`` made once
    for every subscriber getting the same content; only their links are filled in here.
    ``template``: ``email_template(content, bodies, email_from)``, also made once: the
    message then carries its wire bytes, filled in without the email package."""
    if bodies is None:
        bodies = render_bodies(content, links)
    domain = sender_domain(email_from)
    unsubscribe_url = links.unsubscribe(recipient.subscription_id, recipient.token_version)
    preferences_url = links.preferences(recipient.subscription_id, recipient.token_version)
    token = unsubscribe_url.rsplit("/", 1)[1]
    mailto = f"mailto:{sender_address(email_from)}?subject={quote('unsubscribe ' + token)}"
    unsubscribe_html = str(escape(unsubscribe_url))
    preferences_html = str(escape(preferences_url))
    text = bodies.text.replace(_UNSUBSCRIBE_MARK, unsubscribe_url).replace(
        _PREFERENCES_MARK, preferences_url
    )
    html = bodies.html.replace(_UNSUBSCRIBE_MARK, unsubscribe_html).replace(
        _PREFERENCES_MARK, preferences_html
    )
    headers = {
        "Message-ID": f"<{message_key}@{domain}>",
        "Date": format_datetime(now),
        "List-Id": _list_id(content, domain),
        "List-Unsubscribe": f"<{unsubscribe_url}>, <{mailto}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "Auto-Submitted": "auto-generated",
    }
    raw = None
    if template is not None:
        raw = template.fill(
            {**headers, "To": recipient.address},
            [
                {_UNSUBSCRIBE_MARK: unsubscribe_url, _PREFERENCES_MARK: preferences_url},
                {_UNSUBSCRIBE_MARK: unsubscribe_html, _PREFERENCES_MARK: preferences_html},
            ],
        )
    return OutgoingEmail(
        to=recipient.address,
        subject=bodies.subject,
        text=text,
        html=html,
        headers=headers,
        raw=raw,
    )
