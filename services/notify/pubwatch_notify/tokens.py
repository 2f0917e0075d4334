"""Signed, scoped, expiring tokens for links in messages (confirm, preferences, unsubscribe).

A token names its purpose and one subscription, and carries the subscription's
``token_version``: a token made for one purpose or person is refused for any other, and
bumping the version (e.g. after a deletion request) revokes every link sent before.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer


class Purpose(enum.StrEnum):
    CONFIRM = "confirm"
    PREFERENCES = "preferences"
    UNSUBSCRIBE = "unsubscribe"
    EVENT_PAGE = "event-page"


# How long a link stays valid. Unsubscribe links must keep working for as long as someone
# may open an old message, so they get years, not days.
MAX_AGE_S = {
    Purpose.CONFIRM: 7 * 24 * 3600,
    Purpose.PREFERENCES: 365 * 24 * 3600,
    Purpose.UNSUBSCRIBE: 5 * 365 * 24 * 3600,
    Purpose.EVENT_PAGE: 365 * 24 * 3600,
}


class TokenError(Exception):
    """The token is not valid for this use; ``expired`` tells the two cases apart for the page."""

    def __init__(self, message: str, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


@dataclass(frozen=True)
class TokenClaims:
    subscription_id: int
    token_version: int


class TokenSigner:
    def __init__(self, secret_key: str) -> None:
        self._secret_key = secret_key

    def _serializer(self, purpose: Purpose) -> URLSafeTimedSerializer:
        # The purpose is the salt: a signature for one purpose never verifies for another.
        return URLSafeTimedSerializer(self._secret_key, salt=f"pubwatch.{purpose.value}")

    def make(self, purpose: Purpose, subscription_id: int, token_version: int) -> str:
        return self._serializer(purpose).dumps([subscription_id, token_version])

    def read(self, purpose: Purpose, token: str) -> TokenClaims:
        try:
            value = self._serializer(purpose).loads(token, max_age=MAX_AGE_S[purpose])
        except SignatureExpired:
            raise TokenError("this link has expired", expired=True) from None
        except BadSignature:
            raise TokenError("this link is not valid") from None
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            raise TokenError("this link is not valid")
        return TokenClaims(subscription_id=value[0], token_version=value[1])
