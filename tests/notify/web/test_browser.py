"""A new subscriber's whole journey in headless Chromium, by email and by SMS, with a
phone-width screenshot of every page under ``test-artifacts/screenshots/``."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from pubwatch_notify.links import Links
from pubwatch_notify.store.engine import make_engine, make_sessionmaker
from pubwatch_notify.store.models import Subscription
from pubwatch_notify.subscriptions import service
from pubwatch_notify.tokens import TokenSigner
from tests.notify.web.helpers import REPO_ROOT, TOPIC, TWILIO_FROM, job_runner, served

if TYPE_CHECKING:
    from playwright.sync_api import ViewportSize

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
PHONE: ViewportSize = {"width": 360, "height": 740}
NUMBER = "+12015550123"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin"),
    pytest.mark.filterwarnings("ignore:BasicAuth is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The 'auth' parameter is deprecated:DeprecationWarning"),
]


def _in_thread(coroutine_function, *args):
    """Run async work on its own loop: Playwright's sync API owns this thread's."""
    with ThreadPoolExecutor(max_workers=1) as executor:
        return executor.submit(lambda: asyncio.run(coroutine_function(*args))).result()


async def _run_confirmation_jobs(settings) -> list[str]:
    async with job_runner(settings) as jobs:
        return await jobs.run_queued()


async def _only_subscription(settings) -> tuple[int, int]:
    engine = make_engine(settings.resolved_database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            subscription = await session.get(Subscription, 1)
            assert subscription is not None
            return subscription.id, subscription.token_version
    finally:
        await engine.dispose()


async def _confirm_by_reply(settings, number: str) -> bool:
    engine = make_engine(settings.resolved_database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            return await service.confirm_by_sms_reply(session, number)
    finally:
        await engine.dispose()


@pytest.fixture
def browser_page() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        context = browser.new_context(viewport=PHONE, timezone_id="America/Chicago")
        page = context.new_page()
        page.set_default_timeout(15_000)
        try:
            yield page
        finally:
            context.close()
            browser.close()


class Shots:
    def __init__(self, page, flow: str) -> None:
        self.page = page
        self.flow = flow
        self.count = 0
        folder = SCREENSHOTS
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob(f"{flow}-*.png"):
            old.unlink()

    def take(self, name: str) -> None:
        self.count += 1
        path = SCREENSHOTS / f"{self.flow}-{self.count:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        # Readable at phone width: nothing wider than the screen.
        width = self.page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{name} scrolls sideways ({width}px)"


def _links(settings) -> Links:
    return Links(settings.public_url, TokenSigner(settings.secret_key))


def _change_preferences(page, shots: Shots) -> None:
    page.get_by_label("One summary a week").check()
    page.get_by_label("Only high-quality evidence: trials, reviews, guidelines").check()
    page.get_by_role("button", name="Save my choices").click()
    page.get_by_text("Saved. From now on: one summary a week").wait_for()
    shots.take("preferences-saved")


def test_email_journey(browser_page, settings_factory, smtp_sink):
    page = browser_page
    shots = Shots(page, "email")
    with served(settings_factory) as (server, settings):
        page.goto(f"{server.url}/topics/{TOPIC}")
        assert page.get_by_label("Your time zone").input_value() == "America/Chicago"
        shots.take("topic")

        page.get_by_label("Email", exact=True).check()
        page.get_by_label("Email address").fill("ann@example")
        page.get_by_label("I agree to receive these messages").check()
        page.get_by_role("button", name="Get notified").click()
        page.get_by_text("It should have a period").first.wait_for()
        assert page.get_by_label("Email address").get_attribute("aria-invalid") == "true"
        assert page.get_by_label("Email address").input_value() == "ann@example"
        shots.take("form-error")

        page.get_by_label("Email address").fill("ann@example.org")
        page.get_by_label("I agree to receive these messages").check()
        page.get_by_role("button", name="Get notified").click()
        page.get_by_role("heading", name="Check your inbox").wait_for()
        shots.take("check-inbox")

        assert _in_thread(_run_confirmation_jobs, settings) == ["sent"]
        mail = smtp_sink.wait_for(1)[0].message
        text = mail.get_body(("plain",)).get_content()
        confirm_match = re.search(r"http://\S+/confirm/\S+", text)
        assert confirm_match is not None
        confirm_url = confirm_match.group(0)

        page.goto(confirm_url)
        shots.take("confirm")
        page.get_by_role("button", name="Yes, send me updates").click()
        page.get_by_role("heading", name="You're subscribed").wait_for()
        shots.take("confirmed")

        page.get_by_role("link", name="Change your choices").click()
        page.get_by_role("heading", name="Your choices").wait_for()
        shots.take("preferences")
        _change_preferences(page, shots)

        subscription_id, version = _in_thread(_only_subscription, settings)
        unsubscribe_url = _links(settings).unsubscribe(subscription_id, version)
        page.goto(unsubscribe_url)
        shots.take("unsubscribe")
        # What a mail provider does for RFC 8058: a cookie-less POST to the header's URL.
        one_click = httpx.post(
            unsubscribe_url, data={"List-Unsubscribe": "One-Click"}, follow_redirects=False
        )
        assert one_click.status_code == 200
        assert "set-cookie" not in one_click.headers
        page.reload()
        page.get_by_role("heading", name="You're unsubscribed").wait_for()
        shots.take("unsubscribed")


def test_sms_journey(browser_page, settings_factory, fake_twilio):
    page = browser_page
    shots = Shots(page, "sms")
    with served(settings_factory) as (server, settings):
        page.goto(f"{server.url}/topics/{TOPIC}")
        page.get_by_label("Text message (SMS)").check()
        page.get_by_label("Mobile number").fill("201 555")
        page.get_by_label("I agree to receive these messages").check()
        page.get_by_role("button", name="Get notified").click()
        page.get_by_text("isn't a valid phone number").first.wait_for()
        assert page.get_by_label("Text message (SMS)").is_checked()
        shots.take("form-error")

        page.get_by_label("Mobile number").fill("(201) 555-0123")
        page.get_by_label("I agree to receive these messages").check()
        page.get_by_role("button", name="Get notified").click()
        page.get_by_role("heading", name="Check your phone").wait_for()
        shots.take("check-phone")

        assert _in_thread(_run_confirmation_jobs, settings) == ["sent"]
        (text,) = fake_twilio.messages_to(NUMBER)
        assert "Reply YES to confirm" in text["body"]

        app_routes = {getattr(route, "path", "") for route in server.app.routes}
        inbound = "/webhooks/twilio/inbound"
        if inbound in app_routes:
            reply = _in_thread(
                fake_twilio.post_inbound,
                f"{settings.public_url}{inbound}",
                NUMBER,
                TWILIO_FROM,
                "YES",
            )
            assert reply.status_code == 200
        else:
            assert _in_thread(_confirm_by_reply, settings, NUMBER) is True

        subscription_id, version = _in_thread(_only_subscription, settings)
        links = _links(settings)
        page.goto(links.preferences(subscription_id, version))
        page.get_by_role("heading", name="Your choices").wait_for()
        shots.take("preferences")
        _change_preferences(page, shots)

        page.goto(links.unsubscribe(subscription_id, version))
        shots.take("unsubscribe")
        page.get_by_role("button", name="Unsubscribe").click()
        page.get_by_role("heading", name="You're unsubscribed").wait_for()
        shots.take("unsubscribed")


def test_embed_page_at_phone_width(browser_page, settings_factory):
    page = browser_page
    shots = Shots(page, "embed")
    with served(settings_factory) as (server, _):
        page.goto(f"{server.url}/embed/{TOPIC}")
        shots.take("embed")
        page.goto(f"{server.url}/confirm/not-a-real-token")
        page.get_by_role("heading", name="This link isn't valid").wait_for()
        shots.take("bad-link")


def teardown_module() -> None:
    # Screenshots are artifacts, not something the next run should read.
    if not any(SCREENSHOTS.glob("*.png")) and SCREENSHOTS.exists():
        shutil.rmtree(SCREENSHOTS)
