"""Real ingest processes: two at once under one rate limit, SIGKILL at random, the worker."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import cast

import pytest
import redis

from pubwatch_shared.queue import NOTIFY_QUEUE
from pubwatch_shared.topics import Topic
from tests.fakes.eutils import FakeEutils
from tests.fakes.pubmed_xml import make_article
from tests.ingest.helpers import (
    TEST_API_KEY,
    announcements,
    cli,
    make_settings,
    queued_events,
    settings_env,
    write_topics,
)

pytestmark = pytest.mark.slow

TOPICS = [Topic(f"topic-{n}", f"Topic {n}", f"term {n}") for n in range(4)]
OLD = date.today() - timedelta(days=400)


def _env(fake: FakeEutils, redis_url: str, tmp_path: Path, **overrides) -> dict[str, str]:
    topics_file = write_topics(tmp_path / "topics.toml", TOPICS)
    settings = make_settings(fake.url, redis_url, tmp_path / "var", topics_file, **overrides)
    return settings_env(settings)


@pytest.fixture
def plain_eutils() -> Iterator[FakeEutils]:
    """No API key: NCBI's 3 requests per second apply."""
    with FakeEutils(hang_s=1.0) as fake:
        yield fake


def test_two_pollers_together_stay_under_the_rate_limit(
    plain_eutils: FakeEutils, redis_url: str, tmp_path: Path
) -> None:
    fake = plain_eutils
    for index, topic in enumerate(TOPICS):
        fake.add_articles(
            [make_article(str(100 * index + n), entry_date=OLD) for n in range(3)], [topic.query]
        )
    env = _env(fake, redis_url, tmp_path, topics_per_batch=1, efetch_batch_size=1)
    children = [
        subprocess.Popen(
            cli("ingest", "poll"), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for _ in range(2)
    ]
    outputs = [child.communicate(timeout=90)[0].decode() for child in children]
    assert [child.returncode for child in children] == [0, 0], outputs
    # Both processes did work: each either polled a topic or found it busy with the other.
    assert all("topic-0" in out for out in outputs)
    assert fake.count() >= 4 * 4, "enough requests for the limit to matter"
    assert fake.max_in_any_window(1.0) <= 3
    assert fake.count(status=429) == 0
    assert fake.stats()["unidentified"] == 0


def _poll(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cli("ingest", "poll"), env=env, stdout=out, stderr=out)


def _wait_for_outbox(probe: redis.Redis, child: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Return as soon as some topic has an outbox written and not yet applied."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and child.poll() is None:
        if probe.keys("pubwatch:ingest:topic:*:outbox:state"):
            return
        time.sleep(0.001)


def test_killed_at_random_moments_nothing_lost_nothing_twice(
    redis_url: str, tmp_path: Path
) -> None:
    rng = random.Random(20261125)
    with FakeEutils(api_keys=[TEST_API_KEY], hang_s=1.0) as fake:
        for index, topic in enumerate(TOPICS):
            fake.add_article(make_article(str(10 + index), entry_date=OLD), [topic.query])
        env = _env(
            fake,
            redis_url,
            tmp_path,
            ncbi_api_key=TEST_API_KEY,
            efetch_batch_size=5,
            event_chunk_size=1,  # many events: a wide window between outbox and commit
            topics_per_batch=1,  # commits spread over the whole run
            lock_ttl_s=1.0,
        )
        log = tmp_path / "polls.log"
        baseline = _poll(env, log)
        assert baseline.wait(timeout=60) == 0

        expected: set[tuple[str, str]] = set()
        for n in range(120):
            pmid = str(5000 + n)
            # Most articles match one topic, every fifth matches two neighbours.
            chosen = [TOPICS[n % 4]] + ([TOPICS[(n + 1) % 4]] if n % 5 == 0 else [])
            fake.add_article(make_article(pmid), [t.query for t in chosen])
            expected |= {(t.slug, pmid) for t in chosen}

        kills = 0
        probe = redis.Redis.from_url(redis_url)
        try:
            for run in range(8):
                child = _poll(env, log)
                if run % 2:
                    time.sleep(rng.uniform(0.3, 3.0))  # anywhere: start-up, search, fetch...
                else:
                    _wait_for_outbox(probe, child, timeout_s=15)  # between outbox and commit
                if child.poll() is None:
                    child.send_signal(signal.SIGKILL)
                    kills += 1
                child.wait(timeout=30)
        finally:
            probe.close()
        assert kills >= 4, "the kills should land while polls run"

        # Restart until a poll completes every topic (killed pollers' locks expire first).
        for attempt in range(20):
            final_log = tmp_path / f"final-{attempt}.log"
            child = _poll(env, final_log)
            child.wait(timeout=60)
            out = final_log.read_text()
            if child.returncode == 0 and "busy" not in out:
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"no complete poll after the kills: {log.read_text()[-3000:]}")

    recoveries = log.read_text().count("finished an interrupted poll")
    assert recoveries >= 1, "some kill should have landed between outbox and commit"
    events = queued_events(redis_url)
    new = announcements(events, "evidence.new")
    assert set(new) == expected, "nothing lost"
    assert set(new.values()) == {1}, "nothing announced twice"
    assert set(announcements(events, "evidence.baseline").values()) == {1}


def test_worker_polls_on_schedule_and_stops_cleanly_on_sigterm(
    redis_url: str, tmp_path: Path
) -> None:
    with FakeEutils(api_keys=[TEST_API_KEY]) as fake:
        fake.add_article(make_article("77", entry_date=OLD), [TOPICS[0].query])
        env = _env(fake, redis_url, tmp_path, ncbi_api_key=TEST_API_KEY)
        worker = subprocess.Popen(
            cli("ingest", "worker"), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        client = redis.Redis.from_url(redis_url)
        try:
            deadline = time.monotonic() + 30
            while (
                cast(int, client.zcard(NOTIFY_QUEUE)) < len(TOPICS) and time.monotonic() < deadline
            ):
                if worker.poll() is not None:
                    break
                time.sleep(0.2)
            worker.send_signal(signal.SIGTERM)
            out = worker.communicate(timeout=30)[0].decode()
        finally:
            client.close()
            if worker.poll() is None:
                worker.kill()
        assert worker.returncode == 0, out
        assert "ingest worker stopped" in out
    events = queued_events(redis_url)
    assert ("topic-0", "77") in announcements(events, "evidence.baseline")
