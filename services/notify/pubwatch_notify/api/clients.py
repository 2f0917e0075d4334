"""Who may post events: API-key clients, their topics, and request signatures.

Settings (all optional; no keys means nobody can post):

- ``PUBWATCH_EVENTS_API_KEYS="trial-watcher:KEY,guidelines:KEY"``: a client's name and key.
  The name becomes the ``source`` of every event the client posts. A name may appear twice
  with two keys, so a key can be rotated without downtime.
- ``PUBWATCH_EVENTS_API_TOPICS="trial-watcher:slug-a slug-b,guidelines:*"``: the topics a
  client may post to. A client not listed may post to every topic.
- ``PUBWATCH_EVENTS_API_SIGNING_SECRETS="trial-watcher:SECRET"``: a client listed here must
  sign every request; two secrets for one name are both accepted (rotation).

Keys are kept only as SHA-256 digests: a memory dump or a log line never shows one, and a
key is looked up by its digest. (A keyed hash or a slow KDF buys nothing here: keys are
long random strings, not passwords, so their digests cannot be guessed back.)

Signatures follow Stripe's webhook scheme: ``X-PubWatch-Signature: t=<unix seconds>,v1=<hex>``
where the hex is HMAC-SHA256(secret, ``"<t>." + body``). The timestamp bounds a replay to the
tolerance window, and a replay inside it is harmless: the same event id is stored once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from pubwatch_notify.settings import NotifySettings

SIGNATURE_HEADER = "X-PubWatch-Signature"
SIGNATURE_SCHEME = "v1"
MIN_KEY_LENGTH = 16
ALL_TOPICS = "*"
# The contract's pattern for ``source``: a client's name is the source of its events.
_CLIENT_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
# Sources PubWatch's own services use; a client posting as one could collide with (and so
# suppress, through the idempotency key) their events.
RESERVED_NAMES = frozenset({"pubmed"})
_HEX = re.compile(r"^[0-9a-fA-F]{1,128}$")


class ClientConfigError(ValueError):
    """A ``PUBWATCH_EVENTS_API_*`` setting cannot be used. The message never holds a secret."""


class SignatureError(Exception):
    """The request's signature is missing, malformed, stale or wrong; ``str()`` says which."""


@dataclass(frozen=True)
class ApiClient:
    """A system allowed to post events."""

    name: str
    # None: every topic in the topics file.
    topics: frozenset[str] | None = None
    signing_secrets: tuple[bytes, ...] = field(default=(), repr=False)

    @property
    def requires_signature(self) -> bool:
        return bool(self.signing_secrets)

    def may_post_to(self, topic: str) -> bool:
        return self.topics is None or topic in self.topics


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _pairs(raw: str, setting: str) -> list[tuple[str, str]]:
    """``name:value`` entries separated by commas. Errors name the entry's position, never
    its value (which may be a key or a secret)."""
    pairs: list[tuple[str, str]] = []
    for position, entry in enumerate(raw.split(","), start=1):
        entry = entry.strip()
        if not entry:
            continue
        name, sep, value = entry.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not value:
            raise ClientConfigError(
                f"{setting}: entry #{position} must look like name:value (comma-separated)"
            )
        if not _CLIENT_NAME.match(name):
            raise ClientConfigError(
                f"{setting}: entry #{position}: client name {name!r} must be lowercase letters, "
                "digits, '.', '_' or '-' (it becomes the events' source)"
            )
        pairs.append((name, value))
    return pairs


def _keys(settings: NotifySettings) -> dict[str, str]:
    setting = "PUBWATCH_EVENTS_API_KEYS"
    by_digest: dict[str, str] = {}
    for name, key in _pairs(settings.events_api_keys, setting):
        if name in RESERVED_NAMES:
            raise ClientConfigError(f"{setting}: {name!r} is reserved for PubWatch's own events")
        if len(key) < MIN_KEY_LENGTH:
            raise ClientConfigError(
                f"{setting}: the key of client {name!r} is shorter than {MIN_KEY_LENGTH} "
                "characters; use a long random value (e.g. `openssl rand -hex 32`)"
            )
        digest = hash_key(key)
        if by_digest.get(digest, name) != name:
            raise ClientConfigError(
                f"{setting}: clients {by_digest[digest]!r} and {name!r} share a key"
            )
        by_digest[digest] = name
    return by_digest


