"""A fake Twilio Messages API, served over real HTTP for tests and benchmarks.

``FakeTwilio`` answers ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` the way
Twilio does: basic auth with the account SID and auth token, form-encoded parameters checked
against the ``CreateMessageRequest`` schema of Twilio's OpenAPI description, Twilio's error
JSON (``{"code", "message", "more_info", "status"}``) and, on success, a 201 message resource.
It also sends signed status callbacks and builds signed inbound-SMS webhooks, so the whole
SMS path of the ``notify`` service can be exercised without a real host::

    with FakeTwilio(opted_out={"+15005550009"}) as fake:
        client.api.base_url = fake.url
        ...
        await fake.send_status_callbacks()
        assert fake.messages_to("+15005550006")

Error codes it answers with:

=====  ======  ===============================================================
HTTP   code    when
=====  ======  ===============================================================
401    20003   missing or wrong basic auth
404    20404   the AccountSid in the path is not the fake's account
400    20001   not form-encoded, an unknown parameter, or a value of the wrong
               type (the fake's catch-all: Twilio documents no single code)
400    21604   no ``To``
400    21211   ``To`` not E.164, or listed in ``invalid``
400    21603   neither ``From`` nor ``MessagingServiceSid``
400    21212   ``From`` neither E.164, a short code nor an alphanumeric ID
400    21606   ``From`` not among ``senders`` (when that set is given)
400    21701   ``MessagingServiceSid`` not ``MG`` + 32 hex digits
400    21602   none of ``Body``, ``MediaUrl``, ``ContentSid``
400    21617   ``Body`` longer than 1600 characters
400    21609   ``StatusCallback`` not an http(s) URL with a valid host name
400    21610   ``To`` listed in ``opted_out`` (the recipient texted STOP)
429    20429   over ``mps_limit`` for the sender, or an injected "429"
500    20500   injected "500"
503    20503   injected "503"
=====  ======  ===============================================================

Fault kinds for ``inject`` / ``fault_rate``: "429", "500", "503", "timeout" (the answer
comes after ``hang_s``; the message is then processed as usual, as a slow Twilio would)
and "reset" (the TCP connection is aborted with an RST before any byte of an answer, by
reaching uvicorn's transport for the request; see ``_abort_connection``).

Run as its own process for benchmarks (prints the base URL once it is listening)::

    python -m tests.fakes.twilio --port 8099 --mps-limit 1

``GET /_fake/stats`` gives counts as JSON, ``POST /_fake/reset`` clears the logs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import bisect
import contextlib
import hashlib
import hmac
import random
import re
import secrets
import signal
import socket
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import parse_qsl, urlsplit

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive

from tests.fakes.http_thread import ServedApp

API_VERSION: Final = "2010-04-01"
DEFAULT_ACCOUNT_SID: Final = "AC" + "0123456789abcdef" * 2
DEFAULT_AUTH_TOKEN: Final = "feedfacecafebeef" * 2
# Twilio picks the sender from a Messaging Service's pool; callbacks then report this one.
SERVICE_POOL_NUMBER: Final = "+15005550010"
FAULT_KINDS: Final = frozenset({"429", "500", "503", "timeout", "reset"})
# Statuses Twilio reports in callbacks (it sends none for the initial queued/accepted).
CALLBACK_STATUSES: Final = frozenset(
    {"sending", "sent", "delivered", "undelivered", "failed", "read", "canceled"}
)
# Carrier errors after which Twilio reports "failed" (the message never left Twilio);
# every other ErrorCode in ``undeliverable`` ends as "undelivered".
FAILED_ERROR_CODES: Final = frozenset({30001, 30002, 30034})
MAX_BODY_CHARS: Final = 1600
MAX_MEDIA_URLS: Final = 10

# GSM 03.38 default alphabet (the escape 0x1B left out: it only prefixes the extension table).
GSM7_BASIC: Final = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: each of these costs two septets (escape + code).
GSM7_EXTENSION: Final = frozenset("\f^{}\\[~]|€")

E164_RE: Final = re.compile(r"^\+[1-9][0-9]{7,14}$")
SHORT_CODE_RE: Final = re.compile(r"^[0-9]{5,6}$")
ALPHANUMERIC_ID_RE: Final = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")
ACCOUNT_SID_RE: Final = re.compile(r"^AC[0-9a-fA-F]{32}$")
MESSAGING_SERVICE_SID_RE: Final = re.compile(r"^MG[0-9a-fA-F]{32}$")
HOSTNAME_RE: Final = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")
MAX_URL_CHARS: Final = 4000

OPT_OUT_KEYWORDS: Final = frozenset(
    {"STOP", "UNSUBSCRIBE", "END", "QUIT", "STOPALL", "REVOKE", "OPTOUT", "CANCEL"}
)
OPT_IN_KEYWORDS: Final = frozenset({"START", "YES", "UNSTOP"})

MESSAGES_PATH: Final = "/2010-04-01/Accounts/{account_sid}/Messages.json"
MESSAGE_PATH: Final = "/2010-04-01/Accounts/{account_sid}/Messages/{message_sid}.json"


# --------------------------------------------------------------------------------------
# Segments


def is_gsm7(text: str) -> bool:
    """True when every character is in the GSM-7 default alphabet or its extension table."""
    return all(char in GSM7_BASIC or char in GSM7_EXTENSION for char in text)


def count_segments(body: str) -> int:
    """How many SMS segments ``body`` takes, as Twilio counts them.

    GSM-7 gives 160 septets in one segment and 153 per part of a longer message (the rest
    is the concatenation header); an extension-table character is two septets. Anything
    else is sent as UCS-2: 70 UTF-16 code units, 67 per part, a character outside the BMP
    taking two. A part never splits an escape sequence or a surrogate pair, so filling the
    parts greedily can take one more segment than plain division would.
    """
    if not body:
        return 0
    if is_gsm7(body):
        units = [2 if char in GSM7_EXTENSION else 1 for char in body]
        single, per_part = 160, 153
    else:
        units = [len(char.encode("utf-16-le")) // 2 for char in body]
        single, per_part = 70, 67
    if sum(units) <= single:
        return 1
    segments, used = 1, 0
    for unit in units:
        if used + unit > per_part:
            segments, used = segments + 1, 0
        used += unit
    return segments


# --------------------------------------------------------------------------------------
# Signatures


def compute_signature(auth_token: str, url: str, params: Mapping[str, str | Sequence[str]]) -> str:
    """``X-Twilio-Signature``: base64 HMAC-SHA1 keyed with the auth token, over the full URL
    followed by every POST parameter, sorted by name, as name + value (a parameter given
    several times contributes each value, sorted)."""
    payload = [url]
    for name in sorted(params):
        value = params[name]
        values = [value] if isinstance(value, str) else sorted(value)
        payload.extend(name + item for item in values)
    digest = hmac.new(auth_token.encode(), "".join(payload).encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


# --------------------------------------------------------------------------------------
# Request validation


class Rejection(Exception):
    """A request Twilio would answer with an error JSON."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def error_body(status: int, code: int, message: str) -> dict[str, Any]:
    """Twilio's error JSON shape."""
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def _is_callback_url(value: str) -> bool:
    if len(value) > MAX_URL_CHARS or any(char.isspace() for char in value):
        return False
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return False
    host = parts.hostname or ""
    # Twilio refuses underscores in host names (error 21609 names them explicitly).
    return parts.scheme in {"http", "https"} and bool(HOSTNAME_RE.match(host))


