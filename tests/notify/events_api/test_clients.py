"""Parsing PUBWATCH_EVENTS_API_*: names, hashed keys, topics, secrets; errors never show a key."""

from __future__ import annotations

from typing import Any

import pytest

from pubwatch_notify.api.clients import ClientConfigError, ClientRegistry, hash_key
from pubwatch_notify.settings import NotifySettings

TOPICS = ["topic-a", "topic-b"]
KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-0123456789abcdef"


def registry(**values: Any) -> ClientRegistry:
    return ClientRegistry.from_settings(NotifySettings(**values), TOPICS)


def test_keys_name_clients_and_are_kept_only_as_digests():
    clients = registry(events_api_keys=f" alpha:{KEY_A} , beta:{KEY_B},alpha:{KEY_B[::-1]}")
    alpha = clients.authenticate(KEY_A)
    assert alpha is not None
    assert alpha.name == "alpha"
    assert clients.authenticate(KEY_B[::-1]) == alpha  # a second key: rotation
    assert clients.authenticate("key-c-0123456789abcdef") is None
    assert KEY_A not in repr(vars(clients))
    assert hash_key(KEY_A) in repr(vars(clients))
    assert clients.client_names == ["alpha", "beta"]


def test_no_keys_means_nobody_can_post():
    assert registry().client_names == []


def test_topics_and_secrets_attach_to_clients():
    clients = registry(
        events_api_keys=f"alpha:{KEY_A},beta:{KEY_B}",
        events_api_topics="alpha:topic-a, beta:*",
        events_api_signing_secrets="beta:secret-0123456789abcdef",
    )
    alpha, beta = clients.authenticate(KEY_A), clients.authenticate(KEY_B)
    assert alpha is not None
    assert beta is not None
    assert alpha.may_post_to("topic-a")
    assert not alpha.may_post_to("topic-b")
    assert beta.may_post_to("topic-b")
    assert beta.requires_signature
    assert not alpha.requires_signature
    assert "secret-0123" not in repr(beta)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"events_api_keys": f"alpha{KEY_A}"}, "entry #1 must look like name:value"),
        ({"events_api_keys": f"Alpha:{KEY_A}"}, "must be lowercase"),
        ({"events_api_keys": f"pubmed:{KEY_A}"}, "reserved"),
        ({"events_api_keys": "alpha:short"}, "shorter than 16"),
        ({"events_api_keys": f"alpha:{KEY_A},beta:{KEY_A}"}, "share a key"),
        (
            {"events_api_keys": f"alpha:{KEY_A}", "events_api_topics": "gamma:topic-a"},
            "'gamma' is not a client",
        ),
        (
            {"events_api_keys": f"alpha:{KEY_A}", "events_api_topics": "alpha:topic-z"},
            "not in the topics file: ['topic-z']",
        ),
        (
            {"events_api_keys": f"alpha:{KEY_A}", "events_api_signing_secrets": "alpha:tiny"},
            "shorter than 16",
        ),
    ],
)
def test_bad_settings_are_refused_with_a_message_that_holds_no_secret(values, message):
    with pytest.raises(
        ClientConfigError, match=message.replace("[", r"\[").replace("]", r"\]")
    ) as info:
        registry(**values)
    assert KEY_A not in str(info.value)
    assert "tiny" not in str(info.value)
    assert "short" not in str(info.value) or "shorter" in str(info.value)
