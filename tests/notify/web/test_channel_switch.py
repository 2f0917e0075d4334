"""Switching channel on the preferences page: consent is per channel and address, so the
switch asks the new address to confirm, and the old subscription ends only once it has.

Over the real app: confirmation messages are read from the SMTP sink and the fake Twilio
server, and SMS replies come in through the signed Twilio webhook.
"""

from __future__ import annotations

import logging
import re

import httpx
import pytest
from sqlalchemy import func, select

from pubwatch_notify.links import Links
from pubwatch_notify.store.models import ConsentRecord, Subscription
from pubwatch_notify.subscriptions import service
from pubwatch_notify.tokens import Purpose, TokenSigner
from tests.notify.web.helpers import (
    TOPIC,
    TWILIO_FROM,
    JobRunner,
    app_client,
    csrf_token,
    job_runner,
    make_settings,
    post_signup,
)

# twilio's async HTTP client still uses aiohttp's deprecated basic auth; not ours to fix.
pytestmark = [
    pytest.mark.filterwarnings("ignore:BasicAuth is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The 'auth' parameter is deprecated:DeprecationWarning"),
]

NUMBER = "+12015550123"
TYPED_NUMBER = "(201) 555-0123"
INBOUND = "/webhooks/twilio/inbound"
SWITCHED = "We sent a confirmation to the new address; until you confirm, you keep getting"


def _links(settings) -> Links:
    return Links(settings.public_url, TokenSigner(settings.secret_key))


def _path(settings, url: str) -> str:
    return url.removeprefix(settings.public_url)


async def _rows(jobs: JobRunner) -> list[Subscription]:
    async with jobs.ctx["sessionmaker"]() as session:
        return list(await session.scalars(select(Subscription).order_by(Subscription.id)))


async def _consent(jobs: JobRunner, subscription_id: int | None = None) -> list[tuple[str, str]]:
    query = select(ConsentRecord.action, ConsentRecord.source).order_by(ConsentRecord.id)
    if subscription_id is not None:
        query = query.where(ConsentRecord.subscription_id == subscription_id)
    async with jobs.ctx["sessionmaker"]() as session:
        return [(row.action, row.source) for row in await session.execute(query)]


async def _consent_count(jobs: JobRunner) -> int:
    async with jobs.ctx["sessionmaker"]() as session:
        return int(await session.scalar(select(func.count(ConsentRecord.id))) or 0)


async def _confirmed_email(client: httpx.AsyncClient, jobs: JobRunner, smtp_sink, address: str):
    """Sign up by email and confirm through the link; the preferences page's path."""
    assert (await post_signup(client, email=address)).status_code == 200
    assert await jobs.run_queued() == ["sent"]
    confirm_path = _confirm_path(smtp_sink, address)
    page = await client.get(confirm_path)
    done = await client.post(confirm_path, data={"csrf_token": csrf_token(page.text)})
    assert "You're subscribed" in done.text
    match = re.search(r'href="http://[^/]+(/preferences/[^"]+)"', done.text)
    assert match is not None
    return match.group(1)


def _confirm_path(smtp_sink, address: str) -> str:
    mail = smtp_sink.messages_to(address)[-1].message
    text = mail.get_body(("plain",)).get_content()
    match = re.search(r"http://[^/\s]+(/confirm/\S+)", text)
    assert match is not None
    return match.group(1)


