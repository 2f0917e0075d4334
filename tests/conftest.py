"""Shared fixtures: real servers over real sockets.

- ``redis_server``: a private redis-server on a free port for the whole session; a test may
  ``kill()``, ``stop()`` and ``start()`` it (append-only on, so data survives a restart).
- ``redis_url``: that server, flushed before the test.
- ``sqlite_url`` / ``postgres_url`` / ``database_url`` (both backends when PostgreSQL is
  available through ``PUBWATCH_TEST_POSTGRES_URL``; otherwise its tests skip, saying why).
- ``smtp_sink``, ``fake_twilio``, ``fake_eutils``: the project's own test servers.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pubwatch_shared.embedded_redis import RedisServer

REPO_ROOT = Path(__file__).resolve().parent.parent
# The reference material beside the checkout (real NCBI responses, Twilio's OpenAPI file).
REFERENCE_DIR = REPO_ROOT.parent / "shared"
POSTGRES_URL_ENV = "PUBWATCH_TEST_POSTGRES_URL"


def reference_file(*parts: str) -> Path:
    """A file from ../shared, or skip the test saying what is missing."""
    path = REFERENCE_DIR.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference material {path} is absent (it sits beside the checkout in CI)")
    return path


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    if not redis_server.running:
        redis_server.start()  # a previous test killed it
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'pubwatch.db'}"


def _postgres_admin_url() -> str | None:
    return os.environ.get(POSTGRES_URL_ENV) or None


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test, dropped afterwards."""
    admin_url = _postgres_admin_url()
    if admin_url is None:
        pytest.skip(
            f"PostgreSQL tests need {POSTGRES_URL_ENV} (e.g. postgresql://postgres@127.0.0.1/test)"
        )
    import sqlalchemy

    name = f"pubwatch_test_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    url = sqlalchemy.engine.make_url(admin_url).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """Run the test once on SQLite and once on PostgreSQL."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def smtp_sink() -> Iterator[object]:
    from tests.fakes.smtp import SmtpSink

    with SmtpSink() as sink:
        yield sink


@pytest.fixture
def fake_twilio() -> Iterator[object]:
    from tests.fakes.twilio import FakeTwilio

    with FakeTwilio() as fake:
        yield fake


@pytest.fixture
def fake_eutils() -> Iterator[object]:
    from tests.fakes.eutils import FakeEutils

    with FakeEutils() as fake:
        yield fake