def _topics(
    settings: NotifySettings, names: Collection[str], known_topics: Collection[str]
) -> dict[str, frozenset[str] | None]:
    setting = "PUBWATCH_EVENTS_API_TOPICS"
    allowed: dict[str, frozenset[str] | None] = {}
    for name, value in _pairs(settings.events_api_topics, setting):
        if name not in names:
            raise ClientConfigError(f"{setting}: {name!r} is not a client in EVENTS_API_KEYS")
        if name in allowed:
            raise ClientConfigError(f"{setting}: client {name!r} is listed twice")
        slugs = frozenset(value.split())
        if ALL_TOPICS in slugs:
            allowed[name] = None
            continue
        unknown = sorted(slugs - set(known_topics))
        if unknown:
            raise ClientConfigError(
                f"{setting}: client {name!r} lists topics not in the topics file: {unknown}"
            )
        allowed[name] = slugs
    return allowed


def _secrets(settings: NotifySettings, names: Collection[str]) -> dict[str, tuple[bytes, ...]]:
    setting = "PUBWATCH_EVENTS_API_SIGNING_SECRETS"
    secrets: dict[str, tuple[bytes, ...]] = {}
    for name, secret in _pairs(settings.events_api_signing_secrets, setting):
        if name not in names:
            raise ClientConfigError(f"{setting}: {name!r} is not a client in EVENTS_API_KEYS")
        if len(secret) < MIN_KEY_LENGTH:
            raise ClientConfigError(
                f"{setting}: the secret of client {name!r} is shorter than {MIN_KEY_LENGTH} "
                "characters"
            )
        secrets[name] = (*secrets.get(name, ()), secret.encode())
    return secrets


class ClientRegistry:
    """The configured clients, found by the digest of their key."""

    def __init__(self, by_key_digest: dict[str, ApiClient]) -> None:
        self._by_key_digest = by_key_digest

    @classmethod
    def from_settings(
        cls, settings: NotifySettings, known_topics: Collection[str]
    ) -> ClientRegistry:
        """Parse the settings; raises :class:`ClientConfigError` naming the first problem."""
        names_by_digest = _keys(settings)
        names = set(names_by_digest.values())
        topics = _topics(settings, names, known_topics)
        secrets = _secrets(settings, names)
        clients = {name: ApiClient(name, topics.get(name), secrets.get(name, ())) for name in names}
        return cls({digest: clients[name] for digest, name in names_by_digest.items()})

    @property
    def client_names(self) -> list[str]:
        return sorted({client.name for client in self._by_key_digest.values()})

    def authenticate(self, key: str) -> ApiClient | None:
        # A dict lookup by digest leaks at most how a digest's prefix compares, which says
        # nothing about the key itself (that would need a SHA-256 preimage).
        return self._by_key_digest.get(hash_key(key))


def sign(secret: bytes, body: bytes, timestamp_s: int) -> str:
    """The ``X-PubWatch-Signature`` value for ``body`` sent at ``timestamp_s``."""
    return f"t={timestamp_s},{SIGNATURE_SCHEME}={_digest(secret, body, timestamp_s)}"


def _digest(secret: bytes, body: bytes, timestamp_s: int) -> str:
    return hmac.new(secret, f"{timestamp_s}.".encode() + body, hashlib.sha256).hexdigest()


def _parse_signature(header: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isascii() and value.isdigit():
            timestamp = int(value)
        elif key == SIGNATURE_SCHEME and _HEX.match(value):
            signatures.append(value.lower())
    if timestamp is None or not signatures:
        raise SignatureError(
            f"{SIGNATURE_HEADER} must look like t=<unix seconds>,{SIGNATURE_SCHEME}=<hex "
            'HMAC-SHA256 of "<t>.<body>">'
        )
    return timestamp, signatures


def verify_signature(
    header: str | None,
    body: bytes,
    secrets: Sequence[bytes],
    *,
    now_s: float,
    tolerance_s: int,
) -> None:
    """Raise :class:`SignatureError` unless ``header`` signs ``body`` with one of ``secrets``
    at a time within ``tolerance_s`` of ``now_s``."""
    if not header:
        raise SignatureError(f"this client must sign its requests: {SIGNATURE_HEADER} is missing")
    timestamp, signatures = _parse_signature(header)
    age_s = now_s - timestamp
    if abs(age_s) > tolerance_s:
        when = "old" if age_s > 0 else "in the future"
        raise SignatureError(
            f"the signature's timestamp is {abs(int(age_s))} s {when}; more than "
            f"{tolerance_s} s is refused as a possible replay (sign each request when sending it)"
        )
    expected = [_digest(secret, body, timestamp) for secret in secrets]
    # compare_digest on every pair, so the time taken says nothing about which one matched.
    matches = [hmac.compare_digest(e, s) for e in expected for s in signatures]
    if not any(matches):
        raise SignatureError(
            "the signature does not match the body: sign the exact bytes sent, "
            'as HMAC-SHA256(secret, "<t>." + body), hex-encoded'
        )