async def _reply(client: httpx.AsyncClient, settings, fake_twilio, number: str, body: str):
    params = fake_twilio.inbound_message_params(number, TWILIO_FROM, body)
    signature = fake_twilio.sign(f"{settings.public_url}{INBOUND}", params)
    response = await client.post(INBOUND, data=params, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 200, response.text
    return response


async def _switch(client: httpx.AsyncClient, prefs_path: str, **fields: str) -> httpx.Response:
    page = await client.get(prefs_path)
    assert page.status_code == 200, page.text
    data = {"csrf_token": csrf_token(page.text), "action": "switch-channel", "consent": "yes"}
    data.update(fields)
    return await client.post(prefs_path, data=data)


def _no_address_in(records: list[logging.LogRecord], *addresses: str) -> None:
    for record in records:
        text = f"{record.getMessage()} {record.__dict__}"
        for address in addresses:
            assert address not in text, f"{address} logged by {record.name}"


async def test_email_to_sms(settings_with_channels, smtp_sink, fake_twilio, caplog):
    settings = settings_with_channels
    caplog.set_level(logging.INFO, logger="pubwatch")
    async with app_client(settings) as (_, client), job_runner(settings) as jobs:
        prefs_path = await _confirmed_email(client, jobs, smtp_sink, "ann@example.org")
        page = await client.get(prefs_path)
        saved = await client.post(
            prefs_path,
            data={
                "csrf_token": csrf_token(page.text),
                "frequency": "weekly",
                "min_level": "rct",
                "timezone": "Europe/Paris",
                "action": "save",
            },
        )
        assert "Saved" in saved.text

        page = await client.get(prefs_path)
        # The switch form says what a text sign-up must say (CTIA).
        for words in (
            "Get text messages instead",
            "Mobile number",
            "Msg &amp; data rates may apply",
            "Reply HELP for help, STOP to cancel",
            'href="/terms"',
            'href="/privacy"',
            "I agree to receive recurring automated text messages from PubWatch alerts",
            "Consent is not a condition of any purchase",
        ):
            assert words in page.text, words
        assert "Sign up on the" not in page.text

        response = await _switch(client, prefs_path, phone=TYPED_NUMBER)
        assert response.status_code == 200, response.text
        assert SWITCHED in response.text
        assert "Reply YES" in response.text
        assert TYPED_NUMBER not in str(response.url)
        assert NUMBER not in str(response.url)
        # Asking twice reuses the pending subscription and queues one confirmation.
        again = await _switch(client, prefs_path, phone=NUMBER)
        assert SWITCHED in again.text

        old, new = await _rows(jobs)
        assert (old.channel, old.status) == ("email", "confirmed")
        assert (new.channel, new.status, new.address) == ("sms", "pending", NUMBER)
        assert new.replaces_subscription_id == old.id
        assert (new.topic, new.frequency, new.min_level, new.timezone) == (
            TOPIC,
            "weekly",
            "rct",
            "Europe/Paris",
        )
        assert await _consent(jobs, new.id) == [
            ("subscribe", "preferences"),
            ("subscribe", "preferences"),
        ]

        assert await jobs.run_queued() == ["sent"]
        (text,) = fake_twilio.messages_to(NUMBER)
        assert "Reply YES to confirm" in text["body"]
        # Until the new number confirms, the email subscription carries on.
        assert (await _rows(jobs))[0].status == "confirmed"
        assert (await client.get(prefs_path)).status_code == 200

        await _reply(client, settings, fake_twilio, NUMBER, "YES")
        old, new = await _rows(jobs)
        assert new.status == "confirmed"
        assert (old.status, old.end_reason) == ("unsubscribed", "switched channel")
        assert old.ended_at is not None
        assert old.next_digest_at is None
        assert await _consent(jobs, old.id) == [
            ("subscribe", "web"),
            ("confirm", "email-link"),
            ("unsubscribe", "sms"),
        ]
        # A second YES changes nothing: the hand-over happens once.
        count = await _consent_count(jobs)
        await _reply(client, settings, fake_twilio, NUMBER, "yes")
        assert await _consent_count(jobs) == count
        assert [row.status for row in await _rows(jobs)] == ["unsubscribed", "confirmed"]
        # The old subscription's page now says it has ended.
        ended = await client.get(prefs_path)
        assert ended.status_code == 200
        assert "Save my choices" not in ended.text
    _no_address_in(caplog.records, "ann@example.org", NUMBER, "2015550123")


async def test_sms_to_email(settings_with_channels, smtp_sink, fake_twilio):
    settings = settings_with_channels
    async with app_client(settings) as (_, client), job_runner(settings) as jobs:
        assert (await post_signup(client, channel="sms", phone=TYPED_NUMBER)).status_code == 200
        assert await jobs.run_queued() == ["sent"]
        await _reply(client, settings, fake_twilio, NUMBER, "YES")
        (old,) = await _rows(jobs)
        assert old.status == "confirmed"
        prefs_path = _path(settings, _links(settings).preferences(old.id, old.token_version))

        page = await client.get(prefs_path)
        assert "Get email instead" in page.text
        assert "I agree to receive emails from PubWatch" in page.text
        response = await _switch(client, prefs_path, email="Bob@Example.org")
        assert response.status_code == 200, response.text
        assert SWITCHED in response.text
        assert "Open the link in the email" in response.text

        assert await jobs.run_queued() == ["sent"]
        confirm_path = _confirm_path(smtp_sink, "bob@example.org")
        # Opening the link (as a mail scanner would) confirms nothing and ends nothing.
        confirm_page = await client.get(confirm_path)
        assert confirm_page.status_code == 200
        old, new = await _rows(jobs)
        assert (old.status, new.status, new.address) == ("confirmed", "pending", "bob@example.org")
        assert new.replaces_subscription_id == old.id

        done = await client.post(confirm_path, data={"csrf_token": csrf_token(confirm_page.text)})
        assert "You're subscribed" in done.text
        old, new = await _rows(jobs)
        assert new.status == "confirmed"
        assert (old.status, old.end_reason) == ("unsubscribed", "switched channel")
        assert await _consent(jobs, old.id) == [
            ("subscribe", "web"),
            ("confirm", "sms"),
            ("unsubscribe", "email-link"),
        ]
        assert await _consent(jobs, new.id) == [
            ("subscribe", "preferences"),
            ("confirm", "email-link"),
        ]
        # Pressing the button again is harmless.
        count = await _consent_count(jobs)
        again = await client.post(confirm_path, data={"csrf_token": csrf_token(confirm_page.text)})
        assert "already subscribed" in again.text
        assert await _consent_count(jobs) == count
        # And a STOP to the old number has nothing left to end.
        await _reply(client, settings, fake_twilio, NUMBER, "STOP")
        assert [row.status for row in await _rows(jobs)] == ["unsubscribed", "confirmed"]
        # The email subscription's own preferences page works, and offers texts again.
        new_prefs = _path(settings, _links(settings).preferences(new.id, new.token_version))
        assert "Get text messages instead" in (await client.get(new_prefs)).text
    assert len(fake_twilio.messages_to(NUMBER)) == 1


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"phone": "call me"}, "phone", "look like a phone number"),
        ({"phone": "+1 201 555 01"}, "phone", "isn"),
        ({"phone": ""}, "phone", "Enter your mobile number."),
        ({"phone": TYPED_NUMBER, "consent": ""}, "consent", "Tick the box"),
    ],
)
async def test_bad_new_number_stores_nothing(
    settings_with_channels, smtp_sink, fields, field, message
):
    settings = settings_with_channels
    async with app_client(settings) as (_, client), job_runner(settings) as jobs:
        prefs_path = await _confirmed_email(client, jobs, smtp_sink, "ann@example.org")
        before = await _consent_count(jobs)
        response = await _switch(client, prefs_path, **fields)
        assert response.status_code == 422
        assert SWITCHED not in response.text
        error = re.search(rf'<p class="error" id="{field}-error">(.*?)</p>', response.text, re.S)
        assert error is not None
        assert message in error.group(1)
        assert f'aria-describedby="{field}-error' in response.text
        if fields.get("phone"):
            # What the person typed is kept.
            assert f'value="{fields["phone"]}"' in response.text
        assert len(await _rows(jobs)) == 1
        assert await _consent_count(jobs) == before
        assert await jobs.queued() == []