def _is_sender(value: str) -> bool:
    return bool(
        E164_RE.match(value) or SHORT_CODE_RE.match(value) or ALPHANUMERIC_ID_RE.match(value)
    )


def _check_bool(value: str) -> str | None:
    return None if value.lower() in {"true", "false"} else "must be true or false"


def _check_int(low: int | None = None, high: int | None = None) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        if not re.fullmatch(r"-?[0-9]+", value):
            return "must be an integer"
        number = int(value)
        if (low is not None and number < low) or (high is not None and number > high):
            return f"must be between {low} and {high}"
        return None

    return check


def _check_number(value: str) -> str | None:
    try:
        float(value)
    except ValueError:
        return "must be a number"
    return None


@dataclass(frozen=True)
class EnumCheck:
    """A parameter whose value is one of ``choices`` (the spec's ``message_enum_*``)."""

    choices: tuple[str, ...]

    def __call__(self, value: str) -> str | None:
        return None if value in self.choices else f"must be one of {', '.join(self.choices)}"


def _check_enum(*choices: str) -> EnumCheck:
    return EnumCheck(choices)


def _check_sid(prefix: str) -> Callable[[str], str | None]:
    pattern = re.compile(rf"^{prefix}[0-9a-fA-F]{{32}}$")

    def check(value: str) -> str | None:
        return None if pattern.match(value) else f"must be {prefix} followed by 32 hex digits"

    return check


def _check_datetime(value: str) -> str | None:
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return "must be an ISO 8601 date-time"
    return None


def _check_url(value: str) -> str | None:
    return None if _is_callback_url(value) else "must be an http(s) URL"


def _any_text(value: str) -> str | None:
    return None


