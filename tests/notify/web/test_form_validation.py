"""Every field of the subscribe form refuses bad input with its own message, keeps what
was typed, and stores nothing; the honeypot, CSRF and rate limits hold."""

from __future__ import annotations

import html

import pytest
from sqlalchemy import func, select

from pubwatch_notify.store.engine import make_engine
from pubwatch_notify.store.models import ConsentRecord, Subscription
from tests.notify.web.helpers import TOPIC, app_client, csrf_token, post_signup, signup_form

BAD_FIELDS = [
    ({"channel": ""}, "channel", "Choose how we should reach you"),
    ({"channel": "pigeon"}, "channel", "Choose how we should reach you"),
    ({"email": ""}, "email", "Enter your email address."),
    ({"email": "ann.example.org"}, "email", "An email address needs an @"),
    ({"email": "ann@"}, "email", "There must be something after the @."),
    ({"email": "ann@@example.org"}, "email", "The part after the @ contains invalid"),
    ({"email": "ann@example"}, "email", "It should have a period"),
    ({"email": "a" * 300 + "@example.org"}, "email", "too long"),
    ({"channel": "sms", "phone": ""}, "phone", "Enter your mobile number."),
    ({"channel": "sms", "phone": "call me"}, "phone", "doesn't look like a phone number"),
    ({"channel": "sms", "phone": "555-01"}, "phone", "isn't a valid phone number"),
    ({"channel": "sms", "phone": "+44 20 7946 0958"}, "phone", "looks like a landline"),
    ({"frequency": "hourly"}, "frequency", "Choose how often"),
    ({"frequency": ""}, "frequency", "Choose how often"),
    ({"min_level": "case_report"}, "min_level", "Choose which studies"),
    ({"min_level": "best"}, "min_level", "Choose which studies"),
    ({"timezone": "Mars/Olympus_Mons"}, "timezone", "We don't know this time zone"),
    ({"timezone": "../../etc/passwd"}, "timezone", "We don't know this time zone"),
    ({"consent": ""}, "consent", "Tick the box to agree"),
]


async def _stored_rows(settings) -> int:
    engine = make_engine(settings.resolved_database_url)
    try:
        async with engine.connect() as connection:
            subscriptions = await connection.scalar(select(func.count()).select_from(Subscription))
            consents = await connection.scalar(select(func.count()).select_from(ConsentRecord))
    finally:
        await engine.dispose()
    return int(subscriptions or 0) + int(consents or 0)


@pytest.mark.parametrize(("fields", "field", "message"), BAD_FIELDS)
async def test_each_field_rejects_bad_values_next_to_the_field(settings, fields, field, message):
    async with app_client(settings) as (_, client):
        response = await post_signup(client, **fields)
    assert response.status_code == 422
    page = html.unescape(response.text)
    error_id = f'id="{field}-error"'
    assert error_id in response.text
    start = response.text.index(error_id)
    assert message in html.unescape(response.text[start : start + 400])
    assert f'aria-describedby="{field}-error' in response.text
    # What was typed is kept.
    for name, value in fields.items():
        if name in ("email", "phone", "timezone") and value:
            assert html.escape(value, quote=True) in response.text or value in page
    assert await _stored_rows(settings) == 0


async def test_all_errors_show_at_once_and_input_is_kept(settings):
    async with app_client(settings) as (_, client):
        response = await post_signup(
            client, email="ann@", frequency="", consent="", timezone="Nowhere/Land"
        )
    assert response.status_code == 422
    for field in ("email", "frequency", "consent", "timezone"):
        assert f'id="{field}-error"' in response.text
    assert 'value="ann@"' in response.text
    assert 'value="Nowhere/Land"' in response.text
    assert 'class="error-summary"' in response.text


async def test_honeypot_gets_the_ordinary_answer_and_stores_nothing(settings):
    async with app_client(settings) as (_, client):
        response = await post_signup(client, website="http://spam.example")
    assert response.status_code == 200
    assert "Check your" in response.text
    assert await _stored_rows(settings) == 0


async def test_post_without_csrf_token_is_refused_and_input_kept(settings):
    async with app_client(settings) as (_, client):
        await client.get(f"/topics/{TOPIC}")
        data = signup_form(email="bob@example.org")
        missing = await client.post(f"/topics/{TOPIC}", data=data)
        forged = await client.post(f"/topics/{TOPIC}", data={**data, "csrf_token": "x.y.z"})
    for response in (missing, forged):
        assert response.status_code == 403
        assert "This form had expired" in response.text
        assert 'value="bob@example.org"' in response.text
    assert await _stored_rows(settings) == 0


async def test_csrf_token_must_match_the_cookie(settings):
    async with app_client(settings) as (_, client):
        page = await client.get(f"/topics/{TOPIC}")
        token = csrf_token(page.text)
        client.cookies.set("pubwatch_csrf", "another-browsers-nonce-000000")
        response = await client.post(
            f"/topics/{TOPIC}", data={**signup_form(), "csrf_token": token}
        )
    assert response.status_code == 403


async def test_embed_post_without_cookie_passes_on_own_origin_only(settings):
    async with app_client(settings) as (_, client):
        page = await client.get(f"/embed/{TOPIC}")
        token = csrf_token(page.text)
        client.cookies.clear()
        data = {**signup_form(), "csrf_token": token}
        foreign = await client.post(
            f"/embed/{TOPIC}", data=data, headers={"Origin": "https://evil.example"}
        )
        client.cookies.clear()  # the refusal page handed out a fresh cookie
        own = await client.post(
            f"/embed/{TOPIC}", data=data, headers={"Origin": settings.public_url}
        )
    assert foreign.status_code == 403
    assert own.status_code == 200
    assert "Check your inbox" in own.text


async def test_rate_limit_per_address(settings):
    settings = settings.model_copy(update={"signup_limit_per_address": 2})
    async with app_client(settings) as (_, client):
        answers = [
            (await post_signup(client, email="carol@example.org")).status_code for _ in range(3)
        ]
        last = await post_signup(client, email="CAROL@example.org")
        other = await post_signup(client, email="dave@example.org")
    assert answers == [200, 200, 429]
    assert last.status_code == 429
    assert "too many sign-ups for this address" in last.text
    assert other.status_code == 200


async def test_rate_limit_per_ip(settings):
    settings = settings.model_copy(update={"signup_limit_per_ip": 2})
    async with app_client(settings) as (_, client):
        codes = [
            (await post_signup(client, email=f"p{n}@example.org")).status_code for n in range(3)
        ]
    assert codes == [200, 200, 429]


async def test_unknown_topic_is_a_friendly_404(settings):
    async with app_client(settings) as (_, client):
        response = await client.post("/topics/no-such-topic", data=signup_form())
        page = await client.get("/topics/no-such-topic")
    assert response.status_code == 404
    assert page.status_code == 404
    assert "Topic not found" in page.text
