"""The one small interface every delivery channel implements, and its error tree.

::

    SendError                      anything a channel raises about one message
    ├── TransientSendError         try again later (SMTP 4xx, connection lost, Twilio 429/5xx)
    └── PermanentSendError         never retry; ``outcome`` says what it means for the
                                   subscription: bounced, invalid or unsubscribed

Channels decide once, near the wire, which branch a failure belongs to; the rest of the
code branches on the class, never on codes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from types import TracebackType
from typing import ClassVar, Protocol, TypeVar


class PermanentOutcome(enum.StrEnum):
    BOUNCED = "bounced"  # the mailbox does not exist / hard bounce
    INVALID = "invalid"  # not a reachable number
    UNSUBSCRIBED = "unsubscribed"  # the carrier says the person replied STOP
    REJECTED = "rejected"  # refused for another permanent reason; subscription unchanged


class SendError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TransientSendError(SendError):
    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class PermanentSendError(SendError):
    def __init__(self, reason: str, outcome: PermanentOutcome) -> None:
        super().__init__(reason)
        self.outcome = outcome


@dataclass(frozen=True)
class OutgoingEmail:
    to: str
    subject: str
    text: str
    html: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # The message as it goes on the wire (what ``build_mime`` would make of the above),
    # when the caller prepared it already; the SMTP channel then sends these bytes as is.
    raw: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class OutgoingSms:
    to: str  # E.164
    body: str
    status_callback: str | None = None


@dataclass(frozen=True)
class Sent:
    """The provider accepted the message; ``provider_id`` is its Message-ID or Twilio SID."""

    provider_id: str


MessageT = TypeVar("MessageT", OutgoingEmail, OutgoingSms, contravariant=True)


class Channel(Protocol[MessageT]):
    """A way to send one kind of message. Open once, send many, close.

    ``max_per_second`` is the provider's throughput limit the worker must respect
    (None: no limit). ``max_body_chars`` is the longest body the channel takes.
    """

    name: ClassVar[str]
    max_per_second: float | None
    max_body_chars: ClassVar[int | None]

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def send(self, message: MessageT) -> Sent: ...

    async def __aenter__(self) -> Channel[MessageT]: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


EmailChannel = Channel[OutgoingEmail]
SmsChannel = Channel[OutgoingSms]
