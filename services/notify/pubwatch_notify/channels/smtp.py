"""Email over SMTP with aiosmtplib: one connection, opened lazily and reused for every
message until it breaks.

``PUBWATCH_SMTP_URL``: ``smtp://user:pass@host:port`` (STARTTLS when the server offers it)
or ``smtps://...`` (TLS from the first byte, port 465 by default).
"""

from __future__ import annotations

import logging
from email.utils import parseaddr
from types import TracebackType
from typing import ClassVar
from urllib.parse import unquote, urlsplit

import aiosmtplib

from pubwatch_notify.channels.base import (
    OutgoingEmail,
    PermanentOutcome,
    PermanentSendError,
    Sent,
    TransientSendError,
)
from pubwatch_notify.channels.mime import build_mime

log = logging.getLogger(__name__)


class SmtpEmailChannel:
    name: ClassVar[str] = "email"
    max_body_chars: ClassVar[int | None] = None

    def __init__(
        self,
        url: str,
        sender: str,
        *,
        timeout_s: float = 30.0,
        max_per_second: float | None = None,
    ) -> None:
        parts = urlsplit(url)
        self._implicit_tls = parts.scheme == "smtps"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (465 if self._implicit_tls else 25)
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self._sender = sender
        self._envelope_sender = parseaddr(sender)[1]
        self._timeout_s = timeout_s
        self.max_per_second = max_per_second
        self.rate_key = f"smtp:{self._host}:{self._port}"
        self._client: aiosmtplib.SMTP | None = None

    async def open(self) -> None:
        if self._client is not None and self._client.is_connected:
            return
        client = aiosmtplib.SMTP(
            hostname=self._host,
            port=self._port,
            use_tls=self._implicit_tls,
            # None: upgrade with STARTTLS when the server offers it; never for implicit TLS.
            start_tls=False if self._implicit_tls else None,
            username=self._username,
            password=self._password,
            timeout=self._timeout_s,
        )
        try:
            await client.connect()
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise TransientSendError(f"SMTP login refused ({exc.code})") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise TransientSendError(f"cannot connect to the SMTP server: {exc}") from exc
        self._client = client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and client.is_connected:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()

    async def send(self, message: OutgoingEmail) -> Sent:
        await self.open()
        client = self._client
        assert client is not None
        raw = message.raw
        try:
            if raw is not None:
                # Prepared by the caller (plain ASCII addresses and headers): as is.
                message_id = message.headers["Message-ID"]
                await client.sendmail(self._envelope_sender, [message.to], raw)
            else:
                mime = build_mime(message, self._sender)
                message_id = str(mime["Message-ID"])
                await client.send_message(mime, recipients=[message.to])
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [refusal.code for refusal in exc.recipients]
            raise _classify(min(codes) if codes else 450, "recipient refused") from exc
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code == -1 or not client.is_connected:
                await self._drop()
                raise TransientSendError(f"SMTP connection lost: {exc.message}") from exc
            raise _classify(exc.code, type(exc).__name__) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            await self._drop()
            raise TransientSendError(f"SMTP connection failed: {type(exc).__name__}") from exc
        return Sent(provider_id=message_id)

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def __aenter__(self) -> SmtpEmailChannel:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _classify(code: int, what: str) -> TransientSendError | PermanentSendError:
    """4xx: try again later. 5xx: the mailbox will not take it, the address bounced."""
    if 500 <= code < 600:
        return PermanentSendError(f"SMTP {code} ({what})", PermanentOutcome.BOUNCED)
    return TransientSendError(f"SMTP {code} ({what})")
