"""Fixtures for the ingest tests: a fast fake E-utilities and a poller wired to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pubwatch_ingest.poller import Poller
from pubwatch_ingest.runtime import build_poller, open_pool
from pubwatch_ingest.settings import IngestSettings
from pubwatch_shared.topics import Topic
from tests.fakes.eutils import FakeEutils
from tests.ingest.helpers import TEST_API_KEY, make_settings, write_topics

MakePoller = Callable[..., Any]


@pytest.fixture
def keyed_eutils() -> Iterator[FakeEutils]:
    """The fake with a valid API key (10 requests/s), so scenario tests run quickly."""
    with FakeEutils(api_keys=[TEST_API_KEY], hang_s=1.0) as fake:
        yield fake


@pytest.fixture
async def make_poller(redis_url: str, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """``await make_poller(fake, topics, **settings)`` -> a Poller; closed after the test."""
    opened: list[Poller] = []

    async def factory(fake: FakeEutils, topics: list[Topic], **overrides: Any) -> Poller:
        settings: IngestSettings = make_settings(
            fake.url,
            redis_url,
            tmp_path / "var",
            write_topics(tmp_path / "topics.toml", topics),
            **overrides,
        )
        poller = build_poller(settings, await open_pool(redis_url))
        opened.append(poller)
        return poller

    yield factory
    for poller in opened:
        await poller.client.aclose()
        await poller.redis.aclose()