async def test_bad_new_email_and_expired_form_store_nothing(settings_with_channels, fake_twilio):
    settings = settings_with_channels
    async with app_client(settings) as (_, client), job_runner(settings) as jobs:
        await post_signup(client, channel="sms", phone=NUMBER)
        await jobs.run_queued()
        await _reply(client, settings, fake_twilio, NUMBER, "YES")
        (sub,) = await _rows(jobs)
        prefs_path = _path(settings, _links(settings).preferences(sub.id, sub.token_version))
        before = await _consent_count(jobs)

        response = await _switch(client, prefs_path, email="ann@")
        assert response.status_code == 422
        assert 'id="email-error"' in response.text
        assert 'value="ann@"' in response.text
        assert 'aria-invalid="true"' in response.text

        # No valid CSRF field: refused, the input kept, nothing stored.
        forged = await client.post(
            prefs_path,
            data={"action": "switch-channel", "email": "eve@example.org", "consent": "yes"},
        )
        assert forged.status_code == 403
        assert 'id="switch-error"' in forged.text
        assert 'value="eve@example.org"' in forged.text

        assert len(await _rows(jobs)) == 1
        assert await _consent_count(jobs) == before
        assert await jobs.queued() == []


async def test_switch_rate_limited_per_address(
    sqlite_url, redis_url, tmp_path, smtp_sink, fake_twilio
):
    settings = make_settings(
        sqlite_url,
        redis_url,
        tmp_path,
        smtp_url=smtp_sink.url,
        twilio=fake_twilio,
        signup_limit_per_address=2,
    )
    async with app_client(settings) as (_, client), job_runner(settings) as jobs:
        prefs_path = await _confirmed_email(client, jobs, smtp_sink, "ann@example.org")
        assert (await _switch(client, prefs_path, phone=NUMBER)).status_code == 200
        assert (await _switch(client, prefs_path, phone=NUMBER)).status_code == 200
        before = await _consent_count(jobs)
        limited = await _switch(client, prefs_path, phone=TYPED_NUMBER)
        assert limited.status_code == 429
        assert re.search(r'id="phone-error">.*too many sign-ups', limited.text, re.S)
        assert 'value="(201) 555-0123"' in limited.text
        assert await _consent_count(jobs) == before