# Every parameter of the spec's CreateMessageRequest, with the check of its value that the
# spec states. The rules with their own Twilio error codes (To, From, MessagingServiceSid,
# Body, StatusCallback) are applied in ``validate_create_params`` before these.
PARAMETER_CHECKS: Final[dict[str, Callable[[str], str | None]]] = {
    "To": _any_text,
    "From": _any_text,
    "MessagingServiceSid": _any_text,
    "Body": _any_text,
    "MediaUrl": _check_url,
    "ContentSid": _check_sid("HX"),
    "ContentVariables": _any_text,
    "StatusCallback": _any_text,
    "ApplicationSid": _check_sid("AP"),
    "MaxPrice": _check_number,
    "ProvideFeedback": _check_bool,
    "Attempt": _check_int(),
    "ValidityPeriod": _check_int(1, 36000),
    "ForceDelivery": _check_bool,
    "ContentRetention": _check_enum("retain", "discard"),
    "AddressRetention": _check_enum("retain", "obfuscate"),
    "SmartEncoded": _check_bool,
    "PersistentAction": _any_text,
    "TrafficType": _check_enum("free"),
    "ShortenUrls": _check_bool,
    "ScheduleType": _check_enum("fixed"),
    "SendAt": _check_datetime,
    "SendAsMms": _check_bool,
    "RiskCheck": _check_enum("enable", "disable"),
    "FallbackFrom": _any_text,
}
ACCEPTED_PARAMETERS: Final = frozenset(PARAMETER_CHECKS)
LIST_PARAMETERS: Final = frozenset({"MediaUrl", "PersistentAction"})
REQUIRED_PARAMETERS: Final = frozenset({"To"})


@dataclass(frozen=True)
class CreateMessage:
    """The parameters of a valid create-message request."""

    to: str
    from_: str | None
    messaging_service_sid: str | None
    body: str
    media_urls: tuple[str, ...]
    status_callback: str | None
    schedule_type: str | None
    params: dict[str, str | list[str]]

    @property
    def sender(self) -> str:
        """What throughput is counted against: the From, else the Messaging Service."""
        sender = self.from_ or self.messaging_service_sid
        assert sender is not None  # validation guarantees one of them
        return sender


def validate_create_params(pairs: Sequence[tuple[str, str]]) -> CreateMessage:
    """Check form parameters the way Twilio checks them; raise ``Rejection`` if not valid."""
    params: dict[str, str | list[str]] = {}
    for name, value in pairs:
        if name not in ACCEPTED_PARAMETERS:
            raise Rejection(
                400,
                20001,
                f"Unknown parameter '{name}': the Messages API (CreateMessageRequest) "
                f"takes only {', '.join(sorted(ACCEPTED_PARAMETERS))}.",
            )
        if name in LIST_PARAMETERS:
            listed = params.setdefault(name, [])
            assert isinstance(listed, list)
            listed.append(value)
        elif name in params:
            raise Rejection(400, 20001, f"Parameter '{name}' was given more than once.")
        else:
            params[name] = value

    def text(name: str) -> str:
        value = params.get(name, "")
        assert isinstance(value, str)
        return value

    to = text("To").strip()
    if not to:
        raise Rejection(400, 21604, "A 'To' phone number is required.")
    if not E164_RE.match(to):
        raise Rejection(400, 21211, f"The 'To' number {to} is not a valid phone number.")

    from_ = text("From").strip() or None
    service = text("MessagingServiceSid").strip() or None
    if from_ is None and service is None:
        raise Rejection(400, 21603, "A 'From' phone number is required.")
    if service is not None and not MESSAGING_SERVICE_SID_RE.match(service):
        raise Rejection(400, 21701, f"The Messaging Service Sid {service} is invalid.")
    if from_ is not None and not _is_sender(from_):
        raise Rejection(
            400,
            21212,
            f"The 'From' number {from_} is not a valid phone number, shortcode, "
            "or alphanumeric sender ID.",
        )

    body = text("Body")
    media = params.get("MediaUrl", [])
    assert isinstance(media, list)
    if not body and not media and not text("ContentSid"):
        raise Rejection(400, 21602, "Message body is required.")
    if len(body) > MAX_BODY_CHARS:
        raise Rejection(
            400, 21617, "The concatenated message body exceeds the 1600 character limit."
        )
    if len(media) > MAX_MEDIA_URLS:
        raise Rejection(400, 20001, f"At most {MAX_MEDIA_URLS} MediaUrl parameters are allowed.")

    callback = text("StatusCallback") or None
    if callback is not None and not _is_callback_url(callback):
        raise Rejection(400, 21609, f"The StatusCallback URL {callback} is not a valid URL.")

    for name, given in params.items():
        for item in given if isinstance(given, list) else [given]:
            problem = PARAMETER_CHECKS[name](item)
            if problem is not None:
                raise Rejection(400, 20001, f"Invalid parameter {name}={item!r}: {problem}.")
    if text("ShortenUrls").lower() == "true" and service is None:
        raise Rejection(400, 20001, "ShortenUrls needs a MessagingServiceSid.")
    if text("ContentVariables") and not text("ContentSid"):
        raise Rejection(400, 20001, "ContentVariables needs a ContentSid.")
    schedule_type = text("ScheduleType") or None
    if schedule_type is not None and (service is None or not text("SendAt")):
        raise Rejection(400, 20001, "ScheduleType needs a MessagingServiceSid and SendAt.")

    return CreateMessage(
        to=to,
        from_=from_,
        messaging_service_sid=service,
        body=body,
        media_urls=tuple(media),
        status_callback=callback,
        schedule_type=schedule_type,
        params=params,
    )


