"""The email itself: parses under the strict policy, carries the list headers, and its
one-click List-Unsubscribe URL unsubscribes."""

from __future__ import annotations

import email
import email.policy
import re

import httpx
import pytest
from sqlalchemy import select

from pubwatch_notify.api.app import create_app
from pubwatch_notify.store.models import Subscription
from tests.notify.delivery.helpers import (
    add_subscribers,
    article,
    make_event,
    make_settings,
    migrated_sessions,
    running_worker,
)

pytestmark = pytest.mark.timeout(60)


async def test_email_is_well_formed_and_one_click_unsubscribe_works(
    tmp_path, sqlite_url, redis_url, smtp_sink
):
    settings = make_settings(tmp_path, sqlite_url, redis_url, smtp_url=smtp_sink.url)
    engine, sessions = await migrated_sessions(settings)
    [sub_id] = await add_subscribers(sessions, 1)
    event = make_event(
        "mail1",
        [
            article("401", "case_report"),
            article("402", "rct", title="Drug X vs placebo — a “blinded” trial"),
        ],
    )
    async with running_worker(settings, redis_url) as worker:
        await worker.enqueue(event)
        await worker.drain()

    [mail] = smtp_sink.messages
    message = email.message_from_bytes(mail.raw, policy=email.policy.strict)
    assert message["Subject"] == (
        "2 new studies on Indolent systemic mastocytosis — incl. a randomized trial"
    )
    assert message["Message-ID"].startswith("<pubwatch.")
    assert message["Date"]
    assert message["List-Id"].startswith("PubWatch Indolent systemic mastocytosis <")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https_url, mailto = re.findall(r"<([^>]+)>", message["List-Unsubscribe"])
    assert https_url.startswith("https://pubwatch.example.org/unsubscribe/")
    assert mailto.startswith("mailto:")
    assert message.get_content_type() == "multipart/alternative"
    text_part = message.get_body(preferencelist=("plain",))
    html_part = message.get_body(preferencelist=("html",))
    assert text_part is not None
    assert html_part is not None
    text = text_part.get_content()
    html = html_part.get_content()
    for body in (text, html):
        assert "Randomized trial" in body
        assert "Case report" in body
        assert "https://pubmed.ncbi.nlm.nih.gov/402/" in body
        assert "Example Journal, 2026-11" in body
        assert "talk to your doctor" in body
        assert "/preferences/" in body
    assert "“blinded”" in text
    assert 'style="' in html  # inline CSS, no stylesheet for mail clients to drop

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport) as client:
            # As a mail provider sends it: form-encoded, no cookies, redirects not followed.
            response = await client.post(
                https_url, data={"List-Unsubscribe": "One-Click"}, follow_redirects=False
            )
    assert response.status_code == 200
    async with sessions() as session:
        subscription = await session.scalar(select(Subscription).where(Subscription.id == sub_id))
    assert subscription is not None
    assert subscription.status == "unsubscribed"
    await engine.dispose()