async def test_token_for_one_subscription_cannot_switch_another(
    settings_with_channels, smtp_sink, fake_twilio
):
    settings = settings_with_channels
    async with app_client(settings) as (_, client), job_runner(settings) as jobs:
        ann_prefs = await _confirmed_email(client, jobs, smtp_sink, "ann@example.org")
        await _confirmed_email(client, jobs, smtp_sink, "bob@example.org")
        ann, bob = await _rows(jobs)
        links = _links(settings)
        signer = TokenSigner(settings.secret_key)
        before = await _consent_count(jobs)

        page = await client.get(ann_prefs)
        form = {
            "csrf_token": csrf_token(page.text),
            "action": "switch-channel",
            "phone": NUMBER,
            "consent": "yes",
        }
        refused: list[str] = [
            # Bob's links for other purposes are not preferences links.
            _path(settings, links.unsubscribe(bob.id, bob.token_version)).replace(
                "/unsubscribe/", "/preferences/"
            ),
            _path(settings, links.confirm(bob.id, bob.token_version)).replace(
                "/confirm/", "/preferences/"
            ),
            # Ann's token with Bob's id in it: the signature no longer matches.
            "/preferences/" + _forged(signer, ann.id, bob.id, ann.token_version),
            # A token for an earlier life of Bob's subscription.
            "/preferences/" + signer.make(Purpose.PREFERENCES, bob.id, bob.token_version + 1),
        ]
        for path in refused:
            response = await client.post(path, data=form)
            assert response.status_code == 404, path
            assert SWITCHED not in response.text
        assert len(await _rows(jobs)) == 2
        assert await _consent_count(jobs) == before

        # Ann's own token switches Ann's subscription, and only hers.
        response = await client.post(ann_prefs, data=form)
        assert SWITCHED in response.text
        *_, new = await _rows(jobs)
        assert new.replaces_subscription_id == ann.id
        await jobs.run_queued()
        await _reply(client, settings, fake_twilio, NUMBER, "YES")
        statuses = {row.id: row.status for row in await _rows(jobs)}
        assert statuses == {ann.id: "unsubscribed", bob.id: "confirmed", new.id: "confirmed"}


