"""SMS through Twilio's Messages API with the twilio SDK's async client.

The client keeps one aiohttp session (connection pool) open between messages. Errors are
sorted here, once: 429/20429 and 5xx or a lost connection are transient; 21211 (not a valid
number) and 21610 (the person replied STOP to the carrier) are permanent and change the
subscription; any other 4xx is permanent for this message only.
"""

from __future__ import annotations

import base64
import json
from types import TracebackType
from typing import ClassVar

import aiohttp
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response

from pubwatch_notify.channels.base import (
    OutgoingSms,
    PermanentOutcome,
    PermanentSendError,
    Sent,
    TransientSendError,
)

INVALID_NUMBER = 21211
OPTED_OUT = 21610
TOO_MANY_REQUESTS = 20429
# Codes Twilio documents as "try later": queue overflow, unreachable handset.
TRANSIENT_CODES = frozenset({TOO_MANY_REQUESTS, 30001, 30003})


class _HeaderAuthHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]
    """The SDK's async client, sending basic auth as a header: recent aiohttp deprecates the
    ``BasicAuth`` object the SDK would pass."""

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the SDK's signature
        allow_redirects: bool = False,
    ) -> Response:
        if auth is not None:
            credentials = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            headers = {**(headers or {}), "Authorization": f"Basic {credentials}"}
        response: Response = await super().request(
            method, url, params, data, headers, None, timeout, allow_redirects
        )
        return response


class TwilioSmsChannel:
    name: ClassVar[str] = "sms"
    max_body_chars: ClassVar[int | None] = 1600

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        api_url: str,
        from_number: str | None,
        messaging_service_sid: str | None,
        max_per_second: float | None,
        timeout_s: float = 30.0,
    ) -> None:
        self._account_sid = account_sid
        self._auth_token = auth_token
        self._api_url = api_url.rstrip("/")
        self._from = from_number
        self._messaging_service_sid = messaging_service_sid
        self._timeout_s = timeout_s
        self.max_per_second = max_per_second or None
        # Throughput is per sender: every worker sending from it shares one limit.
        self.rate_key = f"twilio:{messaging_service_sid or from_number}"
        self._http: _HeaderAuthHttpClient | None = None
        self._messages_url = f"{self._api_url}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self._headers = {"Accept": "application/json", "User-Agent": "pubwatch-notify"}

    async def open(self) -> None:
        if self._http is None:
            # The SDK's async HTTP client: one aiohttp session (connection pool) kept open.
            self._http = _HeaderAuthHttpClient(timeout=self._timeout_s)

    async def close(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.close()

    async def send(self, message: OutgoingSms) -> Sent:
        await self.open()
        assert self._http is not None
        # The SDK's lowest-level call, its HTTP client's ``request``: the resource layer
        # (``Client(...).messages.create_async``) costs more per message than the request
        # itself (user agent, parameter mapping, a full MessageInstance), and importing it
        # takes most of a second at the first send.
        data: dict[str, object] = {"To": message.to, "Body": message.body}
        if self._messaging_service_sid:
            data["MessagingServiceSid"] = self._messaging_service_sid
        else:
            data["From"] = self._from or ""
        if message.status_callback:
            data["StatusCallback"] = message.status_callback
        try:
            response = await self._http.request(
                "POST",
                self._messages_url,
                data=data,
                headers=self._headers,
                auth=(self._account_sid, self._auth_token),
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            # The request may or may not have reached Twilio; retrying may send it twice,
            # which is the in-flight window we accept over losing the message.
            await self.close()
            raise TransientSendError(f"Twilio request failed: {type(exc).__name__}") from exc
        payload = _json_object(response.text)
        if response.status_code >= 400:
            code = payload.get("code")
            raise classify_twilio_error(
                response.status_code, code if isinstance(code, int) else None
            )
        sid = payload.get("sid")
        if not isinstance(sid, str) or not sid:
            raise TransientSendError(f"Twilio HTTP {response.status_code} without a message sid")
        return Sent(provider_id=sid)

    async def __aenter__(self) -> TwilioSmsChannel:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _json_object(text: str) -> dict[str, object]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def classify_twilio_error(status: int, code: int | None) -> TransientSendError | PermanentSendError:
    reason = f"Twilio HTTP {status}" + (f" error {code}" if code else "")
    if code == INVALID_NUMBER:
        return PermanentSendError(reason, PermanentOutcome.INVALID)
    if code == OPTED_OUT:
        return PermanentSendError(reason, PermanentOutcome.UNSUBSCRIBED)
    if status == 429 or status >= 500 or code in TRANSIENT_CODES:
        return TransientSendError(reason)
    return PermanentSendError(reason, PermanentOutcome.REJECTED)
