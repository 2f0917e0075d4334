"""The whole email journey through the HTTP layer, in process."""

from __future__ import annotations

import re

from sqlalchemy import select

from pubwatch_notify.store.models import ConsentRecord, Subscription
from tests.notify.web.helpers import app_client, csrf_token, job_runner, post_signup


async def test_email_signup_confirm_preferences_unsubscribe(settings_with_channels, smtp_sink):
    settings = settings_with_channels
    async with app_client(settings) as (_, client), job_runner(settings) as jobs:
        response = await post_signup(client, email="Ann@Example.org")
        assert response.status_code == 200, response.text
        assert "Check your inbox" in response.text
        assert len(await jobs.queued()) == 1
        assert await jobs.run_queued() == ["sent"]
        mail = smtp_sink.wait_for(1)[0]
        assert mail.rcpt_tos == ["ann@example.org"]
        text = mail.message.get_body(("plain",)).get_content()
        confirm_match = re.search(r"http://\S+/confirm/\S+", text)
        assert confirm_match is not None
        confirm_url = confirm_match.group(0)
        path = confirm_url.removeprefix(settings.public_url)

        page = await client.get(path)
        assert page.status_code == 200
        assert "Yes, send me updates" in page.text
        done = await client.post(path, data={"csrf_token": csrf_token(page.text)})
        assert done.status_code == 200, done.text
        assert "You're subscribed" in done.text

        async with jobs.ctx["sessionmaker"]() as session:
            sub = await session.scalar(select(Subscription))
            assert sub.status == "confirmed"
            actions = list(await session.scalars(select(ConsentRecord.action)))
            assert actions == ["subscribe", "confirm"]
        prefs_match = re.search(r'href="http://[^/]+(/preferences/[^"]+)"', done.text)
        assert prefs_match is not None
        prefs_path = prefs_match.group(1)
        prefs = await client.get(prefs_path)
        assert prefs.status_code == 200
        saved = await client.post(
            prefs_path,
            data={
                "csrf_token": csrf_token(prefs.text),
                "frequency": "weekly",
                "min_level": "rct",
                "timezone": "europe/paris",
                "action": "save",
            },
        )
        assert saved.status_code == 200, saved.text
        assert "Saved" in saved.text
        unsubscribe_path = prefs_path.replace("/preferences/", "/unsubscribe/")
        # The preferences token is not an unsubscribe token.
        refused = await client.post(unsubscribe_path, data={"List-Unsubscribe": "One-Click"})
        assert refused.status_code == 404
