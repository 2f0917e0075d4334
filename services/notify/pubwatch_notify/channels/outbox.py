"""The outbox: where messages go when SMTP or Twilio is not configured.

Each message is written to a file under ``var/outbox`` (``.eml`` for email, exactly the
bytes SMTP would carry; ``.sms.json`` for SMS) and shown at ``/outbox``, so someone running
PubWatch on one machine sees what subscribers would receive.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import ClassVar

from pubwatch_notify.channels.base import OutgoingEmail, OutgoingSms, Sent
from pubwatch_notify.channels.mime import build_mime

EMAIL_SUFFIX = ".eml"
SMS_SUFFIX = ".sms.json"


def _file_name(suffix: str) -> str:
    # Sortable by time, unique across processes.
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:12]}{suffix}"


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)  # readers never see half a message


class _OutboxChannel:
    max_per_second: float | None = None

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.rate_key = f"outbox:{self.__class__.__name__}"

    async def open(self) -> None:
        await asyncio.to_thread(self.directory.mkdir, parents=True, exist_ok=True)

    async def close(self) -> None:
        return None

    async def _store(self, suffix: str, data: bytes) -> Sent:
        name = _file_name(suffix)
        await asyncio.to_thread(_write_atomically, self.directory / name, data)
        return Sent(provider_id=f"outbox:{name}")

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class OutboxEmailChannel(_OutboxChannel):
    name: ClassVar[str] = "email"
    max_body_chars: ClassVar[int | None] = None

    def __init__(self, directory: Path, sender: str) -> None:
        super().__init__(directory)
        self._sender = sender

    async def send(self, message: OutgoingEmail) -> Sent:
        return await self._store(
            EMAIL_SUFFIX,
            message.raw if message.raw is not None else bytes(build_mime(message, self._sender)),
        )

    async def __aenter__(self) -> OutboxEmailChannel:
        await self.open()
        return self


class OutboxSmsChannel(_OutboxChannel):
    name: ClassVar[str] = "sms"
    max_body_chars: ClassVar[int | None] = 1600

    async def send(self, message: OutgoingSms) -> Sent:
        record = {
            "to": message.to,
            "body": message.body,
            "status_callback": message.status_callback,
        }
        return await self._store(SMS_SUFFIX, json.dumps(record, ensure_ascii=False).encode())

    async def __aenter__(self) -> OutboxSmsChannel:
        await self.open()
        return self


@dataclass(frozen=True)
class OutboxEntry:
    name: str
    kind: str  # "email" or "sms"
    stored_at: datetime
    path: Path


def list_outbox(directory: Path, limit: int = 200) -> list[OutboxEntry]:
    """The newest ``limit`` messages, newest first."""
    if not directory.is_dir():
        return []
    names = sorted(
        (p.name for p in directory.iterdir() if p.name.endswith((EMAIL_SUFFIX, SMS_SUFFIX))),
        reverse=True,
    )[:limit]
    entries = []
    for name in names:
        stamp = datetime.strptime(name.split("-", 1)[0], "%Y%m%dT%H%M%S%f").replace(tzinfo=UTC)
        kind = "email" if name.endswith(EMAIL_SUFFIX) else "sms"
        entries.append(OutboxEntry(name, kind, stamp, directory / name))
    return entries