# --------------------------------------------------------------------------------------
# The fake


def _rfc2822(moment: datetime) -> str:
    # Twilio writes "+0000" rather than "GMT".
    return format_datetime(moment.astimezone(UTC))


def _new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _callback_plan(statuses: Sequence[str], error_code: int | None) -> list[str]:
    """The statuses to report for one message.

    A message that fails on the carrier side ends "undelivered" where "delivered" would
    have come; one that Twilio could not send at all ("failed") was never "sending" or
    "sent" either.
    """
    if error_code is None:
        return list(statuses)
    if error_code in FAILED_ERROR_CODES:
        plan = [s for s in statuses if s not in {"sending", "sent"}]
        return ["failed" if s == "delivered" else s for s in plan]
    return ["undelivered" if s == "delivered" else s for s in statuses]


def _abort_connection(receive: Receive) -> bool:
    """Reset the TCP connection a request came on; False if it cannot be reached.

    ASGI gives an app no handle on its connection, but uvicorn's ``receive`` is a bound
    method of its per-request cycle object, which keeps the asyncio transport (both its h11
    and httptools protocols). SO_LINGER with a zero timeout turns the close into an RST, as
    a load balancer dropping the connection would.
    """
    transport = getattr(getattr(receive, "__self__", None), "transport", None)
    # Duck-typed: uvloop's transports are not asyncio.Transport subclasses.
    if transport is None or not callable(getattr(transport, "abort", None)):
        return False
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    return True


@dataclass
class _Message:
    create: CreateMessage
    resource: dict[str, Any]
    received_monotonic: float
    received_at: datetime
    failure_code: int | None

    def record(self) -> dict[str, Any]:
        return {
            "sid": self.resource["sid"],
            "to": self.create.to,
            "from": self.create.from_,
            "messaging_service_sid": self.create.messaging_service_sid,
            "body": self.create.body,
            "media_urls": list(self.create.media_urls),
            "status_callback": self.create.status_callback,
            "status": self.resource["status"],
            "error_code": self.resource["error_code"],
            "num_segments": int(self.resource["num_segments"]),
            "received_monotonic": self.received_monotonic,
            "received_at": self.received_at,
        }


@dataclass
class _Log:
    messages: list[_Message] = field(default_factory=list)
    by_sid: dict[str, _Message] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    callbacks_sent: set[tuple[str, str]] = field(default_factory=set)
    # Acceptance times per sender, in order: the throughput limit and max_per_second.
    sender_times: dict[str, list[float]] = field(default_factory=dict)


