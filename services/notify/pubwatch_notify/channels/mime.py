"""One email as it goes on the wire (RFC 5322, CRLF line endings), shared by the SMTP
channel and the outbox, so the outbox shows exactly what SMTP would send."""

from __future__ import annotations

import email.policy
import random
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email import quoprimime
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


# --- The fast path: one prepared template per content, filled per subscriber -------------
#
# Most of a fan-out's messages share everything but the recipient, the Message-ID, the Date
# and the subscriber's own links. ``WireTemplate`` is the message's wire form (the same
# headers and MIME structure ``build_mime`` makes) built once, with slots for those values;
# filling it is a handful of bytes joins. Links inside the quoted-printable bodies go in
# between soft line breaks (``=\r\n``, invisible once decoded), so the encoded static text
# around them never changes with their length.

_MAX_QP_LINE = 76
_SIMPLE_HEADER = re.compile(r"[\x20-\x7e]*")


@dataclass(frozen=True)
class WireTemplate:
    """``chunks[0] slot[0] chunks[1] slot[1] ... chunks[-1]``; a slot is a header name
    (its folded line goes there) or ``(part, mark)`` (a link in a body)."""

    chunks: tuple[bytes, ...]
    slots: tuple[str | tuple[int, str], ...]

    def fill(self, headers: Mapping[str, str], links: Sequence[Mapping[str, str]]) -> bytes | None:
        """The message's bytes, or None when a value needs the email package's care
        (non-ASCII, overlong): the caller then builds it the slow way."""
        out = [self.chunks[0]]
        for slot, chunk in zip(self.slots, self.chunks[1:], strict=True):
            if isinstance(slot, str):
                line = _header_line(slot, headers[slot])
                if line is None:
                    return None
                out.append(line)
            else:
                part, mark = slot
                value = links[part][mark]
                if not value.isascii():
                    return None
                out.append(_qp_inline(value))
            out.append(chunk)
        return b"".join(out)


def _header_line(name: str, value: str) -> bytes | None:
    """``Name: value`` CRLF for plain ASCII values, folded after commas (list headers)."""
    pieces = value.split(", ")
    lines = [f"{name}: {pieces[0]}"] + [f" {piece}" for piece in pieces[1:]]
    for line in lines:
        if len(line) > 998 or not _SIMPLE_HEADER.fullmatch(line):
            return None
    return (",\r\n".join(lines) + "\r\n").encode("ascii")


def _qp_inline(value: str) -> bytes:
    """An ASCII value quoted-printable encoded on lines of its own (soft breaks around)."""
    encoded = value.replace("=", "=3D")
    lines: list[str] = []
    while len(encoded) > _MAX_QP_LINE - 1:
        cut = _MAX_QP_LINE - 1
        # Never split an escape: back off to before a "=XX" that the cut would break.
        escape_at = encoded.rfind("=", cut - 2, cut)
        if escape_at != -1:
            cut = escape_at
        lines.append(encoded[:cut])
        encoded = encoded[cut:]
    lines.append(encoded)
    return ("=\r\n" + "=\r\n".join(lines) + "=\r\n").encode("ascii")


def _qp_body(body: str, marks: Sequence[str]) -> list[str | tuple[str]]:
    """The body's lines normalised as ``set_content`` does, quoted-printable encoded, split
    at each mark: encoded text (str) and marks (1-tuples) in order."""
    normal = "\n".join(body.splitlines()) + "\n"
    pattern = "(" + "|".join(re.escape(mark) for mark in marks) + ")" if marks else None
    pieces = re.split(pattern, normal) if pattern else [normal]
    out: list[str | tuple[str]] = []
    for index, piece in enumerate(pieces):
        if index % 2:
            out.append((piece,))
        else:
            latin = piece.encode("utf-8").decode("latin-1")
            out.append(quoprimime.body_encode(latin, _MAX_QP_LINE, "\r\n"))
    return out


def build_template(
    sender: str,
    subject: str,
    headers: Sequence[tuple[str, str | None]],
    bodies: Sequence[tuple[str, str]],
    marks: Sequence[str],
) -> WireTemplate:
    """The template of a message from ``sender`` with ``subject`` and ``headers`` in this
    order (a None value: a slot filled per message; ``To`` is always one), and the
    ``(subtype, text)`` bodies (one: text/plain; two: multipart/alternative) in which each
    of ``marks`` is a slot (``(part index, mark)``)."""
    policy = email.policy.SMTP
    chunks: list[bytes] = []
    slots: list[str | tuple[int, str]] = []
    current: list[bytes] = []

    def slot(name: str | tuple[int, str]) -> None:
        chunks.append(b"".join(current))
        current.clear()
        slots.append(name)

    current.append(policy.fold("From", sender).encode("ascii"))
    slot("To")
    current.append(policy.fold("Subject", subject).encode("ascii"))
    for name, value in headers:
        if value is None:
            slot(name)
        else:
            current.append(policy.fold(name, value).encode("ascii"))
    boundary = _boundary()

    def part_head(subtype: str) -> bytes:
        return (
            f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
            "Content-Transfer-Encoding: quoted-printable\r\n"
        ).encode("ascii")

    def part_body(index: int, text: str) -> None:
        for piece in _qp_body(text, marks):
            if isinstance(piece, tuple):
                slot((index, piece[0]))
            else:
                current.append(piece.encode("latin-1"))

    if len(bodies) == 1:
        subtype, text = bodies[0]
        current.append(part_head(subtype) + b"MIME-Version: 1.0\r\n\r\n")
        part_body(0, text)
    else:
        current.append(b"MIME-Version: 1.0\r\n")
        current.append(
            f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n\r\n'.encode()
        )
        for index, (subtype, text) in enumerate(bodies):
            current.append(f"--{boundary}\r\n".encode() + part_head(subtype))
            if index:
                current.append(b"MIME-Version: 1.0\r\n")
            current.append(b"\r\n")
            part_body(index, text)
            current.append(b"\r\n")
        current.append(f"--{boundary}--\r\n".encode())
    chunks.append(b"".join(current))
    return WireTemplate(tuple(chunks), tuple(slots))


def _boundary() -> str:
    # As the email package makes them; "==" never occurs in quoted-printable text.
    return "=" * 15 + str(random.randrange(sys.maxsize)) + "=="
