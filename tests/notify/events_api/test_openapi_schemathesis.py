"""schemathesis against the live app's OpenAPI document: for the events API's operations, no
server error and no answer the document does not describe (status, content type, headers,
body schema)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from pubwatch_notify.api.app import create_app
from pubwatch_shared.embedded_redis import free_port
from tests.notify.events_api.helpers import TRIALS_KEY, bearer, make_settings

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@contextlib.contextmanager
def served(app) -> Iterator[str]:
    """``app`` on a real socket, run by uvicorn in a thread (its lifespan included)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def live_api(tmp_path, sqlite_url, redis_url) -> Iterator[str]:
    app_settings = make_settings(
        tmp_path,
        sqlite_url,
        redis_url,
        events_api_rate_per_minute=1_000_000,
        events_api_burst=100_000,
    )
    with served(create_app(app_settings)) as url:
        # One event the GET operation can find, so its 200 answer is checked too.
        posted = httpx.post(
            f"{url}/v1/events",
            json={
                "id": "known",
                "type": "notice",
                "topic": "indolent-systemic-mastocytosis",
                "source": "trials",
                "occurred_at": "2026-11-25T06:00:00Z",
                "items": [{"title": "t", "url": "https://x.example/", "summary": "s"}],
            },
            headers=bearer(TRIALS_KEY),
        )
        assert posted.status_code == 202
        yield url


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("with_key", [True, False], ids=["key", "no-key"])
def test_events_api_answers_as_documented(live_api, mode, with_key):
    schema = schemathesis.openapi.from_url(f"{live_api}/openapi.json").include(path_regex="^/v1/")
    headers = bearer(TRIALS_KEY) if with_key else None

    @given(case=schema.as_strategy(generation_mode=mode))
    @settings(
        max_examples=80 if with_key else 20,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def call(case):
        case.call_and_validate(headers=headers, checks=CHECKS)

    call()


def test_the_document_describes_auth_errors_and_examples(live_api):
    document = httpx.get(f"{live_api}/openapi.json").json()
    post = document["paths"]["/v1/events"]["post"]
    assert set(post["responses"]) >= {"200", "202", "401", "403", "413", "415", "422", "429", "503"}
    assert post["security"] == [{"BearerKey": []}, {"ApiKeyHeader": []}]
    assert "notice" in post["requestBody"]["content"]["application/json"]["examples"]
    assert "Retry-After" in post["responses"]["429"]["headers"]
    assert "Location" in post["responses"]["202"]["headers"]
    schemes = document["components"]["securitySchemes"]
    assert schemes["BearerKey"]["scheme"] == "bearer"
    assert schemes["ApiKeyHeader"]["name"] == "X-API-Key"
    assert "/v1/events/{event_id}" in document["paths"]
    assert "/v1/topics" in document["paths"]
    assert httpx.get(f"{live_api}/docs").status_code == 200
