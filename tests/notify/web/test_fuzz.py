"""Hypothesis throws arbitrary forms, tokens and bodies at every form endpoint of the served
app: whatever arrives, the answer is never a server error."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.notify.web.helpers import TOPIC, csrf_token, served

FIELD_NAMES = [
    "channel",
    "email",
    "phone",
    "frequency",
    "min_level",
    "timezone",
    "consent",
    "website",
    "csrf_token",
    "action",
    "List-Unsubscribe",
    "source",
]
FIELD_VALUES = st.one_of(
    st.text(max_size=80),
    st.sampled_from(
        [
            "email",
            "sms",
            "immediate",
            "weekly",
            "rct",
            "other",
            "yes",
            "UTC",
            "save",
            "unsubscribe-all",
            "One-Click",
            "ann@example.org",
            "+12015550123",
            "a@b",
            "\x00",
            "Europe/../../etc/passwd",
            "9" * 500,
        ]
    ),
)
FORMS = st.dictionaries(
    st.one_of(st.sampled_from(FIELD_NAMES), st.text(min_size=1, max_size=12)),
    FIELD_VALUES,
    max_size=10,
)
PATH_PARTS = st.one_of(
    st.text(
        alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="/?#%"),
        min_size=1,
        max_size=60,
    ),
    st.just(TOPIC),
    st.just("a" * 3000),
)
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def served_client(settings_factory) -> Iterator[tuple[httpx.Client, str]]:
    def roomy(public_url: str):
        return settings_factory(public_url).model_copy(
            update={"signup_limit_per_ip": 1_000_000, "signup_limit_per_address": 1_000_000}
        )

    with served(roomy) as (server, _), httpx.Client(base_url=server.url) as client:
        page = client.get(f"/topics/{TOPIC}")
        yield client, csrf_token(page.text)


def _check(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text[:500]


@FUZZ
@given(form=FORMS, with_token=st.booleans(), embed=st.booleans())
def test_subscribe_form_never_errors(served_client, form, with_token, embed):
    client, token = served_client
    if with_token:
        form = {**form, "csrf_token": token}
    _check(client.post(f"/{'embed' if embed else 'topics'}/{TOPIC}", data=form))


@FUZZ
@given(
    prefix=st.sampled_from(["confirm", "preferences", "unsubscribe", "topics", "embed"]),
    part=PATH_PARTS,
    form=FORMS,
    method=st.sampled_from(["GET", "POST"]),
)
def test_token_pages_never_error(served_client, prefix, part, form, method):
    client, _ = served_client
    url = f"/{prefix}/{quote(part, safe='')}"
    if method == "GET":
        _check(client.get(url))
    else:
        _check(client.post(url, data=form))


@FUZZ
@given(
    body=st.binary(max_size=300),
    content_type=st.sampled_from(
        [
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=xyz",
            "multipart/form-data",
            "text/plain",
            "application/json",
        ]
    ),
    path=st.sampled_from([f"/topics/{TOPIC}", f"/embed/{TOPIC}", "/unsubscribe/x.y.z"]),
)
def test_raw_bodies_never_error(served_client, body, content_type, path):
    client, _ = served_client
    _check(client.post(path, content=body, headers={"Content-Type": content_type}))
