"""Building blocks for the events API tests: settings with clients, the app, events."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from pubwatch_notify.api.app import create_app
from pubwatch_notify.api.clients import SIGNATURE_HEADER, sign
from pubwatch_notify.settings import NotifySettings

REPO_ROOT = Path(__file__).resolve().parents[3]
TOPIC = "indolent-systemic-mastocytosis"
OTHER_TOPIC = "mast-cell-activation-syndrome"
PUBLIC_URL = "http://pubwatch.test"

TRIALS_KEY = "trials-key-0123456789abcdef"
GUIDELINES_KEY = "guidelines-key-0123456789abcdef"
SIGNER_KEY = "signer-key-0123456789abcdef"
SIGNER_SECRET = "signer-secret-0123456789abcdef"
CLIENT_SETTINGS: dict[str, Any] = {
    "events_api_keys": (f"trials:{TRIALS_KEY},guidelines:{GUIDELINES_KEY},signer:{SIGNER_KEY}"),
    # trials may post anywhere; guidelines only to TOPIC.
    "events_api_topics": f"guidelines:{TOPIC}",
    "events_api_signing_secrets": f"signer:{SIGNER_SECRET}",
    "events_api_rate_per_minute": 6000,
    "events_api_burst": 1000,
}


def make_settings(
    tmp_path: Path, database_url: str, redis_url: str, **overrides: Any
) -> NotifySettings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "var_dir": tmp_path / "var",
        "topics_file": REPO_ROOT / "topics.toml",
        "public_url": PUBLIC_URL,
        **CLIENT_SETTINGS,
    }
    values.update(overrides)
    return NotifySettings(**values)


@contextlib.asynccontextmanager
async def api_client(settings: NotifySettings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app with its lifespan run (migrations, Redis pool) and an in-process client."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=PUBLIC_URL) as client:
            yield app, client


def event(
    event_id: str = "trial-1", *, source: str = "trials", topic: str = TOPIC, **fields: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schema_version": 1,
        "id": event_id,
        "type": "notice",
        "topic": topic,
        "source": source,
        "occurred_at": "2026-11-25T06:00:00Z",
        "items": [
            {
                "title": "A new trial of drug X in indolent systemic mastocytosis is recruiting.",
                "url": "https://clinicaltrials.example/NCT01234567",
                "summary": "A phase 3 trial comparing drug X with placebo is open in 12 centres.",
            }
        ],
    }
    body.update(fields)
    return body


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def signed(
    body: dict[str, Any], *, secret: str = SIGNER_SECRET, at_s: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """The body's bytes and the headers of a request the signing client sends."""
    raw = json.dumps(body).encode()
    timestamp = int(time.time()) if at_s is None else at_s
    return raw, {
        **bearer(SIGNER_KEY),
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(secret.encode(), raw, timestamp),
    }
