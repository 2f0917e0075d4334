"""Absolute URLs for links in messages; tokens go in the path, never addresses."""

from __future__ import annotations

from pubwatch_notify.tokens import Purpose, TokenSigner


class Links:
    def __init__(self, public_url: str, signer: TokenSigner) -> None:
        self.public_url = public_url.rstrip("/")
        self.signer = signer

    def _signed(self, path: str, purpose: Purpose, subscription_id: int, token_version: int) -> str:
        token = self.signer.make(purpose, subscription_id, token_version)
        return f"{self.public_url}{path}/{token}"

    def confirm(self, subscription_id: int, token_version: int) -> str:
        return self._signed("/confirm", Purpose.CONFIRM, subscription_id, token_version)

    def preferences(self, subscription_id: int, token_version: int) -> str:
        return self._signed("/preferences", Purpose.PREFERENCES, subscription_id, token_version)

    def unsubscribe(self, subscription_id: int, token_version: int) -> str:
        return self._signed("/unsubscribe", Purpose.UNSUBSCRIBE, subscription_id, token_version)

    def topic(self, slug: str) -> str:
        return f"{self.public_url}/topics/{slug}"

    def event(self, event_pk: int) -> str:
        """The page listing one event's items (the link in an SMS). Short and unsigned:
        an event's content is public (it is on the topic page too)."""
        return f"{self.public_url}/e/{event_pk}"
