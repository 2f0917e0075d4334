"""Signed requests: a client configured with a secret must sign; replays and forgeries are
refused with a message that says which."""

from __future__ import annotations

import time

import pytest

from pubwatch_notify.api.clients import SIGNATURE_HEADER, SignatureError, sign, verify_signature
from tests.notify.events_api.helpers import (
    SIGNER_KEY,
    SIGNER_SECRET,
    TRIALS_KEY,
    api_client,
    bearer,
    event,
    make_settings,
    signed,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def settings(tmp_path, sqlite_url, redis_url):
    return make_settings(tmp_path, sqlite_url, redis_url)


async def post(client, raw: bytes, headers: dict[str, str]):
    return await client.post("/v1/events", content=raw, headers=headers)


async def test_a_fresh_signature_is_accepted(settings):
    raw, headers = signed(event(source="signer"))
    async with api_client(settings) as (_, client):
        response = await post(client, raw, headers)
    assert response.status_code == 202, response.text


async def test_a_signing_client_without_a_signature_is_401(settings):
    raw, headers = signed(event(source="signer"))
    del headers[SIGNATURE_HEADER]
    async with api_client(settings) as (_, client):
        response = await post(client, raw, headers)
    assert response.status_code == 401
    assert "must sign its requests" in response.json()["detail"]


async def test_a_replay_older_than_five_minutes_is_401(settings):
    raw, headers = signed(event(source="signer"), at_s=int(time.time()) - 301)
    async with api_client(settings) as (_, client):
        response = await post(client, raw, headers)
    assert response.status_code == 401
    assert "refused as a possible replay" in response.json()["detail"]


async def test_a_timestamp_far_in_the_future_is_401(settings):
    raw, headers = signed(event(source="signer"), at_s=int(time.time()) + 3600)
    async with api_client(settings) as (_, client):
        response = await post(client, raw, headers)
    assert response.status_code == 401
    assert "in the future" in response.json()["detail"]


async def test_a_replay_inside_the_window_delivers_nothing_new(settings):
    raw, headers = signed(event("once", source="signer"))
    async with api_client(settings) as (_, client):
        first = await post(client, raw, headers)
        replay = await post(client, raw, headers)
    assert (first.status_code, replay.status_code) == (202, 200)
    assert replay.json()["duplicate"] is True


@pytest.mark.parametrize("forgery", ["wrong secret", "changed body", "changed timestamp"])
async def test_a_forged_signature_is_401(settings, forgery):
    raw, headers = signed(event(source="signer"))
    if forgery == "wrong secret":
        raw, headers = signed(event(source="signer"), secret="someone-elses-secret-0123")
    elif forgery == "changed body":
        raw = raw.replace(b"drug X", b"drug Y")
    else:
        t, v1 = headers[SIGNATURE_HEADER].split(",")
        headers[SIGNATURE_HEADER] = f"t={int(t[2:]) - 1},{v1}"
    async with api_client(settings) as (_, client):
        response = await post(client, raw, headers)
    assert response.status_code == 401
    assert "does not match the body" in response.json()["detail"]


@pytest.mark.parametrize("header", ["garbage", "t=abc,v1=00", "t=1", "v1=abcdef", "t=1,v1=zz"])
async def test_a_malformed_signature_is_401(settings, header):
    raw, headers = signed(event(source="signer"))
    headers[SIGNATURE_HEADER] = header
    async with api_client(settings) as (_, client):
        response = await post(client, raw, headers)
    assert response.status_code == 401
    assert "must look like t=<unix seconds>" in response.json()["detail"]


async def test_clients_without_a_secret_need_not_sign(settings):
    async with api_client(settings) as (_, client):
        response = await client.post("/v1/events", json=event(), headers=bearer(TRIALS_KEY))
    assert response.status_code == 202


def test_rotation_accepts_either_secret_and_any_of_several_signatures():
    body, now = b'{"a": 1}', time.time()
    old, new = b"old-secret-0123456789", b"new-secret-0123456789"
    header = sign(new, body, int(now))
    verify_signature(header, body, [old, new], now_s=now, tolerance_s=300)
    both = f"{header},v1={sign(old, body, int(now)).split('v1=')[1]}"
    verify_signature(both, body, [old], now_s=now, tolerance_s=300)
    with pytest.raises(SignatureError):
        verify_signature(header, body, [old], now_s=now, tolerance_s=300)


def test_the_signed_bytes_are_timestamp_dot_body():
    import hashlib
    import hmac

    expected = hmac.new(SIGNER_SECRET.encode(), b"1700000000.{}", hashlib.sha256).hexdigest()
    assert sign(SIGNER_SECRET.encode(), b"{}", 1700000000) == f"t=1700000000,v1={expected}"
    assert SIGNER_KEY  # the key and the secret are different things
