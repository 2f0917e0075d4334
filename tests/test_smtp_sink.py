"""The recording SMTP sink, exercised over real sockets with the client notify uses."""

from __future__ import annotations

import asyncio
import http.client
import json
import signal
import socket
import sys
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiosmtplib
import pytest

from tests.fakes.smtp import SmtpSink

REPO_ROOT = Path(__file__).resolve().parent.parent
SEND_TIMEOUT_S = 5.0


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as server:
        yield server


def _mail(*to: str, subject: str = "New evidence on asthma") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "PubWatch <alerts@pubwatch.test>"
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message.set_content("Ein neuer Übersichtsartikel ist erschienen.\n")
    return message


async def _send(sink: SmtpSink, message: EmailMessage, **kwargs: Any) -> Any:
    return await aiosmtplib.send(
        message, hostname=sink.host, port=sink.port, timeout=SEND_TIMEOUT_S, **kwargs
    )


async def test_accepted_messages_are_recorded_and_parse(sink: SmtpSink) -> None:
    before = time.monotonic()
    await _send(sink, _mail("Ann@Example.org", "bob@example.org"))
    await _send(sink, _mail("bob@example.org", subject="Second"))

    first, second = sink.wait_for(2)

    assert first.mail_from == "alerts@pubwatch.test"
    assert first.rcpt_tos == ["Ann@Example.org", "bob@example.org"]
    assert first.message["Subject"] == "New evidence on asthma"
    body = first.message.get_body(("plain",))
    assert body is not None
    # Parsed from the wire bytes as they are, so text keeps SMTP's CRLF line endings.
    assert body.get_content() == "Ein neuer Übersichtsartikel ist erschienen.\r\n"
    assert first.raw.startswith(b"From: PubWatch <alerts@pubwatch.test>")
    assert before <= first.received_at <= second.received_at <= time.monotonic()
    assert first.login is None
    assert sink.count() == 2
    assert sink.refused_count == 0
    assert [m.message["Subject"] for m in sink.messages_to("BOB@example.org")] == [
        "New evidence on asthma",
        "Second",
    ]
    assert sink.messages_to("ann@example.org") == [first]
    assert sink.stats()["recipients"] == {"distinct": 2, "exactly_one": 1, "more_than_one": 1}

    sink.clear()
    assert sink.messages == []
    assert sink.count() == 0


async def test_wait_for_says_how_many_arrived(sink: SmtpSink) -> None:
    await _send(sink, _mail("ann@example.org"))

    with pytest.raises(AssertionError, match=r"expected 2 message\(s\).* but 1 arrived"):
        sink.wait_for(2, timeout_s=0.05)
    assert len(await sink.wait_for_async(1)) == 1


async def test_451_at_data_until_accept(sink: SmtpSink) -> None:
    sink.refuse(451, "4.3.0 Try again later")

    for _ in range(2):
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await _send(sink, _mail("ann@example.org"))
        assert isinstance(refused.value, aiosmtplib.SMTPResponseException)
        assert refused.value.code == 451
        assert "4.3.0 Try again later" in refused.value.message

    sink.accept()
    await _send(sink, _mail("ann@example.org"))
    assert sink.count() == 1
    assert sink.refused_count == 2


async def test_refusal_for_a_number_of_messages(sink: SmtpSink) -> None:
    sink.refuse(452, "4.3.1 Insufficient system storage", times=2)

    codes = []
    for _ in range(3):
        try:
            await _send(sink, _mail("ann@example.org"))
            codes.append(250)
        except aiosmtplib.SMTPResponseException as exc:
            codes.append(exc.code)

    assert codes == [452, 452, 250]
    assert (sink.count(), sink.refused_count) == (1, 2)


async def test_550_for_one_recipient_is_a_hard_bounce(sink: SmtpSink) -> None:
    sink.refuse(550, "5.1.1 User unknown", recipients=["gone@example.org"])

    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await _send(sink, _mail("Gone@Example.org"))
    [bounce] = refused.value.recipients
    assert (bounce.code, bounce.recipient) == (550, "Gone@Example.org")
    assert "5.1.1 User unknown" in bounce.message

    # The other recipient of a shared message still gets it; only the bounce is reported.
    errors, _ = await _send(sink, _mail("gone@example.org", "ann@example.org"))
    assert errors["gone@example.org"].code == 550

    [delivered] = sink.wait_for(1)
    assert delivered.rcpt_tos == ["ann@example.org"]
    assert sink.messages_to("gone@example.org") == []
    assert sink.refused_count == 2


