"""The fake Twilio Messages API: each rule over real HTTP, the real twilio SDK against it,
signed callbacks and webhooks, and agreement with Twilio's own OpenAPI description."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from tests.fakes.http_thread import ServedApp
from tests.fakes.twilio import (
    ACCEPTED_PARAMETERS,
    CALLBACK_STATUSES,
    GSM7_BASIC,
    GSM7_EXTENSION,
    MESSAGING_SERVICE_SID_RE,
    PARAMETER_CHECKS,
    REQUIRED_PARAMETERS,
    SERVICE_POOL_NUMBER,
    EnumCheck,
    FakeTwilio,
    count_segments,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
TWILIO_SPEC = REPO_ROOT.parent / "shared" / "specs" / "twilio_api_v2010.json"
MESSAGES_PATH = "/2010-04-01/Accounts/{AccountSid}/Messages.json"

SENDER = "+15005550001"
RECIPIENT = "+15005550006"
SERVICE_SID = "MG" + "ab" * 16
# twilio's AsyncTwilioHttpClient passes aiohttp (3.14) a BasicAuth ``auth=``, which aiohttp
# deprecates twice over; those warnings are about the SDK's code, so only they are let through.
IGNORE_SDK_BASIC_AUTH = pytest.mark.filterwarnings(
    "ignore:BasicAuth is deprecated:DeprecationWarning"
)
IGNORE_SDK_AUTH_PARAMETER = pytest.mark.filterwarnings(
    "ignore:The 'auth' parameter is deprecated:DeprecationWarning"
)


# ---- helpers -------------------------------------------------------------------------


@pytest.fixture
def make_fake() -> Iterator[Callable[..., FakeTwilio]]:
    started: list[FakeTwilio] = []

    def make(**knobs: Any) -> FakeTwilio:
        fake = FakeTwilio(**knobs)
        fake.start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        fake.stop()


@pytest.fixture
def own_fake(make_fake: Callable[..., FakeTwilio]) -> FakeTwilio:
    """A fake of the test's own, for tests that inject faults or change knobs."""
    return make_fake()


@pytest.fixture(scope="module")
def shared_server() -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        yield fake


@pytest.fixture
def fake(shared_server: FakeTwilio) -> FakeTwilio:
    """One server, its log cleared, for the tests that change no knob: starting and
    stopping one per test would take most of this file's run time."""
    shared_server.reset()
    return shared_server


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0, trust_env=False) as client:
        yield client


def send(http: httpx.Client, fake: FakeTwilio, **params: Any) -> httpx.Response:
    """POST a create-message request with the fake's credentials; ``params`` as Twilio's."""
    data = {"To": RECIPIENT, "From": SENDER, "Body": "New evidence on your topic."}
    data.update(params)
    data = {name: value for name, value in data.items() if value is not None}
    return http.post(fake.messages_url, data=data, auth=(fake.account_sid, fake.auth_token))