class FakeTwilio:
    """A Twilio Messages API on ``127.0.0.1``, with scenario knobs and fault injection.

    Knobs are plain attributes a test may change while the server runs:

    - ``opted_out``: numbers answered 400 / 21610 (they texted STOP).
    - ``invalid``: numbers answered 400 / 21211 although well-formed.
    - ``undeliverable``: number -> carrier ErrorCode (e.g. 30003, 30005, 30006); accepted
      with 201, their status callbacks end "undelivered" (or "failed") with that code.
    - ``senders``: when not None, the only ``From`` values accepted (else 21606).
    - ``mps_limit``: messages per second per sender; over it, 429 / 20429. In any sliding
      one-second window at most ``floor(mps_limit)`` messages are accepted (for a limit
      under one, at most one per ``1 / mps_limit`` seconds). Rejected ones do not count.
    - ``hang_s``: how long a "timeout" fault holds the answer back.
    - ``auto_callbacks``: send ``callback_statuses`` to each accepted message's
      StatusCallback on its own, ``callback_delay_s`` apart (the first one too).
    """

    def __init__(
        self,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        *,
        port: int | None = None,
        opted_out: Iterable[str] = (),
        invalid: Iterable[str] = (),
        undeliverable: Mapping[str, int] | None = None,
        senders: Iterable[str] | None = None,
        mps_limit: float | None = None,
        hang_s: float = 10.0,
        auto_callbacks: bool = False,
        callback_statuses: Sequence[str] = ("sent", "delivered"),
        callback_delay_s: float = 0.0,
    ) -> None:
        if not ACCOUNT_SID_RE.match(account_sid):
            raise ValueError(f"an account SID is AC followed by 32 hex digits, not {account_sid!r}")
        if mps_limit is not None and mps_limit <= 0:
            raise ValueError("mps_limit must be positive (or None for no limit)")
        unknown = set(callback_statuses) - CALLBACK_STATUSES
        if unknown:
            raise ValueError(f"not callback statuses: {sorted(unknown)}")
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.opted_out: set[str] = set(opted_out)
        self.invalid: set[str] = set(invalid)
        self.undeliverable: dict[str, int] = dict(undeliverable or {})
        self.senders: set[str] | None = None if senders is None else set(senders)
        self.mps_limit = mps_limit
        self.hang_s = hang_s
        self.auto_callbacks = auto_callbacks
        self.callback_statuses = tuple(callback_statuses)
        self.callback_delay_s = callback_delay_s

        # The server thread writes the logs and the test thread reads them.
        self._lock = threading.Lock()
        self._log = _Log()
        self._faults: deque[str] = deque()
        self._fault_rate = 0.0
        self._fault_kinds: tuple[str, ...] = ()
        self._fault_rng = random.Random()
        self._stopping = threading.Event()
        self._server_loop: asyncio.AbstractEventLoop | None = None
        self._callback_tasks: set[asyncio.Task[None]] = set()
        self.app = Starlette(
            routes=[
                Route(
                    MESSAGES_PATH.format(account_sid="{account_sid}"),
                    self._create_message,
                    methods=["POST"],
                ),
                Route(
                    MESSAGE_PATH.format(account_sid="{account_sid}", message_sid="{message_sid}"),
                    self._fetch_message,
                    methods=["GET"],
                ),
                Route("/_fake/stats", self._stats_endpoint, methods=["GET"]),
                Route("/_fake/reset", self._reset_endpoint, methods=["POST"]),
            ]
        )
        self._served = ServedApp(self.app, port=port or None)
        self._url: str | None = None

    # ---- lifecycle -----------------------------------------------------------------

    def start(self) -> str:
        """Start listening; returns the base URL (``http://127.0.0.1:PORT``, no path)."""
        self._stopping.clear()
        self._url = self._served.start().rstrip("/")
        return self._url

    def stop(self) -> None:
        """Stop the server; a hanging "timeout" answer and pending callbacks are cut short."""
        self._stopping.set()
        loop = self._server_loop
        if loop is not None and self._callback_tasks and not loop.is_closed():
            # If the loop is already ending, asyncio.run cancels what is left.
            with contextlib.suppress(RuntimeError, TimeoutError):
                asyncio.run_coroutine_threadsafe(self._cancel_callback_tasks(), loop).result(5.0)
        self._served.stop()
        self._server_loop = None
        self._url = None

    @property
    def url(self) -> str:
        """The base URL, like ``https://api.twilio.com`` for the real service."""
        if self._url is None:
            raise RuntimeError("FakeTwilio is not running: call start() first")
        return self._url

    @property
    def messages_url(self) -> str:
        return self.url + MESSAGES_PATH.format(account_sid=self.account_sid)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- fault injection -------------------------------------------------------------

    def inject(self, kind: str, times: int = 1) -> None:
        """Answer the next ``times`` create requests with fault ``kind`` (queued in order)."""
        self._check_kinds([kind])
        with self._lock:
            self._faults.extend([kind] * times)

    def fault_rate(
        self, rate: float, kinds: Sequence[str] = ("500",), seed: int | None = None
    ) -> None:
        """Answer a fraction ``rate`` of create requests with a fault picked from ``kinds``.

        ``seed`` makes the choice repeatable; ``fault_rate(0)`` turns it off. Faults queued
        with ``inject`` come first.
        """
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate is a fraction between 0 and 1")
        if rate > 0:
            self._check_kinds(kinds)
        with self._lock:
            self._fault_rate = rate
            self._fault_kinds = tuple(kinds)
            self._fault_rng = random.Random(seed)

    @staticmethod
    def _check_kinds(kinds: Sequence[str]) -> None:
        unknown = set(kinds) - FAULT_KINDS
        if unknown or not kinds:
            raise ValueError(f"fault kinds are {sorted(FAULT_KINDS)}, not {sorted(unknown)}")

    def _next_fault(self) -> str | None:
        with self._lock:
            if self._faults:
                return self._faults.popleft()
            if self._fault_rate and self._fault_rng.random() < self._fault_rate:
                return self._fault_rng.choice(self._fault_kinds)
        return None

    # ---- what was received -----------------------------------------------------------

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Every accepted message, oldest first (copies)."""
        with self._lock:
            return [message.record() for message in self._log.messages]

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every create request with how it was answered (``status`` None: reset)."""
        with self._lock:
            return [dict(entry) for entry in self._log.requests]

    @property
    def callbacks(self) -> list[dict[str, Any]]:
        """Every status callback sent: sid, url, status, params, response status or error."""
        with self._lock:
            return [dict(entry) for entry in self._log.callbacks]

    def messages_to(self, number: str) -> list[dict[str, Any]]:
        return [message for message in self.messages if message["to"] == number]

    def count(self) -> int:
        with self._lock:
            return len(self._log.messages)

    def max_per_second(self, sender: str) -> int:
        """Most messages accepted from one From / MessagingServiceSid in any 1-second window."""
        with self._lock:
            times = list(self._log.sender_times.get(sender, ()))
        best, first = 0, 0
        for last, moment in enumerate(times):
            while moment - times[first] >= 1.0:
                first += 1
            best = max(best, last - first + 1)
        return best

    def stats(self) -> dict[str, Any]:
        """Counts for benchmarks: accepted, rejected by Twilio code, faults by kind,
        callbacks sent, and the highest messages-per-second of each sender."""
        with self._lock:
            requests = list(self._log.requests)
            senders = [sender for sender, times in self._log.sender_times.items() if times]
            accepted = len(self._log.messages)
            callbacks = len(self._log.callbacks)
        rejected = Counter(
            str(r["code"]) for r in requests if r["fault"] is None and r["code"] is not None
        )
        faults = Counter(str(r["fault"]) for r in requests if r["fault"] is not None)
        return {
            "requests": len(requests),
            "accepted": accepted,
            "rejected": dict(rejected),
            "faults": dict(faults),
            "callbacks": callbacks,
            "max_per_second": {sender: self.max_per_second(sender) for sender in sorted(senders)},
        }

    def reset(self) -> None:
        """Forget every message, request and callback (the knobs and queued faults stay)."""
        with self._lock:
            self._log = _Log()

    # ---- HTTP handlers ---------------------------------------------------------------

    def _authorized(self, request: Request) -> bool:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, separator, password = decoded.partition(":")
        return (
            bool(separator)
            and hmac.compare_digest(user.encode(), self.account_sid.encode())
            and hmac.compare_digest(password.encode(), self.auth_token.encode())
        )

    def _check_access(self, request: Request) -> None:
        if not self._authorized(request):
            raise Rejection(401, 20003, "Authenticate")
        if request.path_params["account_sid"] != self.account_sid:
            raise Rejection(404, 20404, f"The requested resource {request.url.path} was not found")

    @staticmethod
    def _error_response(rejection: Rejection) -> JSONResponse:
        headers = (
            {"WWW-Authenticate": 'Basic realm="Twilio API"'} if rejection.status == 401 else None
        )
        return JSONResponse(
            error_body(rejection.status, rejection.code, rejection.message),
            status_code=rejection.status,
            headers=headers,
        )

    async def _create_message(self, request: Request) -> Response:
        self._server_loop = asyncio.get_running_loop()
        received_monotonic = time.monotonic()
        fault = self._next_fault()
        entry: dict[str, Any] = {
            "method": request.method,
            "path": request.url.path,
            "received_monotonic": received_monotonic,
            "fault": fault,
            "status": None,
            "code": None,
            "to": None,
            "sender": None,
        }
        if fault == "reset":
            # Logged first: the client sees the reset before this handler ends.
            with self._lock:
                self._log.requests.append(entry)
            if not _abort_connection(request.receive):
                raise RuntimeError("cannot reach the connection's transport to reset it")
            await self._wait_for_disconnect(request.receive)
            # uvicorn drops whatever is sent on a closed connection.
            return Response(status_code=204)
        try:
            response = await self._answer_create(request, fault, entry)
        except Rejection as rejection:
            entry["code"] = rejection.code
            response = self._error_response(rejection)
        entry["status"] = response.status_code
        with self._lock:
            self._log.requests.append(entry)
        return response

    async def _answer_create(
        self, request: Request, fault: str | None, entry: dict[str, Any]
    ) -> Response:
        if fault in {"429", "500", "503"}:
            status = int(fault)
            message = {429: "Too Many Requests", 500: "Internal Server Error"}.get(
                status, "Service Unavailable"
            )
            raise Rejection(status, 20000 + status, message)
        if fault == "timeout":
            # A slow Twilio has the whole request and answers late; by then the client may
            # have given up, so the body is read before the wait.
            await request.body()
            await self._hang()

        self._check_access(request)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            raise Rejection(
                400,
                20001,
                f"Unsupported Content-Type '{content_type or 'none'}': the Messages API "
                "takes application/x-www-form-urlencoded parameters.",
            )
        raw = await request.body()
        try:
            pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError as exc:
            raise Rejection(400, 20001, "The request body is not UTF-8.") from exc
        create = validate_create_params(pairs)
        entry["to"], entry["sender"] = create.to, create.sender
        return self._accept(create)

    def _accept(self, create: CreateMessage) -> Response:
        if create.to in self.invalid:
            raise Rejection(400, 21211, f"The 'To' number {create.to} is not a valid phone number.")
        if (
            self.senders is not None
            and create.from_ is not None
            and create.from_ not in self.senders
        ):
            raise Rejection(
                400,
                21606,
                f"The 'From' phone number provided ({create.from_}) is not a valid "
                "message-capable Twilio phone number for this destination/account.",
            )
        if create.to in self.opted_out:
            raise Rejection(400, 21610, "Attempt to send to unsubscribed recipient")

        now = datetime.now(UTC)
        sid = _new_sid("MM" if create.media_urls else "SM")
        uri = MESSAGE_PATH.format(account_sid=self.account_sid, message_sid=sid)
        if create.schedule_type is not None:
            status = "scheduled"
        elif create.messaging_service_sid is not None:
            status = "accepted"
        else:
            status = "queued"
        resource: dict[str, Any] = {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": create.body,
            "date_created": _rfc2822(now),
            "date_sent": None,
            "date_updated": _rfc2822(now),
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": create.from_,
            "messaging_service_sid": create.messaging_service_sid,
            "num_media": str(len(create.media_urls)),
            # An MMS is one message whatever the length of its text.
            "num_segments": "1" if create.media_urls else str(max(1, count_segments(create.body))),
            "price": None,
            "price_unit": None,
            "sid": sid,
            "status": status,
            "subresource_uris": {"media": uri.removesuffix(".json") + "/Media.json"},
            "to": create.to,
            "uri": uri,
        }
        with self._lock:
            # Timed, checked and recorded under one lock, so that the per-sender times stay
            # in order and two requests cannot both take the last place in a window.
            accepted_monotonic = time.monotonic()
            times = self._log.sender_times.setdefault(create.sender, [])
            if self.mps_limit is not None and self._over_limit(times, accepted_monotonic):
                raise Rejection(429, 20429, "Too Many Requests")
            message = _Message(
                create=create,
                resource=resource,
                received_monotonic=accepted_monotonic,
                received_at=now,
                failure_code=self.undeliverable.get(create.to),
            )
            times.append(accepted_monotonic)
            self._log.messages.append(message)
            self._log.by_sid[sid] = message
        if self.auto_callbacks and create.status_callback is not None:
            task = asyncio.get_running_loop().create_task(self._auto_callbacks(sid))
            self._callback_tasks.add(task)
            task.add_done_callback(self._callback_tasks.discard)
        return JSONResponse(dict(resource), status_code=201)

    def _over_limit(self, times: list[float], now: float) -> bool:
        assert self.mps_limit is not None
        window_s = max(1.0, 1.0 / self.mps_limit)
        allowed = max(1, int(self.mps_limit * window_s + 1e-9))
        recent = len(times) - bisect.bisect_right(times, now - window_s)
        return recent >= allowed

    async def _hang(self) -> None:
        # Sleep in slices so that stop() is not held up by a hanging answer.
        deadline = time.monotonic() + self.hang_s
        while not self._stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await asyncio.sleep(min(0.05, remaining))

    @staticmethod
    async def _wait_for_disconnect(receive: Receive) -> None:
        # uvicorn learns of the closed transport on a later loop turn; returning before
        # then would make it answer 500 on a connection that no longer exists.
        for _ in range(100):
            message = await asyncio.wait_for(receive(), timeout=1.0)
            if message["type"] == "http.disconnect":
                return

    async def _fetch_message(self, request: Request) -> Response:
        try:
            self._check_access(request)
            with self._lock:
                message = self._log.by_sid.get(request.path_params["message_sid"])
                resource = None if message is None else dict(message.resource)
            if resource is None:
                raise Rejection(
                    404, 20404, f"The requested resource {request.url.path} was not found"
                )
        except Rejection as rejection:
            return self._error_response(rejection)
        return JSONResponse(resource)

    async def _stats_endpoint(self, request: Request) -> Response:
        return JSONResponse(self.stats())

    async def _reset_endpoint(self, request: Request) -> Response:
        self.reset()
        return JSONResponse({"reset": True})

    # ---- status callbacks ------------------------------------------------------------

    async def send_status_callbacks(
        self,
        statuses: Sequence[str] = ("sent", "delivered"),
        *,
        sids: Iterable[str] | None = None,
        timeout_s: float = 5.0,
    ) -> int:
        """POST signed status callbacks for accepted messages that asked for them.

        Each message gets ``statuses`` in order (an ``undeliverable`` one ends "undelivered"
        or "failed" with its ErrorCode instead of "delivered"); a status already sent for a
        message is not sent again. Only ``sids`` when given. Returns how many were POSTed.
        """
        unknown = set(statuses) - CALLBACK_STATUSES
        if unknown:
            raise ValueError(f"not callback statuses: {sorted(unknown)}")
        wanted = None if sids is None else set(sids)
        with self._lock:
            targets = [
                m.resource["sid"]
                for m in self._log.messages
                if m.create.status_callback is not None
                and (wanted is None or m.resource["sid"] in wanted)
            ]
        async with httpx.AsyncClient(timeout=timeout_s, trust_env=False) as client:
            counts = await asyncio.gather(
                *(self._deliver_callbacks(client, sid, statuses, delay_s=0.0) for sid in targets)
            )
        return sum(counts)

    async def wait_for_callbacks(self, count: int, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        """Wait until at least ``count`` callbacks were sent (for ``auto_callbacks``)."""
        deadline = time.monotonic() + timeout_s
        while True:
            callbacks = self.callbacks
            if len(callbacks) >= count:
                return callbacks
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(callbacks)} of {count} status callbacks in {timeout_s}s")
            await asyncio.sleep(0.01)

    async def _auto_callbacks(self, sid: str) -> None:
        async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
            await self._deliver_callbacks(
                client, sid, self.callback_statuses, delay_s=self.callback_delay_s
            )

    async def _cancel_callback_tasks(self) -> None:
        tasks = list(self._callback_tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _deliver_callbacks(
        self, client: httpx.AsyncClient, sid: str, statuses: Sequence[str], delay_s: float
    ) -> int:
        with self._lock:
            message = self._log.by_sid.get(sid)
        if message is None or message.create.status_callback is None:
            return 0
        url = message.create.status_callback
        sent = 0
        for status in _callback_plan(statuses, message.failure_code):
            if delay_s:
                await asyncio.sleep(delay_s)
            with self._lock:
                if (sid, status) in self._log.callbacks_sent:
                    continue
                self._log.callbacks_sent.add((sid, status))
                params = self._update_status(message, status)
            entry: dict[str, Any] = {"sid": sid, "url": url, "status": status, "params": params}
            try:
                response = await client.post(
                    url,
                    data=params,
                    headers={
                        "X-Twilio-Signature": self.sign(url, params),
                        "User-Agent": "TwilioProxy/1.1",
                    },
                )
                entry["response_status"] = response.status_code
            except httpx.HTTPError as exc:
                # Twilio does not retry a failed status callback either; the test sees why.
                entry["response_status"] = None
                entry["error"] = repr(exc)
            with self._lock:
                self._log.callbacks.append(entry)
            sent += 1
        return sent

    def _update_status(self, message: _Message, status: str) -> dict[str, str]:
        """Move the message to ``status`` (caller holds the lock); the callback's params."""
        now = _rfc2822(datetime.now(UTC))
        resource = message.resource
        resource["status"] = status
        resource["date_updated"] = now
        if status == "sent":
            resource["date_sent"] = now
        error_code = message.failure_code if status in {"undelivered", "failed"} else None
        resource["error_code"] = error_code
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "From": message.create.from_ or SERVICE_POOL_NUMBER,
            "MessageSid": resource["sid"],
            "MessageStatus": status,
            "SmsSid": resource["sid"],
            "SmsStatus": status,
            "To": message.create.to,
        }
        if message.create.messaging_service_sid is not None:
            params["MessagingServiceSid"] = message.create.messaging_service_sid
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        return params

    # ---- signing and inbound webhooks ------------------------------------------------

    def sign(self, url: str, params: Mapping[str, str | Sequence[str]]) -> str:
        """The ``X-Twilio-Signature`` Twilio would send with ``params`` POSTed to ``url``."""
        return compute_signature(self.auth_token, url, params)

    def inbound_message_params(
        self,
        from_: str,
        to: str,
        body: str,
        *,
        messaging_service_sid: str | None = None,
    ) -> dict[str, str]:
        """The form parameters Twilio POSTs to an incoming-message webhook (no media)."""
        sid = _new_sid("SM")
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "Body": body,
            "From": from_,
            "MessageSid": sid,
            "NumMedia": "0",
            "NumSegments": str(max(1, count_segments(body))),
            "SmsMessageSid": sid,
            "SmsSid": sid,
            "SmsStatus": "received",
            "To": to,
        }
        if messaging_service_sid is not None:
            params["MessagingServiceSid"] = messaging_service_sid
        return params

    async def post_inbound(
        self,
        url: str,
        from_: str,
        to: str,
        body: str,
        *,
        messaging_service_sid: str | None = None,
        timeout_s: float = 5.0,
    ) -> httpx.Response:
        """Deliver an incoming SMS to the app's webhook at ``url``, signed.

        Like Twilio's default opt-out handling, a STOP-type keyword adds the sender to
        ``opted_out`` (so later sends to it get 21610) and START / YES / UNSTOP removes it.
        """
        keyword = body.strip().upper()
        if keyword in OPT_OUT_KEYWORDS:
            self.opted_out.add(from_)
        elif keyword in OPT_IN_KEYWORDS:
            self.opted_out.discard(from_)
        params = self.inbound_message_params(
            from_, to, body, messaging_service_sid=messaging_service_sid
        )
        async with httpx.AsyncClient(timeout=timeout_s, trust_env=False) as client:
            return await client.post(
                url,
                data=params,
                headers={"X-Twilio-Signature": self.sign(url, params)},
            )


# --------------------------------------------------------------------------------------
# As a process


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.twilio", description="Run the fake Twilio Messages API."
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--mps-limit", type=float, default=None, help="messages/s per sender")
    parser.add_argument("--account-sid", default=DEFAULT_ACCOUNT_SID)
    parser.add_argument("--auth-token", default=DEFAULT_AUTH_TOKEN)
    parser.add_argument(
        "--auto-callbacks", action="store_true", help="send sent/delivered status callbacks"
    )
    args = parser.parse_args(argv)

    done = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    fake = FakeTwilio(
        args.account_sid,
        args.auth_token,
        port=args.port,
        mps_limit=args.mps_limit,
        auto_callbacks=args.auto_callbacks,
    )
    with fake:
        print(fake.url, flush=True)
        while not done.wait(0.5):
            pass


if __name__ == "__main__":
    main()
