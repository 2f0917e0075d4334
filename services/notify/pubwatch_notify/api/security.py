"""Defences for the web forms: CSRF tokens, rate limits, and the security headers.

CSRF is a signed double submit: the page puts a signed random nonce in a hidden field and the
same nonce in a cookie; a POST must bring both, matching. Browsers that do not send the
cookie from inside a cross-site frame (the embeddable form) are accepted when the request's
``Origin`` is PubWatch's own, which a forged cross-site POST cannot claim. The RFC 8058
one-click unsubscribe is exempt by design: its URL's token is the authorization.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import FastAPI, Request, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer
from redis.asyncio import Redis
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pubwatch_notify.settings import NotifySettings

CSRF_COOKIE = "pubwatch_csrf"
CSRF_FIELD = "csrf_token"
CSRF_MAX_AGE_S = 24 * 3600
_NONCE_BYTES = 24
RATE_LIMIT_PREFIX = "pubwatch:ratelimit:"
RATE_WINDOW_S = 3600

# Pages use no inline script; inline styles are allowed for e-mail-like fragments.
_CSP_BASE = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; form-action 'self'; base-uri 'none'; object-src 'none'"
)
# Swagger UI loads its scripts from a CDN; it is an operator's page, not a subscriber's.
_NO_CSP_PREFIXES = ("/docs", "/redoc")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True)
class CsrfPair:
    nonce: str
    token: str


class Csrf:
    def __init__(self, secret_key: str, public_url: str) -> None:
        self._serializer = URLSafeTimedSerializer(secret_key, salt="pubwatch.csrf")
        self._public_origin = _origin(public_url)
        self._secure_cookie = public_url.startswith("https://")

    def pair_for(self, request: Request) -> CsrfPair:
        """A token for the page being rendered, reusing the browser's nonce when it has one
        (so two open tabs both keep working)."""
        nonce = request.cookies.get(CSRF_COOKIE, "")
        if not (16 <= len(nonce) <= 64 and nonce.replace("-", "").replace("_", "").isalnum()):
            nonce = secrets.token_urlsafe(_NONCE_BYTES)
        return CsrfPair(nonce=nonce, token=self._serializer.dumps(nonce))

    def set_cookie(self, response: Response, pair: CsrfPair) -> None:
        response.set_cookie(
            CSRF_COOKIE,
            pair.nonce,
            max_age=CSRF_MAX_AGE_S,
            httponly=True,
            secure=self._secure_cookie,
            samesite="lax",
            path="/",
        )

    def verify(self, request: Request, submitted: str) -> bool:
        try:
            nonce = self._serializer.loads(submitted, max_age=CSRF_MAX_AGE_S)
        except BadSignature:
            return False
        if not isinstance(nonce, str):
            return False
        cookie = request.cookies.get(CSRF_COOKIE)
        if cookie is not None:
            return secrets.compare_digest(cookie, nonce)
        return request.headers.get("origin") == self._public_origin


class RateLimiter:
    """Fixed-window counters in Redis, shared by every API process."""

    def __init__(self, redis: Redis, secret_key: str) -> None:
        self._redis = redis
        self._key_salt = secret_key.encode()

    def _key(self, scope: str, identity: str) -> str:
        # Keys hold a keyed hash, never an IP, address or number in clear.
        digest = hashlib.blake2b(identity.encode(), key=self._key_salt[:64], digest_size=16)
        return f"{RATE_LIMIT_PREFIX}{scope}:{digest.hexdigest()}"

    async def allow(
        self, scope: str, identity: str, limit: int, window_s: int = RATE_WINDOW_S
    ) -> bool:
        """Count one attempt; False once ``limit`` attempts were made in the window."""
        key = self._key(scope, identity)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(key, 0, ex=window_s, nx=True)
            pipe.incr(key)
            _, count = await pipe.execute()
        return int(count) <= limit


class SecurityHeaders:
    """Pure ASGI middleware adding the security headers to every HTTP response.

    (Starlette's ``BaseHTTPMiddleware``, behind ``@app.middleware("http")``, wraps every
    response in a second stream and task: a large share of a small request's cost.)
    """

    def __init__(self, app: ASGIApp, embed_origins: Sequence[str]) -> None:
        self.app = app
        embed_ancestors = " ".join(embed_origins) or "'none'"

        def headers(path_kind: str) -> list[tuple[str, str]]:
            framing: list[tuple[str, str]] = []
            if path_kind == "embed":
                # Framable by the sites the operator lists, and only by them.
                frame_ancestors = embed_ancestors
            else:
                frame_ancestors = "'none'"
                framing.append(("X-Frame-Options", "DENY"))
            if path_kind != "no-csp":
                framing.append(
                    ("Content-Security-Policy", f"{_CSP_BASE}; frame-ancestors {frame_ancestors}")
                )
            # Pages under /confirm, /preferences and /unsubscribe carry a token in their URL:
            # never hand it to another site as a Referer.
            return [
                *framing,
                ("Referrer-Policy", "same-origin"),
                ("X-Content-Type-Options", "nosniff"),
            ]

        self._embed = headers("embed")
        self._no_csp = headers("no-csp")
        self._default = headers("default")
        # A path under both /embed/ and a no-CSP prefix cannot exist; /embed/ wins anyway.

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith("/embed/"):
            extra = self._embed
        elif path.startswith(_NO_CSP_PREFIXES):
            extra = self._no_csp
        else:
            extra = self._default

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in extra:
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_security_headers(app: FastAPI, settings: NotifySettings) -> None:
    app.add_middleware(SecurityHeaders, embed_origins=tuple(settings.embed_origins))
