"""A recording SMTP server for tests and benchmarks: real sockets, switchable faults.

In a test::

    with SmtpSink() as sink:                      # or the ``smtp_sink`` fixture
        settings = Settings(smtp_url=sink.url)    # smtp://127.0.0.1:PORT
        ...
        [mail] = sink.wait_for(1)
        assert mail.message["Subject"] == "..."

Faults can be switched from the test thread at any time:

- ``refuse(451, "4.3.0 Try again later")`` answers 451 to every DATA until ``accept()``;
  ``times=N`` or ``duration_s=S`` make it end by itself; ``recipients=[...]`` refuses only
  those addresses, at RCPT (``refuse(550, "5.1.1 User unknown", recipients=[a])`` is a hard
  bounce). ``refused_count`` counts refusals: one per refused DATA, or one per refused
  recipient.
- ``go_away()`` stops listening and drops open connections (connection refused);
  ``come_back()`` listens again on the same port.
- ``slow(delay_s)`` delays every DATA answer; ``slow(0)`` ends that. A client that hangs
  up during the delay loses its session, so that message is not recorded.

As its own process (benchmarks keep the SMTP server out of the measured process)::

    python -m tests.fakes.smtp --port 2525 --control-port 2526 [--auth user:pass]

prints ``smtp://127.0.0.1:2525`` once listening (then, with ``--control-port``, the control
URL on a second line; port 0 picks a free port) and runs until SIGTERM/SIGINT. The control
endpoint speaks JSON; every ``*_at`` there is wall-clock ``time.time()``:

- ``GET /stats``: ``accepted``, ``refused``, ``first_received_at``, ``last_received_at``,
  ``recipients`` (``distinct``, ``exactly_one``, ``more_than_one``: how many addresses got
  one message and how many got several, i.e. duplicates).
- ``GET /received?limit=N&offset=M``: ``total`` and ``received``, a list in arrival order of
  ``mail_from``, ``rcpt_tos``, ``received_at`` and ``received_monotonic``.
- ``POST /reset``: forget everything received and refused.

The process does not keep message bodies (100,000 messages would hold hundreds of MB that
nothing over HTTP can read); pass ``--keep-raw`` if that changes.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import parse_qs, quote, urlsplit

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

HOST = "127.0.0.1"
# Passed to every session so that aiosmtpd does not call socket.getfqdn() (a DNS lookup)
# for each new connection, which would dominate the cost of a benchmark run.
SERVER_NAME = "smtp-sink.pubwatch.test"
# How long start/stop/go_away/come_back may take before we call the sink broken.
CONTROL_TIMEOUT_S = 10.0
_POLL_S = 0.005

_T = TypeVar("_T")


@dataclass(frozen=True)
class ReceivedMail:
    """One message the sink accepted (answered 250 to its DATA)."""

    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    received_at: float
    """``time.monotonic()`` when the message was accepted."""
    received_wall: float
    """``time.time()`` at the same moment, for comparing with other processes."""
    login: str | None = None
    """The AUTH user name the session logged in with, if any."""

    @cached_property
    def message(self) -> EmailMessage:
        """``raw`` parsed with the default policy; text parts keep the wire's CRLF endings."""
        # Parsed on first access only: benchmarks push 100,000 messages through the sink and
        # never look at most of them.
        parsed = email.message_from_bytes(self.raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class _Refusal:
    status: str
    remaining: int | None
    deadline: float | None
    recipients: frozenset[str] | None


def _normalise(address: str) -> str:
    return address.strip().strip("<>").lower()


class _Handler:
    """aiosmtpd hooks; they run on the sink's loop thread and must stay cheap."""

    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        # Enforced here rather than with aiosmtpd's auth_required, because that option
        # combined with auth_require_tls=False emits a UserWarning for every connection,
        # which the test suite's filterwarnings=error turns into a failed session.
        if self._sink.auth is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        refusal = self._sink._take_refusal(address)
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        sink = self._sink
        delay_s = sink._delay_s
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        refusal = sink._take_refusal(None)
        if refusal is not None:
            return refusal
        raw = envelope.original_content if sink.keep_raw else b""
        login = None
        if session.authenticated and isinstance(session.auth_data, LoginPassword):
            login = session.auth_data.login.decode("utf-8", "replace")
        sink._record(
            ReceivedMail(
                mail_from=envelope.mail_from or "",
                rcpt_tos=list(envelope.rcpt_tos),
                raw=raw or b"",
                received_at=time.monotonic(),
                received_wall=time.time(),
                login=login,
            )
        )
        return "250 OK"


class _SinkSMTP(SMTP):
    """An aiosmtpd session that registers itself, so that go_away() can drop it."""

    def __init__(self, handler: _Handler, connections: set[_SinkSMTP], **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._sink_connections = connections

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._sink_connections.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self._sink_connections.discard(self)
        super().connection_lost(error)


class SmtpSink:
    """An SMTP server on 127.0.0.1 that records what it accepts; see the module docstring.

    It runs its own event loop on a daemon thread, so it serves sync and async tests alike
    and keeps answering while a test blocks. All public methods are safe to call from any
    thread other than the sink's own.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        auth: tuple[str, str] | None = None,
        keep_raw: bool = True,
    ) -> None:
        self.auth = auth
        self.keep_raw = keep_raw
        self._port = port
        self._lock = threading.Lock()
        self._messages: list[ReceivedMail] = []
        self._refused = 0
        self._per_recipient: dict[str, int] = {}
        self._exactly_one = 0
        self._more_than_one = 0
        # Read without the lock on every message: a plain attribute read is atomic, and the
        # common case (no fault) then costs nothing.
        self._refusal: _Refusal | None = None
        self._delay_s = 0.0
        self._handler = _Handler(self)
        self._connections: set[_SinkSMTP] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("SmtpSink is already started")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=self._run_loop, args=(loop,), name="smtp-sink", daemon=True
        )
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            self._call(self._listen())
        except BaseException:
            self._stop_loop()
            raise

    def stop(self) -> None:
        if self._thread is None:
            return
        try:
            self._call(self._go_away())
        finally:
            self._stop_loop()

    def go_away(self) -> None:
        """Close the listening socket and drop every open connection."""
        self._call(self._go_away())

    def come_back(self) -> None:
        """Listen again on the same port (no-op while listening)."""
        self._call(self._listen())

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

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("SmtpSink has no port until start() has picked one")
        return self._port

    @property
    def url(self) -> str:
        """``smtp://127.0.0.1:PORT``, with ``user:pass@`` when the sink requires AUTH."""
        if self.auth is None:
            return f"smtp://{HOST}:{self.port}"
        user, password = (quote(part, safe="") for part in self.auth)
        return f"smtp://{user}:{password}@{HOST}:{self.port}"

    # -- what arrived ----------------------------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMail]:
        """A copy of the accepted messages, in arrival order."""
        with self._lock:
            return list(self._messages)

    def messages_to(self, address: str) -> list[ReceivedMail]:
        """Accepted messages whose envelope recipients include ``address`` (any case)."""
        wanted = _normalise(address)
        return [m for m in self.messages if any(_normalise(r) == wanted for r in m.rcpt_tos)]

    def count(self) -> int:
        with self._lock:
            return len(self._messages)

    @property
    def refused_count(self) -> int:
        with self._lock:
            return self._refused

    def wait_for(self, count: int, timeout_s: float = 5.0) -> list[ReceivedMail]:
        """Block until at least ``count`` messages arrived; return them all.

        Do not call this from an event loop that is itself sending the mail: it blocks that
        loop. Use :meth:`wait_for_async` there.
        """
        deadline = time.monotonic() + timeout_s
        while self.count() < count:
            if time.monotonic() >= deadline:
                self._timed_out(count, timeout_s)
            time.sleep(_POLL_S)
        return self.messages

    async def wait_for_async(self, count: int, timeout_s: float = 5.0) -> list[ReceivedMail]:
        """:meth:`wait_for` for async tests: yields to the loop while polling."""
        deadline = time.monotonic() + timeout_s
        while self.count() < count:
            if time.monotonic() >= deadline:
                self._timed_out(count, timeout_s)
            await asyncio.sleep(_POLL_S)
        return self.messages

    def clear(self) -> None:
        """Forget accepted messages and the refusal count (faults stay as they are)."""
        with self._lock:
            self._messages = []
            self._refused = 0
            self._per_recipient = {}
            self._exactly_one = 0
            self._more_than_one = 0

    def stats(self) -> dict[str, Any]:
        """Counts for ``GET /stats``; see the module docstring."""
        with self._lock:
            first = self._messages[0].received_wall if self._messages else None
            last = self._messages[-1].received_wall if self._messages else None
            return {
                "accepted": len(self._messages),
                "refused": self._refused,
                "first_received_at": first,
                "last_received_at": last,
                "recipients": {
                    "distinct": len(self._per_recipient),
                    "exactly_one": self._exactly_one,
                    "more_than_one": self._more_than_one,
                },
            }

    def received(self, limit: int | None = None, offset: int = 0) -> list[dict[str, Any]]:
        """Envelope and timing of accepted messages, for ``GET /received``."""
        with self._lock:
            end = None if limit is None else offset + limit
            window = self._messages[offset:end]
        return [
            {
                "mail_from": m.mail_from,
                "rcpt_tos": m.rcpt_tos,
                "received_at": m.received_wall,
                "received_monotonic": m.received_at,
            }
            for m in window
        ]

    # -- faults ----------------------------------------------------------------------------

    def refuse(
        self,
        code: int = 451,
        message: str = "4.3.0 Try again later",
        times: int | None = None,
        duration_s: float | None = None,
        recipients: Sequence[str] | None = None,
    ) -> None:
        """Answer ``code message`` at DATA, or at RCPT for the given ``recipients`` only.

        Lasts for ``times`` refusals, for ``duration_s`` seconds, or (with neither) until
        :meth:`accept`; with both, whichever ends first. Replaces any earlier refusal.
        """
        if not 400 <= code <= 599:
            raise ValueError(f"a refusal needs a 4xx or 5xx code, not {code}")
        if "\r" in message or "\n" in message:
            raise ValueError("the refusal message must be a single line")
        if times is not None and times < 1:
            raise ValueError(f"times must be at least 1, not {times}")
        if duration_s is not None and duration_s <= 0:
            raise ValueError(f"duration_s must be positive, not {duration_s}")
        refusal = _Refusal(
            status=f"{code} {message}".rstrip(),
            remaining=times,
            deadline=None if duration_s is None else time.monotonic() + duration_s,
            recipients=None if recipients is None else frozenset(map(_normalise, recipients)),
        )
        with self._lock:
            self._refusal = refusal

    def accept(self) -> None:
        """Stop refusing. (Slowness is separate: ``slow(0)``.)"""
        with self._lock:
            self._refusal = None

    def slow(self, delay_s: float) -> None:
        """Wait ``delay_s`` before answering each DATA; 0 answers at once again."""
        if delay_s < 0:
            raise ValueError(f"delay_s must not be negative, not {delay_s}")
        self._delay_s = float(delay_s)

    # -- internals -------------------------------------------------------------------------

    def _timed_out(self, count: int, timeout_s: float) -> None:
        with self._lock:
            arrived, refused = len(self._messages), self._refused
        raise AssertionError(
            f"expected {count} message(s) at the SMTP sink within {timeout_s}s, "
            f"but {arrived} arrived ({refused} refused)"
        )

    def _take_refusal(self, recipient: str | None) -> str | None:
        """The status to answer instead of 250, or None; ``recipient`` None means DATA."""
        if self._refusal is None:
            return None
        with self._lock:
            refusal = self._refusal
            if refusal is None:
                return None
            if refusal.deadline is not None and time.monotonic() >= refusal.deadline:
                self._refusal = None
                return None
            if refusal.recipients is None:
                # Refusing everything happens at DATA, so RCPT always passes.
                if recipient is not None:
                    return None
            elif recipient is None or _normalise(recipient) not in refusal.recipients:
                return None
            if refusal.remaining is not None:
                refusal.remaining -= 1
                if refusal.remaining <= 0:
                    self._refusal = None
            self._refused += 1
            return refusal.status

    def _record(self, mail: ReceivedMail) -> None:
        with self._lock:
            self._messages.append(mail)
            per_recipient = self._per_recipient
            for rcpt in mail.rcpt_tos:
                key = _normalise(rcpt)
                seen = per_recipient.get(key, 0) + 1
                per_recipient[key] = seen
                # Kept up to date here so that /stats stays O(1) at 100,000 recipients.
                if seen == 1:
                    self._exactly_one += 1
                elif seen == 2:
                    self._exactly_one -= 1
                    self._more_than_one += 1

    def _authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: object,
    ) -> AuthResult:
        if (
            self.auth is not None
            and isinstance(auth_data, LoginPassword)
            and auth_data.login.decode("utf-8", "replace") == self.auth[0]
            and auth_data.password.decode("utf-8", "replace") == self.auth[1]
        ):
            return AuthResult(success=True, auth_data=auth_data)
        # handled=False makes aiosmtpd answer 535 itself; with the default (handled=True)
        # it would send nothing and leave the client waiting.
        return AuthResult(success=False, handled=False)

    def _make_session(self) -> _SinkSMTP:
        kwargs: dict[str, Any] = {
            "hostname": SERVER_NAME,
            "enable_SMTPUTF8": True,
            "loop": self._loop,
        }
        if self.auth is not None:
            # Tests and benchmarks talk plain text on loopback; aiosmtpd would otherwise
            # refuse AUTH without STARTTLS.
            kwargs["auth_require_tls"] = False
            kwargs["authenticator"] = self._authenticate
        return _SinkSMTP(self._handler, self._connections, **kwargs)

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError("SmtpSink is not started")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(CONTROL_TIMEOUT_S)

    async def _listen(self) -> None:
        if self._server is not None:
            return
        loop = asyncio.get_running_loop()
        try:
            server = await loop.create_server(
                self._make_session, host=HOST, port=self._port or 0, reuse_address=True
            )
        except OSError as exc:
            message = f"SMTP sink cannot listen on {HOST}:{self._port}: {exc}"
            raise OSError(exc.errno, message) from exc
        self._server = server
        self._port = server.sockets[0].getsockname()[1]

    async def _go_away(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        for session in list(self._connections):
            transport = session.transport
            if isinstance(transport, asyncio.Transport):
                transport.abort()
        # abort() reports connection_lost on a later loop iteration; waiting for it means no
        # session or socket outlives go_away()/stop() (ResourceWarnings in the tests).
        deadline = time.monotonic() + CONTROL_TIMEOUT_S / 2
        while self._connections and time.monotonic() < deadline:
            await asyncio.sleep(0.001)

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(CONTROL_TIMEOUT_S)
        self._loop = self._thread = None
        self._server = None


# -- process mode ----------------------------------------------------------------------------


class _ControlServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, sink: SmtpSink, port: int) -> None:
        super().__init__((HOST, port), _ControlHandler)
        self.sink = sink

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}"


