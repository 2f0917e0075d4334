"""Fixtures for the web tests. HTTP-level tests run on SQLite; the store tests (those that
take ``db_settings``) run on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pubwatch_notify.settings import NotifySettings
from tests.notify.web.helpers import make_settings


@pytest.fixture
def settings(sqlite_url: str, redis_url: str, tmp_path: Path) -> NotifySettings:
    return make_settings(sqlite_url, redis_url, tmp_path)


@pytest.fixture
def db_settings(database_url: str, redis_url: str, tmp_path: Path) -> NotifySettings:
    return make_settings(database_url, redis_url, tmp_path)


@pytest.fixture
def settings_with_channels(
    database_url: str, redis_url: str, tmp_path: Path, smtp_sink, fake_twilio
) -> NotifySettings:
    return make_settings(
        database_url, redis_url, tmp_path, smtp_url=smtp_sink.url, twilio=fake_twilio
    )


@pytest.fixture
def settings_factory(
    sqlite_url: str, redis_url: str, tmp_path: Path, smtp_sink, fake_twilio
) -> Callable[[str], NotifySettings]:
    def build(public_url: str) -> NotifySettings:
        return make_settings(
            sqlite_url,
            redis_url,
            tmp_path,
            public_url=public_url,
            smtp_url=smtp_sink.url,
            twilio=fake_twilio,
        )

    return build
