"""Links act only for their purpose, their subscription and its current version; bad links
get a friendly page, never a 500."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from pubwatch_notify.store.engine import make_engine, make_sessionmaker
from pubwatch_notify.store.models import Subscription
from pubwatch_notify.tokens import Purpose, TokenSigner
from tests.notify.web.helpers import OTHER_TOPIC, app_client, post_signup

PATHS = {
    Purpose.CONFIRM: "/confirm/",
    Purpose.PREFERENCES: "/preferences/",
    Purpose.UNSUBSCRIBE: "/unsubscribe/",
}


async def _subscriptions(settings) -> list[Subscription]:
    engine = make_engine(settings.resolved_database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            return list(await session.scalars(select(Subscription).order_by(Subscription.id)))
    finally:
        await engine.dispose()


async def _status(settings, subscription_id: int) -> str:
    return next(s.status for s in await _subscriptions(settings) if s.id == subscription_id)


@pytest.fixture
async def two_subscriptions(settings):
    async with app_client(settings) as (_, client):
        await post_signup(client, email="ann@example.org")
        await post_signup(client, topic=OTHER_TOPIC, email="bob@example.org")
    first, second = await _subscriptions(settings)
    return first, second


def _bad_tokens(settings, subscription: Subscription) -> dict[str, dict[Purpose, str]]:
    signer = TokenSigner(settings.secret_key)
    other_key = TokenSigner("another-installation's-secret")
    tokens: dict[str, dict[Purpose, str]] = {}
    for purpose in PATHS:
        wrong_purpose = Purpose.PREFERENCES if purpose != Purpose.PREFERENCES else Purpose.CONFIRM
        good = signer.make(purpose, subscription.id, subscription.token_version)
        tokens.setdefault("forged", {})[purpose] = other_key.make(
            purpose, subscription.id, subscription.token_version
        )
        tokens.setdefault("tampered", {})[purpose] = good[:-3] + (
            "AAA" if good[-3:] != "AAA" else "BBB"
        )
        tokens.setdefault("other purpose", {})[purpose] = signer.make(
            wrong_purpose, subscription.id, subscription.token_version
        )
        tokens.setdefault("old version", {})[purpose] = signer.make(
            purpose, subscription.id, subscription.token_version - 1
        )
        tokens.setdefault("no such subscription", {})[purpose] = signer.make(purpose, 999_999, 1)
        tokens.setdefault("garbage", {})[purpose] = "not-a-token"
        tokens.setdefault("very long", {})[purpose] = "x" * 5000
    return tokens


async def test_bad_tokens_are_refused_with_a_friendly_page(settings, two_subscriptions):
    first, _ = two_subscriptions
    async with app_client(settings) as (_, client):
        for kind, by_purpose in _bad_tokens(settings, first).items():
            for purpose, token in by_purpose.items():
                for method in ("GET", "POST"):
                    data = {"List-Unsubscribe": "One-Click"} if method == "POST" else None
                    response = await client.request(method, PATHS[purpose] + token, data=data)
                    assert response.status_code == 404, (kind, purpose, method)
                    assert "This link isn't valid" in response.text
    assert [s.status for s in await _subscriptions(settings)] == ["pending", "pending"]


async def test_expired_confirm_link_says_so(settings, two_subscriptions, monkeypatch):
    first, _ = two_subscriptions
    eight_days_ago = time.time() - 8 * 24 * 3600  # a confirm link lives seven
    with monkeypatch.context() as patch:
        patch.setattr("itsdangerous.timed.time.time", lambda: eight_days_ago)
        token = TokenSigner(settings.secret_key).make(
            Purpose.CONFIRM, first.id, first.token_version
        )
    async with app_client(settings) as (_, client):
        page = await client.get(f"/confirm/{token}")
        post = await client.post(f"/confirm/{token}")
    assert page.status_code == 410
    assert "This link has expired" in page.text
    assert post.status_code == 410
    assert await _status(settings, first.id) == "pending"


async def test_a_token_acts_only_on_its_own_subscription(settings, two_subscriptions):
    first, second = two_subscriptions
    token = TokenSigner(settings.secret_key).make(
        Purpose.UNSUBSCRIBE, first.id, first.token_version
    )
    async with app_client(settings) as (_, client):
        response = await client.post(
            f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"}
        )
    assert response.status_code == 200
    assert await _status(settings, first.id) == "unsubscribed"
    assert await _status(settings, second.id) == "pending"


async def test_links_from_an_ended_subscription_die_when_it_restarts(settings):
    async with app_client(settings) as (_, client):
        await post_signup(client, email="ann@example.org")
        (subscription,) = await _subscriptions(settings)
        signer = TokenSigner(settings.secret_key)
        old_confirm = signer.make(Purpose.CONFIRM, subscription.id, subscription.token_version)
        unsubscribe = signer.make(Purpose.UNSUBSCRIBE, subscription.id, subscription.token_version)
        assert (await client.post(f"/unsubscribe/{unsubscribe}")).status_code == 200
        # Still a 200 the second time: one-click may be retried by the mail provider.
        assert (await client.post(f"/unsubscribe/{unsubscribe}")).status_code == 200
        await post_signup(client, email="ann@example.org")
        response = await client.get(f"/confirm/{old_confirm}")
    assert response.status_code == 404
    (restarted,) = await _subscriptions(settings)
    assert restarted.status == "pending"
    assert restarted.token_version == subscription.token_version + 1