class _ControlHandler(BaseHTTPRequestHandler):
    server: _ControlServer

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        sink = self.server.sink
        if parts.path == "/stats":
            self._reply(200, sink.stats())
        elif parts.path == "/received":
            query = parse_qs(parts.query)
            try:
                limit = int(query["limit"][0]) if "limit" in query else None
                offset = int(query["offset"][0]) if "offset" in query else 0
                if (limit is not None and limit < 0) or offset < 0:
                    raise ValueError("negative")
            except ValueError:
                self._reply(400, {"error": "limit and offset must be non-negative integers"})
                return
            self._reply(200, {"total": sink.count(), "received": sink.received(limit, offset)})
        else:
            self._reply(404, {"error": f"no such resource: {parts.path}"})

    def do_POST(self) -> None:
        if urlsplit(self.path).path == "/reset":
            self.server.sink.clear()
            self._reply(200, {"reset": True})
        else:
            self._reply(404, {"error": f"no such resource: {self.path}"})

    def log_message(self, format: str, *args: Any) -> None:
        # One stderr line per poll would drown the benchmark's own output.
        return

    def _reply(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _parse_auth(value: str) -> tuple[str, str]:
    user, sep, password = value.partition(":")
    if not sep or not user:
        raise argparse.ArgumentTypeError("expected USER:PASS")
    return user, password


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.smtp",
        description="Run PubWatch's recording SMTP sink until SIGTERM/SIGINT.",
    )
    parser.add_argument("--port", type=int, default=0, help="SMTP port (0: pick a free one)")
    parser.add_argument(
        "--control-port", type=int, default=None, help="HTTP control port (0: pick a free one)"
    )
    parser.add_argument("--auth", type=_parse_auth, default=None, metavar="USER:PASS")
    parser.add_argument("--keep-raw", action="store_true", help="keep message bodies in memory")
    args = parser.parse_args(argv)

    # aiosmtpd logs a deprecation warning for every authenticated session; at benchmark
    # volumes that is megabytes of stderr.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    stopping = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    with SmtpSink(args.port or None, auth=args.auth, keep_raw=args.keep_raw) as sink:
        control = None if args.control_port is None else _ControlServer(sink, args.control_port)
        control_thread = None
        if control is not None:
            control_thread = threading.Thread(
                target=control.serve_forever, name="smtp-sink-control", daemon=True
            )
            control_thread.start()
        try:
            # Both servers are listening before the first line appears, so a reader may use
            # either as soon as it has read it.
            print(sink.url, flush=True)
            if control is not None:
                print(control.url, flush=True)
            # A timed wait, so that the signal handler gets to run promptly.
            while not stopping.wait(0.2):
                pass
        finally:
            if control is not None and control_thread is not None:
                control.shutdown()
                control.server_close()
                control_thread.join(CONTROL_TIMEOUT_S)
    return 0


if __name__ == "__main__":
    sys.exit(main())