async def test_refusal_for_a_duration_ends_by_itself(sink: SmtpSink) -> None:
    sink.refuse(421, "4.7.0 Busy", duration_s=0.3)

    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        await _send(sink, _mail("ann@example.org"))
    assert refused.value.code == 421

    await asyncio.sleep(0.35)
    await _send(sink, _mail("ann@example.org"))
    assert (sink.count(), sink.refused_count) == (1, 1)


async def test_go_away_refuses_connections_and_come_back_uses_the_same_port(
    sink: SmtpSink,
) -> None:
    port = sink.port
    open_client = aiosmtplib.SMTP(hostname=sink.host, port=port, timeout=SEND_TIMEOUT_S)
    await open_client.connect()
    try:
        sink.go_away()

        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((sink.host, port), timeout=1).close()
        with pytest.raises(aiosmtplib.SMTPConnectError):
            await _send(sink, _mail("ann@example.org"))
        # The connection that was open when the server went away is gone too.
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await open_client.send_message(_mail("ann@example.org"))
    finally:
        open_client.close()

    sink.come_back()
    assert sink.port == port
    await _send(sink, _mail("ann@example.org"))
    assert sink.count() == 1


async def test_slow_data_answer_stalls_the_client(sink: SmtpSink) -> None:
    sink.slow(0.5)

    with pytest.raises(aiosmtplib.SMTPTimeoutError):
        await aiosmtplib.send(
            _mail("ann@example.org"), hostname=sink.host, port=sink.port, timeout=0.1
        )
    # The client hung up before the answer, so the server never accepted the message.
    await asyncio.sleep(0.5)
    assert sink.count() == 0

    sink.slow(0)
    await _send(sink, _mail("ann@example.org"))
    assert sink.count() == 1


async def test_auth_with_the_credentials_from_the_url() -> None:
    with SmtpSink(auth=("pubwatch", "s3cret:/@")) as sink:
        url = urlsplit(sink.url)
        assert (url.scheme, url.hostname, url.port) == ("smtp", "127.0.0.1", sink.port)
        assert url.username is not None
        assert url.password is not None

        await _send(
            sink,
            _mail("ann@example.org"),
            username=unquote(url.username),
            password=unquote(url.password),
        )
        [mail] = sink.wait_for(1)
        assert mail.login == "pubwatch"

        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as wrong:
            await _send(sink, _mail("ann@example.org"), username="pubwatch", password="guess")
        assert wrong.value.code == 535

        with pytest.raises(aiosmtplib.SMTPSenderRefused) as anonymous:
            await _send(sink, _mail("ann@example.org"))
        assert anonymous.value.code == 530
        assert sink.count() == 1


def _http(port: int, method: str, path: str) -> Any:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        assert response.status == 200, response.read()
        return json.loads(response.read())
    finally:
        connection.close()


async def _read_line(stream: asyncio.StreamReader | None) -> str:
    assert stream is not None
    return (await asyncio.wait_for(stream.readline(), timeout=10)).decode().strip()


@pytest.mark.slow
async def test_process_mode_reports_over_http_and_stops_cleanly() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fakes.smtp",
        "--port",
        "0",
        "--control-port",
        "0",
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        smtp_url = urlsplit(await _read_line(process.stdout))
        control = urlsplit(await _read_line(process.stdout))
        assert (smtp_url.scheme, smtp_url.hostname) == ("smtp", "127.0.0.1")
        assert smtp_url.port is not None
        assert control.port is not None

        wall_before = time.time()
        await aiosmtplib.send(
            _mail("ann@example.org"),
            hostname="127.0.0.1",
            port=smtp_url.port,
            timeout=SEND_TIMEOUT_S,
        )
        stats = await asyncio.to_thread(_http, control.port, "GET", "/stats")
        assert stats["accepted"] == 1
        assert stats["refused"] == 0
        assert wall_before <= stats["first_received_at"] == stats["last_received_at"]
        assert stats["last_received_at"] <= time.time()
        assert stats["recipients"] == {"distinct": 1, "exactly_one": 1, "more_than_one": 0}

        received = await asyncio.to_thread(_http, control.port, "GET", "/received?limit=5")
        assert received["total"] == 1
        [entry] = received["received"]
        assert entry["rcpt_tos"] == ["ann@example.org"]
        assert entry["received_at"] == stats["first_received_at"]

        await asyncio.to_thread(_http, control.port, "POST", "/reset")
        stats = await asyncio.to_thread(_http, control.port, "GET", "/stats")
        assert (stats["accepted"], stats["first_received_at"]) == (0, None)

        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=10)
        assert process.returncode == 0, stderr.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()