def _forged(signer: TokenSigner, real_id: int, other_id: int, version: int) -> str:
    """The other subscription's payload under the real token's timestamp and signature."""
    real = signer.make(Purpose.PREFERENCES, real_id, version)
    other = signer.make(Purpose.PREFERENCES, other_id, version)
    return other.partition(".")[0] + "." + real.partition(".")[2]


async def test_switch_to_an_already_confirmed_number_changes_nothing(
    settings_with_channels, smtp_sink, fake_twilio
):
    """The page reads the same (it must not reveal who is subscribed), the confirmed
    subscription's choices stay as they are, and the email one keeps running."""
    settings = settings_with_channels
    async with app_client(settings) as (_, client), job_runner(settings) as jobs:
        await post_signup(client, channel="sms", phone=NUMBER, frequency="daily")
        await jobs.run_queued()
        await _reply(client, settings, fake_twilio, NUMBER, "YES")
        prefs_path = await _confirmed_email(client, jobs, smtp_sink, "ann@example.org")
        before = await _consent_count(jobs)
        response = await _switch(client, prefs_path, phone=NUMBER)
        assert response.status_code == 200
        assert SWITCHED in response.text
        sms, email = await _rows(jobs)
        assert (sms.status, sms.frequency, sms.replaces_subscription_id) == (
            "confirmed",
            "daily",
            None,
        )
        assert email.status == "confirmed"
        assert await _consent_count(jobs) == before
        assert await jobs.queued() == []


async def test_plain_signup_after_an_ended_switch_does_not_end_anything(
    settings_with_channels, smtp_sink, fake_twilio
):
    """A switch that was never confirmed, and later ended, leaves no hand-over behind for
    the next time someone signs that number up from the topic page."""
    settings = settings_with_channels
    async with app_client(settings) as (_, client), job_runner(settings) as jobs:
        prefs_path = await _confirmed_email(client, jobs, smtp_sink, "ann@example.org")
        await _switch(client, prefs_path, phone=NUMBER)
        await jobs.run_queued()
        await _reply(client, settings, fake_twilio, NUMBER, "STOP")
        email, sms = await _rows(jobs)
        assert (email.status, sms.status) == ("confirmed", "unsubscribed")

        fake_twilio.opted_out.discard(NUMBER)
        await post_signup(client, channel="sms", phone=NUMBER)
        _, sms = await _rows(jobs)
        assert (sms.status, sms.replaces_subscription_id) == ("pending", None)
        await _reply(client, settings, fake_twilio, NUMBER, "YES")
        email, sms = await _rows(jobs)
        assert (email.status, sms.status) == ("confirmed", "confirmed")


async def test_deleting_the_old_address_keeps_the_pending_switch_working(
    settings_with_channels, smtp_sink, fake_twilio
):
    """A deletion request for the old address removes its subscription; the switch it
    started loses its link (the foreign key sets it to NULL) and still confirms."""
    settings = settings_with_channels
    async with app_client(settings) as (_, client), job_runner(settings) as jobs:
        prefs_path = await _confirmed_email(client, jobs, smtp_sink, "ann@example.org")
        await _switch(client, prefs_path, phone=NUMBER)
        async with jobs.ctx["sessionmaker"]() as session:
            assert await service.delete_subscriber_data(session, "Ann@Example.org") == 1
        (sms,) = await _rows(jobs)
        assert (sms.status, sms.replaces_subscription_id) == ("pending", None)
        await jobs.run_queued()
        await _reply(client, settings, fake_twilio, NUMBER, "YES")
        (sms,) = await _rows(jobs)
        assert sms.status == "confirmed"
        assert (await client.get(prefs_path)).status_code == 404
