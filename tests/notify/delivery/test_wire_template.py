"""The prepared wire template makes the same message as the email package would: same
headers, same decoded bodies, and it parses under the strict policy."""

from __future__ import annotations

import email
import email.policy

import pytest

from pubwatch_notify.channels.base import OutgoingEmail
from pubwatch_notify.channels.mime import build_mime, build_template

SENDER = "PubWatch <alerts@pubwatch.localhost>"
MARK = "PUBWATCH-UNSUBSCRIBE-URL-MARK"
LONG_WORD = "x" * 90
TEXT = (
    "New “blinded” trial — see below.\n"
    f"Unsubscribe: {MARK}\n"
    f"{MARK} at the start of a line, and trailing spaces   \n"
    f".a line starting with a dot and a long one {LONG_WORD} {'word ' * 30}\n"
    f"two marks {MARK}{MARK} = equals sign\n"
    "no newline at the end"
)
HTML = f'<p style="color: red">Bye — <a href="{MARK}">unsubscribe</a></p>'


@pytest.mark.parametrize(
    "url",
    [
        "https://pubwatch.example.org/unsubscribe/abc.def",
        "https://pubwatch.example.org/unsubscribe/" + "A=" * 60 + "B" * 70,
        "https://pubwatch.example.org/u/" + "=" * 80,
    ],
)
@pytest.mark.parametrize("with_html", [True, False])
def test_template_matches_the_email_package(url: str, with_html: bool) -> None:
    headers = {
        "Message-ID": "<pubwatch.1.2@pubwatch.localhost>",
        "Date": "Wed, 25 Nov 2026 13:40:45 +0000",
        "List-Id": "PubWatch Indolent systemic mastocytosis <ism.alerts.pubwatch.localhost>",
        "List-Unsubscribe": f"<{url}>, <mailto:alerts@pubwatch.localhost?subject=x%20y>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    subject = "2 new studies on Indolent systemic mastocytosis — incl. a randomized trial"
    bodies = [("plain", TEXT)] + ([("html", HTML)] if with_html else [])
    template = build_template(
        SENDER,
        subject,
        [
            (name, None if name in ("Message-ID", "Date", "List-Unsubscribe") else value)
            for name, value in headers.items()
        ],
        bodies,
        [MARK],
    )
    raw = template.fill(
        {**headers, "To": "someone@example.org"}, [{MARK: url}, {MARK: url.replace("&", "&amp;")}]
    )
    assert raw is not None
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert b"\n" not in raw.replace(b"\r\n", b"")

    expected = build_mime(
        OutgoingEmail(
            to="someone@example.org",
            subject=subject,
            text=TEXT.replace(MARK, url),
            html=HTML.replace(MARK, url) if with_html else None,
            headers=headers,
        ),
        SENDER,
    )
    ours = email.message_from_bytes(raw, policy=email.policy.strict)
    theirs = email.message_from_bytes(expected.as_bytes(), policy=email.policy.strict)
    boundary = str(ours.get_boundary())
    assert [(k, v.replace(boundary, "B")) for k, v in ours.items()] == [
        (k, v.replace(str(theirs.get_boundary()), "B")) for k, v in theirs.items()
    ]
    assert ours.get_content_type() == theirs.get_content_type()
    for kind in ("plain", "html") if with_html else ("plain",):
        our_part = ours.get_body(preferencelist=(kind,))
        their_part = theirs.get_body(preferencelist=(kind,))
        assert our_part is not None
        assert their_part is not None
        assert our_part.items() == their_part.items()
        assert our_part.get_content() == their_part.get_content()


def test_non_ascii_recipient_falls_back() -> None:
    template = build_template(SENDER, "s", [("Message-ID", None)], [("plain", "hi")], [])
    assert template.fill({"To": "jörg@example.org", "Message-ID": "<a@b>"}, [{}]) is None