def assert_twilio_error(response: httpx.Response, status: int, code: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body == {
        "code": code,
        "message": body["message"],
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    assert body["message"]
    return body


class Receiver:
    """A tiny app standing in for PubWatch's webhooks: records every POST it gets."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.app = Starlette(routes=[Route("/{path:path}", self._record, methods=["POST"])])

    async def _record(self, request: Request) -> Response:
        body = (await request.body()).decode()
        self.received.append(
            {
                "url": str(request.url),
                "params": dict(parse_qsl(body, keep_blank_values=True)),
                "signature": request.headers.get("x-twilio-signature"),
                "content_type": request.headers.get("content-type"),
            }
        )
        return Response(status_code=200)


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    recorder = Receiver()
    with ServedApp(recorder.app) as served:
        yield recorder, served.url


async def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# ---- success ---------------------------------------------------------------------------


def test_create_answers_201_with_a_message_resource(fake: FakeTwilio, http: httpx.Client) -> None:
    response = send(http, fake, StatusCallback="https://example.org/status")
    assert response.status_code == 201, response.text
    body = response.json()
    sid = body["sid"]
    assert re.fullmatch(r"SM[0-9a-f]{32}", sid)
    assert body["account_sid"] == fake.account_sid
    assert (body["to"], body["from"], body["messaging_service_sid"]) == (RECIPIENT, SENDER, None)
    assert body["body"] == "New evidence on your topic."
    assert (body["status"], body["direction"], body["api_version"]) == (
        "queued",
        "outbound-api",
        "2010-04-01",
    )
    assert (body["num_segments"], body["num_media"]) == ("1", "0")
    assert (body["price"], body["error_code"], body["error_message"], body["date_sent"]) == (
        None,
        None,
        None,
        None,
    )
    created = parsedate_to_datetime(body["date_created"])
    assert created.utcoffset() == timedelta(0)
    assert body["date_created"].endswith(" +0000")
    uri = f"/2010-04-01/Accounts/{fake.account_sid}/Messages/{sid}.json"
    assert body["uri"] == uri
    assert body["subresource_uris"] == {"media": uri.removesuffix(".json") + "/Media.json"}

    [message] = fake.messages
    assert message["sid"] == sid
    assert message["to"] == RECIPIENT
    assert message["from"] == SENDER
    assert message["body"] == "New evidence on your topic."
    assert message["status_callback"] == "https://example.org/status"
    assert isinstance(message["received_monotonic"], float)
    assert abs((message["received_at"] - created).total_seconds()) < 2
    assert fake.count() == 1
    assert fake.messages_to(RECIPIENT) == [message]
    assert fake.messages_to("+15005550999") == []
    [request] = fake.requests
    assert (request["status"], request["code"], request["fault"]) == (201, None, None)


def test_fetch_gives_the_stored_resource(fake: FakeTwilio, http: httpx.Client) -> None:
    created = send(http, fake).json()
    auth = (fake.account_sid, fake.auth_token)
    fetched = http.get(fake.url + created["uri"], auth=auth)
    assert fetched.status_code == 200
    assert fetched.json() == created
    missing = created["uri"].replace(created["sid"], "SM" + "0" * 32)
    assert_twilio_error(http.get(fake.url + missing, auth=auth), 404, 20404)
    assert_twilio_error(http.get(fake.url + created["uri"]), 401, 20003)


def test_messaging_service_is_accepted_not_queued(fake: FakeTwilio, http: httpx.Client) -> None:
    response = send(http, fake, From=None, MessagingServiceSid=SERVICE_SID)
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["status"], body["from"], body["messaging_service_sid"]) == (
        "accepted",
        None,
        SERVICE_SID,
    )
    assert fake.max_per_second(SERVICE_SID) == 1


def test_media_and_content_templates_need_no_body(fake: FakeTwilio, http: httpx.Client) -> None:
    mms = send(http, fake, Body=None, MediaUrl="https://example.org/chart.png")
    assert mms.status_code == 201, mms.text
    assert re.fullmatch(r"MM[0-9a-f]{32}", mms.json()["sid"])
    assert (mms.json()["num_media"], mms.json()["num_segments"]) == ("1", "1")
    template = send(http, fake, Body=None, ContentSid="HX" + "0" * 32, ContentVariables="{}")
    assert template.status_code == 201, template.text


def test_scheduled_message(fake: FakeTwilio, http: httpx.Client) -> None:
    response = send(
        http,
        fake,
        MessagingServiceSid=SERVICE_SID,
        ScheduleType="fixed",
        SendAt="2031-01-01T09:00:00Z",
    )
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "scheduled"


# ---- authentication and request shape ------------------------------------------------


def test_missing_or_wrong_credentials_get_401_20003(fake: FakeTwilio, http: httpx.Client) -> None:
    data = {"To": RECIPIENT, "From": SENDER, "Body": "x"}
    anonymous = http.post(fake.messages_url, data=data)
    body = assert_twilio_error(anonymous, 401, 20003)
    assert body["message"] == "Authenticate"
    assert anonymous.headers["www-authenticate"].startswith("Basic")
    wrong = http.post(fake.messages_url, data=data, auth=(fake.account_sid, "not-the-token"))
    assert_twilio_error(wrong, 401, 20003)
    garbage = http.post(fake.messages_url, data=data, headers={"Authorization": "Basic !!"})
    assert_twilio_error(garbage, 401, 20003)
    assert fake.count() == 0
    assert [r["status"] for r in fake.requests] == [401, 401, 401]


def test_account_sid_in_path_must_be_the_callers(fake: FakeTwilio, http: httpx.Client) -> None:
    other = fake.messages_url.replace(fake.account_sid, "AC" + "9" * 32)
    response = http.post(
        other,
        data={"To": RECIPIENT, "From": SENDER, "Body": "x"},
        auth=(fake.account_sid, fake.auth_token),
    )
    assert_twilio_error(response, 404, 20404)


def test_body_must_be_form_encoded(fake: FakeTwilio, http: httpx.Client) -> None:
    response = http.post(
        fake.messages_url,
        json={"To": RECIPIENT, "From": SENDER, "Body": "x"},
        auth=(fake.account_sid, fake.auth_token),
    )
    body = assert_twilio_error(response, 400, 20001)
    assert "application/x-www-form-urlencoded" in body["message"]


def test_unknown_parameter_is_named_in_the_400(fake: FakeTwilio, http: httpx.Client) -> None:
    body = assert_twilio_error(send(http, fake, Priority="high"), 400, 20001)
    assert "Unknown parameter 'Priority'" in body["message"]
    assert fake.count() == 0


# ---- the rules with their own codes -------------------------------------------------


@pytest.mark.parametrize(
    ("params", "code"),
    [
        pytest.param({"To": None}, 21604, id="no-To"),
        pytest.param({"To": "  "}, 21604, id="blank-To"),
        pytest.param({"From": None}, 21603, id="no-From-nor-service"),
        pytest.param({"Body": None}, 21602, id="no-Body-media-or-content"),
        pytest.param({"Body": ""}, 21602, id="empty-Body"),
        pytest.param({"Body": "a" * 1601}, 21617, id="Body-over-1600"),
        pytest.param({"From": "+1"}, 21212, id="From-too-short"),
        pytest.param({"From": "bad-sender!"}, 21212, id="From-punctuation"),
        pytest.param({"From": "PUBWATCHNEWS"}, 21212, id="alphanumeric-over-11"),
        pytest.param({"From": "1234"}, 21212, id="four-digit-code"),
        pytest.param({"MessagingServiceSid": "MG123"}, 21701, id="service-sid-short"),
        pytest.param({"MessagingServiceSid": "MG" + "g" * 32}, 21701, id="service-sid-not-hex"),
        pytest.param({"StatusCallback": "not a url"}, 21609, id="callback-not-url"),
        pytest.param({"StatusCallback": "ftp://example.org/cb"}, 21609, id="callback-ftp"),
        pytest.param({"StatusCallback": "https://bad_host.example/cb"}, 21609, id="underscore"),
        pytest.param({"StatusCallback": "http:///cb"}, 21609, id="callback-no-host"),
    ],
)
def test_rule_violations_get_twilios_code(
    fake: FakeTwilio, http: httpx.Client, params: dict[str, Any], code: int
) -> None:
    assert_twilio_error(send(http, fake, **params), 400, code)
    assert fake.count() == 0
    assert fake.requests[-1]["code"] == code


@pytest.mark.parametrize(
    "to",
    [
        "5005550006",
        "+1 500 555 0006",
        "+1-500-555-0006",
        "+05005550006",
        "+1234567",
        "+1234567890123456",
        "whatsapp:+15005550006",
    ],
)
def test_to_must_be_e164(fake: FakeTwilio, http: httpx.Client, to: str) -> None:
    body = assert_twilio_error(send(http, fake, To=to), 400, 21211)
    assert body["message"] == f"The 'To' number {to} is not a valid phone number."


@pytest.mark.parametrize("to", ["+12345678", "+123456789012345"])
def test_to_of_8_and_15_digits_is_fine(fake: FakeTwilio, http: httpx.Client, to: str) -> None:
    assert send(http, fake, To=to).status_code == 201


@pytest.mark.parametrize("sender", ["PubWatch", "PW Alerts", "12345", "+447700900123"])
def test_alphanumeric_ids_and_short_codes_may_send(
    fake: FakeTwilio, http: httpx.Client, sender: str
) -> None:
    assert send(http, fake, From=sender).status_code == 201


def test_body_of_exactly_1600_is_fine(fake: FakeTwilio, http: httpx.Client) -> None:
    response = send(http, fake, Body="a" * 1600)
    assert response.status_code == 201
    assert response.json()["num_segments"] == "11"  # ceil(1600 / 153)


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"ProvideFeedback": "maybe"}, id="boolean"),
        pytest.param({"ValidityPeriod": "0"}, id="validity-below-1"),
        pytest.param({"ValidityPeriod": "36001"}, id="validity-over-36000"),
        pytest.param({"Attempt": "two"}, id="integer"),
        pytest.param({"MaxPrice": "cheap"}, id="number"),
        pytest.param({"ContentRetention": "keep"}, id="enum"),
        pytest.param({"ApplicationSid": "AP123"}, id="application-sid"),
        pytest.param({"ContentSid": "HX" + "z" * 32}, id="content-sid"),
        pytest.param({"SendAt": "tomorrow"}, id="date-time"),
        pytest.param({"MediaUrl": "chart.png"}, id="media-url"),
        pytest.param(
            {"MediaUrl": [f"https://example.org/{i}.png" for i in range(11)]}, id="11-media"
        ),
        pytest.param({"ShortenUrls": "true"}, id="shorten-without-service"),
        pytest.param({"ContentVariables": "{}"}, id="variables-without-content"),
        pytest.param({"ScheduleType": "fixed", "SendAt": "2031-01-01T09:00:00Z"}, id="schedule"),
    ],
)
def test_values_must_have_the_specs_types(
    fake: FakeTwilio, http: httpx.Client, params: dict[str, Any]
) -> None:
    body = assert_twilio_error(send(http, fake, **params), 400, 20001)
    assert any(name in body["message"] for name in params)


def test_scalar_parameter_given_twice_is_refused(fake: FakeTwilio, http: httpx.Client) -> None:
    response = http.post(
        fake.messages_url,
        content="To=%2B15005550006&To=%2B15005550007&From=%2B15005550001&Body=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        auth=(fake.account_sid, fake.auth_token),
    )
    assert_twilio_error(response, 400, 20001)


def test_well_typed_optional_parameters_pass(fake: FakeTwilio, http: httpx.Client) -> None:
    response = send(
        http,
        fake,
        ValidityPeriod="36000",
        ProvideFeedback="true",
        SmartEncoded="False",
        ContentRetention="discard",
        RiskCheck="disable",
        Attempt="2",
        MaxPrice="0.05",
        MessagingServiceSid=SERVICE_SID,
        ShortenUrls="true",
    )
    assert response.status_code == 201, response.text


# ---- segments ------------------------------------------------------------------------


def test_gsm7_tables_are_complete() -> None:
    # 128 code points in the default alphabet, less the escape; 10 in the extension table.
    assert len(GSM7_BASIC) == 127
    assert len(GSM7_EXTENSION) == 10
    assert not GSM7_BASIC & GSM7_EXTENSION
    assert {"@", "£", "¥", "Δ", "Ç", "\n", "¤", "§", "¿", "à"} <= GSM7_BASIC
    assert {"€", "[", "]", "{", "}", "\\", "^", "~", "|", "\f"} == set(GSM7_EXTENSION)


@pytest.mark.parametrize(
    ("body", "segments"),
    [
        pytest.param("", 0, id="empty"),
        pytest.param("a" * 160, 1, id="gsm-160"),
        pytest.param("a" * 161, 2, id="gsm-161"),
        pytest.param("a" * 306, 2, id="gsm-2x153"),
        pytest.param("a" * 307, 3, id="gsm-307"),
        pytest.param("€" * 80, 1, id="extension-counts-double"),
        pytest.param("€" * 81, 2, id="extension-81"),
        pytest.param("a" * 152 + "€" + "a" * 152, 3, id="escape-not-split"),
        pytest.param("Ça coûte 5 £ @ 10:00 — ok", 1, id="em-dash-forces-ucs2"),
        pytest.param("`" * 70, 1, id="backtick-is-not-gsm"),
        pytest.param("`" * 71, 2, id="backtick-71"),
        pytest.param("д" * 70, 1, id="ucs2-70"),
        pytest.param("д" * 71, 2, id="ucs2-71"),
        pytest.param("д" * 134, 2, id="ucs2-2x67"),
        pytest.param("д" * 135, 3, id="ucs2-135"),
        pytest.param("👍" * 35, 1, id="emoji-two-units"),
        pytest.param("👍" * 36, 2, id="emoji-36"),
        pytest.param("д" * 66 + "👍" + "д" * 66, 3, id="surrogate-pair-not-split"),
        pytest.param("ç" * 70, 1, id="lowercase-c-cedilla-is-ucs2"),
        pytest.param("Ç" * 160, 1, id="capital-c-cedilla-is-gsm"),
    ],
)
def test_count_segments(body: str, segments: int) -> None:
    assert count_segments(body) == segments


def test_num_segments_over_http(fake: FakeTwilio, http: httpx.Client) -> None:
    assert send(http, fake, Body="a" * 161).json()["num_segments"] == "2"
    assert send(http, fake, Body="Résumé 👍").json()["num_segments"] == "1"
    assert send(http, fake, Body="😀" * 40).json()["num_segments"] == "2"
    assert [m["num_segments"] for m in fake.messages] == [2, 1, 2]


# ---- scenario knobs ------------------------------------------------------------------


def test_opted_out_and_invalid_numbers(
    make_fake: Callable[..., FakeTwilio], http: httpx.Client
) -> None:
    fake = make_fake(opted_out={"+15005550009"}, invalid={"+15005550002"})
    body = assert_twilio_error(send(http, fake, To="+15005550009"), 400, 21610)
    assert body["message"] == "Attempt to send to unsubscribed recipient"
    body = assert_twilio_error(send(http, fake, To="+15005550002"), 400, 21211)
    assert "+15005550002" in body["message"]
    fake.opted_out.discard("+15005550009")  # knobs can change while it runs
    assert send(http, fake, To="+15005550009").status_code == 201
    assert fake.count() == 1


def test_senders_limits_from_numbers(
    make_fake: Callable[..., FakeTwilio], http: httpx.Client
) -> None:
    fake = make_fake(senders={SENDER})
    assert send(http, fake).status_code == 201
    assert_twilio_error(send(http, fake, From="+15005550003"), 400, 21606)


def test_mps_limit_answers_429_per_sender(
    make_fake: Callable[..., FakeTwilio], http: httpx.Client
) -> None:
    fake = make_fake(mps_limit=2)
    assert [send(http, fake).status_code for _ in range(2)] == [201, 201]
    body = assert_twilio_error(send(http, fake), 429, 20429)
    assert body["message"] == "Too Many Requests"
    assert send(http, fake, From="+15005550003").status_code == 201  # another sender
    assert fake.max_per_second(SENDER) == 2
    # Once the first message is a second old, its place in the window is free again.
    first = fake.messages[0]["received_monotonic"]
    time.sleep(max(0.0, first + 1.02 - time.monotonic()))
    assert send(http, fake).status_code == 201
    assert fake.stats()["rejected"] == {"20429": 1}


async def test_mps_limit_holds_under_concurrent_requests(
    make_fake: Callable[..., FakeTwilio],
) -> None:
    fake = make_fake(mps_limit=5)
    data = {"To": RECIPIENT, "From": SENDER, "Body": "x"}
    async with httpx.AsyncClient(trust_env=False, timeout=5.0) as client:
        responses = await asyncio.gather(
            *(
                client.post(fake.messages_url, data=data, auth=(fake.account_sid, fake.auth_token))
                for _ in range(20)
            )
        )
    assert sorted(r.status_code for r in responses).count(201) == 5
    assert fake.count() == 5
    assert fake.max_per_second(SENDER) == 5


def test_max_per_second_is_over_a_sliding_window(fake: FakeTwilio, http: httpx.Client) -> None:
    for pause_s in (0.0, 0.0, 0.6, 0.0, 0.6):
        time.sleep(pause_s)
        assert send(http, fake).status_code == 201
    # Times ~0, 0, 0.6, 0.6, 1.2: the first four share one second, the last three another.
    assert fake.max_per_second(SENDER) == 4
    assert fake.max_per_second("+15005550003") == 0


def test_stats_and_reset_endpoints(own_fake: FakeTwilio, http: httpx.Client) -> None:
    fake = own_fake
    send(http, fake)
    send(http, fake, To="12")
    fake.inject("500")
    send(http, fake)
    stats = http.get(fake.url + "/_fake/stats").json()
    assert stats == {
        "requests": 3,
        "accepted": 1,
        "rejected": {"21211": 1},
        "faults": {"500": 1},
        "callbacks": 0,
        "max_per_second": {SENDER: 1},
    }
    assert http.post(fake.url + "/_fake/reset").status_code == 200
    assert fake.count() == 0
    assert fake.requests == []
    assert http.get(fake.url + "/_fake/stats").json()["requests"] == 0


# ---- fault injection -----------------------------------------------------------------


@pytest.mark.parametrize(("kind", "code"), [("429", 20429), ("500", 20500), ("503", 20503)])
def test_injected_status_faults(
    own_fake: FakeTwilio, http: httpx.Client, kind: str, code: int
) -> None:
    fake = own_fake
    fake.inject(kind, times=2)
    assert_twilio_error(send(http, fake), int(kind), code)
    assert_twilio_error(send(http, fake), int(kind), code)
    assert send(http, fake).status_code == 201
    assert [(r["status"], r["fault"]) for r in fake.requests] == [
        (int(kind), kind),
        (int(kind), kind),
        (201, None),
    ]
    assert fake.count() == 1


async def test_timeout_fault_hangs_then_answers(make_fake: Callable[..., FakeTwilio]) -> None:
    fake = make_fake(hang_s=0.6)
    fake.inject("timeout")
    data = {"To": RECIPIENT, "From": SENDER, "Body": "x"}
    async with httpx.AsyncClient(trust_env=False, timeout=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(
                fake.messages_url, data=data, auth=(fake.account_sid, fake.auth_token)
            )
    assert fake.count() == 0
    # Like a slow Twilio, the message was taken all the same: a retry would duplicate it.
    await wait_until(lambda: len(fake.requests) == 1, timeout_s=3.0)
    assert fake.count() == 1
    assert (fake.requests[0]["fault"], fake.requests[0]["status"]) == ("timeout", 201)


def test_stop_cuts_a_hanging_answer_short(make_fake: Callable[..., FakeTwilio]) -> None:
    fake = make_fake(hang_s=30.0)
    fake.inject("timeout")
    with httpx.Client(trust_env=False, timeout=0.2) as client, pytest.raises(httpx.ReadTimeout):
        send(client, fake)
    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 3.0


def test_reset_fault_drops_the_connection(own_fake: FakeTwilio, http: httpx.Client) -> None:
    fake = own_fake
    fake.inject("reset")
    with pytest.raises(httpx.TransportError):
        send(http, fake)
    assert fake.count() == 0
    assert fake.requests[-1]["status"] is None
    assert fake.requests[-1]["fault"] == "reset"
    assert send(http, fake).status_code == 201  # the server itself is fine


def _statuses_with_rate(fake: FakeTwilio, http: httpx.Client, seed: int) -> list[int]:
    fake.reset()
    fake.fault_rate(0.5, kinds=("500", "503"), seed=seed)
    return [send(http, fake).status_code for _ in range(40)]


def test_fault_rate_is_a_repeatable_fraction(own_fake: FakeTwilio, http: httpx.Client) -> None:
    fake = own_fake
    first = _statuses_with_rate(fake, http, seed=7)
    assert 10 <= sum(status != 201 for status in first) <= 30
    assert set(first) == {201, 500, 503}
    assert _statuses_with_rate(fake, http, seed=7) == first
    fake.inject("429")  # queued faults come before the random ones
    assert send(http, fake).status_code == 429
    fake.fault_rate(0)
    assert {send(http, fake).status_code for _ in range(10)} == {201}


def test_unknown_fault_kind_is_refused(own_fake: FakeTwilio) -> None:
    fake = own_fake
    with pytest.raises(ValueError, match="fault kinds"):
        fake.inject("slow")
    with pytest.raises(ValueError, match="fault kinds"):
        fake.fault_rate(0.1, kinds=("500", "boom"))


# ---- the real twilio SDK -------------------------------------------------------------


@IGNORE_SDK_BASIC_AUTH
@IGNORE_SDK_AUTH_PARAMETER
async def test_twilio_sdk_creates_a_message(fake: FakeTwilio) -> None:
    http_client = AsyncTwilioHttpClient()
    try:
        client = Client(fake.account_sid, fake.auth_token, http_client=http_client)
        client.api.base_url = fake.url
        message = await client.messages.create_async(
            to=RECIPIENT,
            from_=SENDER,
            body="New evidence on your topic.",
            status_callback="https://example.org/status",
            validity_period=600,
        )
        assert re.fullmatch(r"SM[0-9a-f]{32}", message.sid)
        assert (message.status, message.to, message.from_) == ("queued", RECIPIENT, SENDER)
        assert message.num_segments == "1"
        assert message.date_created.year >= 2024
        assert message.error_code is None
        service_message = await client.messages.create_async(
            to=RECIPIENT, messaging_service_sid=SERVICE_SID, body="x"
        )
        assert service_message.status == "accepted"
    finally:
        await http_client.close()
    assert [m["sid"] for m in fake.messages] == [message.sid, service_message.sid]


@IGNORE_SDK_BASIC_AUTH
@IGNORE_SDK_AUTH_PARAMETER
async def test_twilio_sdk_raises_with_twilios_codes(make_fake: Callable[..., FakeTwilio]) -> None:
    fake = make_fake(opted_out={"+15005550009"})
    http_client = AsyncTwilioHttpClient()
    try:
        client = Client(fake.account_sid, fake.auth_token, http_client=http_client)
        client.api.base_url = fake.url
        with pytest.raises(TwilioRestException) as invalid:
            await client.messages.create_async(to="5005550006", from_=SENDER, body="x")
        assert (invalid.value.status, invalid.value.code) == (400, 21211)
        with pytest.raises(TwilioRestException) as stopped:
            await client.messages.create_async(to="+15005550009", from_=SENDER, body="x")
        assert (stopped.value.status, stopped.value.code) == (400, 21610)
        fake.inject("429")
        with pytest.raises(TwilioRestException) as limited:
            await client.messages.create_async(to=RECIPIENT, from_=SENDER, body="x")
        assert (limited.value.status, limited.value.code) == (429, 20429)
    finally:
        await http_client.close()


# ---- status callbacks ----------------------------------------------------------------


async def test_status_callbacks_are_signed_and_complete(
    make_fake: Callable[..., FakeTwilio], http: httpx.Client, receiver: tuple[Receiver, str]
) -> None:
    recorder, base = receiver
    fake = make_fake(undeliverable={"+15005550007": 30003, "+15005550008": 30034})
    ok_url = f"{base}/twilio/status?subscriber=42"
    ok = send(http, fake, StatusCallback=ok_url).json()
    lost = send(http, fake, To="+15005550007", StatusCallback=f"{base}/twilio/status").json()
    failed = send(http, fake, To="+15005550008", StatusCallback=f"{base}/twilio/status").json()
    send(http, fake, To="+15005550004")  # asked for no callback

    assert await fake.send_status_callbacks() == 5
    by_sid: dict[str, list[dict[str, Any]]] = {}
    for callback in recorder.received:
        by_sid.setdefault(callback["params"]["MessageSid"], []).append(callback)
    validator = RequestValidator(fake.auth_token)
    for callback in recorder.received:
        assert callback["content_type"] == "application/x-www-form-urlencoded"
        assert validator.validate(callback["url"], callback["params"], callback["signature"])
        tampered = dict(callback["params"], MessageStatus="read")
        assert not validator.validate(callback["url"], tampered, callback["signature"])

    first, second = by_sid[ok["sid"]]
    assert first["url"] == ok_url
    assert first["params"] == {
        "AccountSid": fake.account_sid,
        "ApiVersion": "2010-04-01",
        "From": SENDER,
        "MessageSid": ok["sid"],
        "MessageStatus": "sent",
        "SmsSid": ok["sid"],
        "SmsStatus": "sent",
        "To": RECIPIENT,
    }
    assert second["params"]["MessageStatus"] == "delivered"
    assert "ErrorCode" not in second["params"]
    lost_statuses = [
        (c["params"]["MessageStatus"], c["params"].get("ErrorCode")) for c in by_sid[lost["sid"]]
    ]
    assert lost_statuses == [("sent", None), ("undelivered", "30003")]
    failed_statuses = [
        (c["params"]["MessageStatus"], c["params"].get("ErrorCode")) for c in by_sid[failed["sid"]]
    ]
    assert failed_statuses == [("failed", "30034")]

    # The fake's own state follows: fetch and the log show the final status.
    auth = (fake.account_sid, fake.auth_token)
    fetched = http.get(fake.url + lost["uri"], auth=auth).json()
    assert (fetched["status"], fetched["error_code"]) == ("undelivered", 30003)
    assert fetched["date_sent"] is not None
    assert {m["sid"]: m["status"] for m in fake.messages}[ok["sid"]] == "delivered"
    assert [c["response_status"] for c in fake.callbacks] == [200] * 5
    # Nothing is sent twice.
    assert await fake.send_status_callbacks() == 0
    assert len(recorder.received) == 5


async def test_callbacks_for_a_messaging_service_name_the_pool_sender(
    fake: FakeTwilio, http: httpx.Client, receiver: tuple[Receiver, str]
) -> None:
    recorder, base = receiver
    send(http, fake, From=None, MessagingServiceSid=SERVICE_SID, StatusCallback=f"{base}/s")
    assert await fake.send_status_callbacks(statuses=("sent",)) == 1
    [callback] = recorder.received
    assert callback["params"]["From"] == SERVICE_POOL_NUMBER
    assert callback["params"]["MessagingServiceSid"] == SERVICE_SID
    assert RequestValidator(fake.auth_token).validate(
        callback["url"], callback["params"], callback["signature"]
    )


async def test_auto_callbacks_follow_each_message(
    make_fake: Callable[..., FakeTwilio], http: httpx.Client, receiver: tuple[Receiver, str]
) -> None:
    recorder, base = receiver
    fake = make_fake(auto_callbacks=True, callback_delay_s=0.01)
    sid = send(http, fake, StatusCallback=f"{base}/status").json()["sid"]
    await fake.wait_for_callbacks(2)
    await wait_until(lambda: len(recorder.received) == 2)
    assert [c["params"]["MessageStatus"] for c in recorder.received] == ["sent", "delivered"]
    assert {c["params"]["MessageSid"] for c in recorder.received} == {sid}


async def test_unreachable_callback_url_is_logged(fake: FakeTwilio, http: httpx.Client) -> None:
    with ServedApp(Starlette()) as gone:
        dead_url = gone.url + "/status"
    send(http, fake, StatusCallback=dead_url)
    assert await fake.send_status_callbacks(statuses=("sent",), timeout_s=1.0) == 1
    [callback] = fake.callbacks
    assert callback["response_status"] is None
    assert "ConnectError" in callback["error"]


# ---- signing and inbound webhooks ----------------------------------------------------


def test_sign_matches_twilios_validator(fake: FakeTwilio) -> None:
    url = "https://pubwatch.example/twilio/inbound?x=1"
    params = {"Body": "STOP", "From": RECIPIENT, "To": SENDER, "AccountSid": fake.account_sid}
    signature = fake.sign(url, params)
    assert signature == RequestValidator(fake.auth_token).compute_signature(url, params)
    assert RequestValidator(fake.auth_token).validate(url, params, signature)
    assert not RequestValidator("another-token").validate(url, params, signature)
    # A repeated parameter contributes each of its values, sorted.
    expected = base64.b64encode(
        hmac.new(
            fake.auth_token.encode(), (url + "MediaUrlaMediaUrlb").encode(), hashlib.sha1
        ).digest()
    ).decode()
    assert fake.sign(url, {"MediaUrl": ["b", "a"]}) == expected


def test_inbound_message_params(fake: FakeTwilio) -> None:
    params = fake.inbound_message_params(RECIPIENT, SENDER, "HELP")
    assert re.fullmatch(r"SM[0-9a-f]{32}", params["MessageSid"])
    assert params == {
        "AccountSid": fake.account_sid,
        "ApiVersion": "2010-04-01",
        "Body": "HELP",
        "From": RECIPIENT,
        "MessageSid": params["MessageSid"],
        "NumMedia": "0",
        "NumSegments": "1",
        "SmsMessageSid": params["MessageSid"],
        "SmsSid": params["MessageSid"],
        "SmsStatus": "received",
        "To": SENDER,
    }
    with_service = fake.inbound_message_params(
        RECIPIENT, SENDER, "YES", messaging_service_sid=SERVICE_SID
    )
    assert with_service["MessagingServiceSid"] == SERVICE_SID


async def test_signed_inbound_keywords_and_twilios_opt_out(
    own_fake: FakeTwilio, http: httpx.Client, receiver: tuple[Receiver, str]
) -> None:
    fake = own_fake
    recorder, base = receiver
    url = f"{base}/twilio/inbound"
    validator = RequestValidator(fake.auth_token)

    response = await fake.post_inbound(url, RECIPIENT, SENDER, " stop ")
    assert response.status_code == 200
    assert RECIPIENT in fake.opted_out
    assert_twilio_error(send(http, fake), 400, 21610)

    await fake.post_inbound(url, RECIPIENT, SENDER, "HELP")
    assert RECIPIENT in fake.opted_out
    await fake.post_inbound(url, RECIPIENT, SENDER, "YES")
    assert RECIPIENT not in fake.opted_out
    assert send(http, fake).status_code == 201

    assert [c["params"]["Body"] for c in recorder.received] == [" stop ", "HELP", "YES"]
    for callback in recorder.received:
        assert callback["url"] == url
        assert validator.validate(callback["url"], callback["params"], callback["signature"])


# ---- as a process --------------------------------------------------------------------


def test_runs_as_its_own_process() -> None:
    command = [sys.executable, "-m", "tests.fakes.twilio", "--port", "0", "--mps-limit", "1"]
    with subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None
            ready, _, _ = select.select([process.stdout], [], [], 20.0)
            assert ready, "the fake printed no URL in time"
            url = process.stdout.readline().strip()
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url), url
            fake_path = MESSAGES_PATH.replace("{AccountSid}", FakeTwilio().account_sid)
            auth = (FakeTwilio().account_sid, FakeTwilio().auth_token)
            data = {"To": RECIPIENT, "From": SENDER, "Body": "x"}
            with httpx.Client(trust_env=False, timeout=5.0) as client:
                statuses = [
                    client.post(url + fake_path, data=data, auth=auth).status_code for _ in range(2)
                ]
                assert statuses == [201, 429]
                stats = client.get(url + "/_fake/stats").json()
                assert (stats["accepted"], stats["rejected"]) == (1, {"20429": 1})
                assert stats["max_per_second"] == {SENDER: 1}
                assert client.post(url + "/_fake/reset").status_code == 200
                assert client.get(url + "/_fake/stats").json()["accepted"] == 0
        finally:
            process.terminate()
            _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr


# ---- agreement with Twilio's OpenAPI description ------------------------------------


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    if not TWILIO_SPEC.exists():
        pytest.skip(f"Twilio's OpenAPI file {TWILIO_SPEC} is absent (it sits beside the checkout)")
    loaded: dict[str, Any] = json.loads(TWILIO_SPEC.read_text())
    return loaded


def _schema(spec: dict[str, Any], ref: str) -> dict[str, Any]:
    schema: dict[str, Any] = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return schema


def _create_request_schema(spec: dict[str, Any]) -> dict[str, Any]:
    post = spec["paths"][MESSAGES_PATH]["post"]
    schema: dict[str, Any] = post["requestBody"]["content"]["application/x-www-form-urlencoded"][
        "schema"
    ]
    assert schema["title"] == "CreateMessageRequest"
    return schema


def _message_schema(spec: dict[str, Any]) -> dict[str, Any]:
    post = spec["paths"][MESSAGES_PATH]["post"]
    return _schema(spec, post["responses"]["201"]["content"]["application/json"]["schema"]["$ref"])


def test_201_body_has_exactly_the_specs_message_properties(
    spec: dict[str, Any], fake: FakeTwilio, http: httpx.Client
) -> None:
    properties = _message_schema(spec)["properties"]
    for params in ({}, {"From": None, "MessagingServiceSid": SERVICE_SID}):
        body = send(http, fake, **params).json()
        assert set(body) == set(properties)
        for name, value in body.items():
            prop = properties[name]
            if "$ref" in prop:
                assert value in _schema(spec, prop["$ref"])["enum"], name
                continue
            if value is None:
                assert prop.get("nullable"), name
                continue
            python_type = {"string": str, "integer": int, "object": dict}[prop["type"]]
            assert isinstance(value, python_type), name
            if "pattern" in prop:
                assert re.match(prop["pattern"], str(value)), name


def test_accepted_parameters_are_the_specs(spec: dict[str, Any]) -> None:
    schema = _create_request_schema(spec)
    spec_parameters = set(schema["properties"])
    assert spec_parameters >= ACCEPTED_PARAMETERS, ACCEPTED_PARAMETERS - spec_parameters
    assert spec_parameters - ACCEPTED_PARAMETERS == set(), "the fake would refuse these"
    assert set(schema["required"]) == REQUIRED_PARAMETERS == {"To"}


def test_parameter_checks_follow_the_spec(spec: dict[str, Any]) -> None:
    properties = _create_request_schema(spec)["properties"]
    for name, check in PARAMETER_CHECKS.items():
        prop = properties[name]
        if isinstance(check, EnumCheck):
            assert list(check.choices) == _schema(spec, prop["$ref"])["enum"], name
        elif prop.get("pattern") and name != "MessagingServiceSid":
            prefix = prop["pattern"][1:3]
            assert check(prefix + "a" * 32) is None, name
            assert check(prefix + "a" * 31) is not None, name
        elif prop.get("type") == "boolean":
            assert check("true") is None, name
            assert check("yes") is not None, name
        elif prop.get("type") == "integer":
            assert check("1") is None, name
            assert check("1.5") is not None, name
    assert properties["MessagingServiceSid"]["pattern"] == MESSAGING_SERVICE_SID_RE.pattern


def test_required_rules_match_the_spec(
    spec: dict[str, Any], fake: FakeTwilio, http: httpx.Client
) -> None:
    required = _create_request_schema(spec)["required"]
    # Only To is required by the schema; Twilio's further rules (a sender, some content)
    # are alternatives the schema cannot express, and the fake applies them.
    assert send(http, fake, **{name: None for name in required}).json()["code"] == 21604
    minimal = {"To": RECIPIENT, "MessagingServiceSid": SERVICE_SID, "ContentSid": "HX" + "a" * 32}
    response = http.post(fake.messages_url, data=minimal, auth=(fake.account_sid, fake.auth_token))
    assert response.status_code == 201, response.text


def test_statuses_are_the_specs(spec: dict[str, Any]) -> None:
    statuses = set(_schema(spec, "#/components/schemas/message_enum_status")["enum"])
    assert {"queued", "accepted", "scheduled"} | CALLBACK_STATUSES <= statuses
    assert "outbound-api" in _schema(spec, "#/components/schemas/message_enum_direction")["enum"]
