"""Several polls against the fake E-utilities and a real Redis: what gets announced, once."""

from __future__ import annotations

from datetime import date, timedelta

from pubwatch_ingest.poller import retraction_term
from pubwatch_shared.events import EventType
from pubwatch_shared.topics import Topic
from tests.fakes.eutils import FakeEutils
from tests.fakes.pubmed_xml import make_article
from tests.ingest.helpers import TEST_API_KEY, announcements, queued_events

ISM = Topic("indolent-sm", "Indolent SM", '"systemic mastocytosis" AND indolent')
MCAS = Topic("mcas", "MCAS", '"mast cell activation syndrome"')


def _efetched_ids(fake: FakeEutils) -> list[str]:
    ids: list[str] = []
    for record in fake.requests:
        if record.endpoint == "efetch" and record.status == 200:
            ids += record.params["id"].split(",")
    return ids


async def test_polls_over_time(keyed_eutils: FakeEutils, make_poller, redis_url: str) -> None:
    fake = keyed_eutils
    today = date.today()
    old = today - timedelta(days=400)
    fake.add_articles([make_article(p, entry_date=old) for p in ("101", "102")], [ISM.query])
    fake.add_article(make_article("201", entry_date=old), [MCAS.query])
    poller = await make_poller(fake, [ISM, MCAS], ncbi_api_key=TEST_API_KEY)

    # 1. Baseline: the existing literature is posted as baseline, nobody is told.
    reports = await poller.poll([ISM, MCAS])
    assert [r.status for r in reports] == ["baseline", "baseline"]
    events = queued_events(redis_url)
    assert {e.type for e in events} == {EventType.BASELINE}
    assert set(announcements(events, "evidence.baseline")) == {
        ("indolent-sm", "101"),
        ("indolent-sm", "102"),
        ("mcas", "201"),
    }

    # 2. New articles: one only in ISM, one in both topics, and an erratum.
    fake.add_article(
        make_article("301", publication_types=["Randomized Controlled Trial"]), [ISM.query]
    )
    fake.add_article(
        make_article("302", publication_types=["Case Reports"]), [ISM.query, MCAS.query]
    )
    fake.add_article(make_article("303", publication_types=["Published Erratum"]), [ISM.query])
    fake.reset_log()
    await poller.poll([ISM, MCAS])
    fetched = _efetched_ids(fake)
    assert sorted(fetched) == ["301", "302", "303"], "each new article fetched once"
    events = queued_events(redis_url)
    new = [e for e in events if e.type is EventType.NEW]
    assert len(new) == 2, "one evidence.new per topic per poll"
    assert set(announcements(events, "evidence.new")) == {
        ("indolent-sm", "301"),
        ("indolent-sm", "302"),
        ("mcas", "302"),
    }
    ism_event = next(e for e in new if e.topic == "indolent-sm")
    assert ism_event.strongest_level is not None
    assert ism_event.strongest_level.value == "rct"
    assert ism_event.items[0].pmid == "301", "strongest evidence first"

    # 3. Nothing new: nothing fetched, no event.
    fake.reset_log()
    before = len(queued_events(redis_url))
    await poller.poll([ISM, MCAS])
    assert _efetched_ids(fake) == []
    assert len(queued_events(redis_url)) == before

    # 4. A record entered late with an entry date older than the watermark: the overlap
    #    window still finds it.
    fake.add_article(make_article("401", entry_date=today - timedelta(days=10)), [ISM.query])
    await poller.poll([ISM, MCAS])
    assert announcements(queued_events(redis_url), "evidence.new")[("indolent-sm", "401")] == 1

    # 5. An announced article is retracted: evidence.retracted names it, once.
    retracted = fake.article("302")
    assert retracted is not None
    fake.update_article(retracted.retracted("999"))
    await poller.poll([ISM, MCAS])
    await poller.poll([ISM, MCAS])
    events = queued_events(redis_url)
    retractions = [e for e in events if e.type is EventType.RETRACTED]
    assert sorted((e.topic, e.items[0].pmid) for e in retractions) == [
        ("indolent-sm", "302"),
        ("mcas", "302"),
    ]
    assert "Retracted Publication" in retractions[0].items[0].publication_types
    searched = [r.params["term"] for r in fake.requests if r.endpoint == "esearch"]
    assert retraction_term(ISM.query) in searched

    # Over the whole story every article was announced exactly once per topic.
    counts = announcements(events, "evidence.new")
    assert set(counts.values()) == {1}
    assert ("indolent-sm", "303") not in counts, "an erratum alone makes no event"


async def test_overlap_window_is_what_catches_late_entries(
    keyed_eutils: FakeEutils, make_poller, redis_url: str
) -> None:
    """The same late entry is missed with no overlap: the test above is not vacuous."""
    fake = keyed_eutils
    fake.add_article(make_article("1", entry_date=date.today() - timedelta(days=400)), [ISM.query])
    poller = await make_poller(fake, [ISM], ncbi_api_key=TEST_API_KEY, overlap_days=0)
    await poller.poll([ISM])
    fake.add_article(make_article("2", entry_date=date.today() - timedelta(days=10)), [ISM.query])
    await poller.poll([ISM])
    assert ("indolent-sm", "2") not in announcements(queued_events(redis_url), "evidence.new")


async def test_many_new_articles_are_chunked_with_stable_ids(
    keyed_eutils: FakeEutils, make_poller, redis_url: str
) -> None:
    fake = keyed_eutils
    fake.add_article(make_article("1", entry_date=date.today() - timedelta(days=400)), [ISM.query])
    poller = await make_poller(
        fake, [ISM], ncbi_api_key=TEST_API_KEY, event_chunk_size=4, efetch_batch_size=5
    )
    await poller.poll([ISM])
    fake.add_articles([make_article(str(1000 + n)) for n in range(10)], [ISM.query])
    dry = await poller.poll([ISM], dry_run=True)
    assert queued_events(redis_url)[0].type is EventType.BASELINE
    assert len(queued_events(redis_url)) == 1, "a dry run sends nothing"
    reports = await poller.poll([ISM])
    assert [e.id for e in reports[0].events] == [e.id for e in dry[0].events]
    new = [e for e in queued_events(redis_url) if e.type is EventType.NEW]
    assert sorted(len(e.items) for e in new) == [2, 4, 4]
    assert len(announcements(new, "evidence.new")) == 10
    assert fake.count("efetch") == 1 + 2, "batches of at most efetch_batch_size"


async def test_efetches_start_while_later_topics_are_still_searched(
    keyed_eutils: FakeEutils, make_poller, redis_url: str
) -> None:
    fake = keyed_eutils
    topics = [Topic(f"topic-{n}", f"Topic {n}", f'"condition {n}"') for n in range(4)]
    old = date.today() - timedelta(days=400)
    for n, topic in enumerate(topics):
        articles = [make_article(str(5000 + 10 * n + k), entry_date=old) for k in range(5)]
        fake.add_articles(articles, [topic.query])
    # A shared article: fetched once although two topics find it.
    fake.add_article(make_article("5999", entry_date=old), [topics[0].query, topics[3].query])
    poller = await make_poller(fake, topics, ncbi_api_key=TEST_API_KEY, efetch_batch_size=5)

    reports = await poller.poll(topics)

    assert [r.status for r in reports] == ["baseline"] * 4
    endpoints = [record.endpoint for record in fake.requests]
    last_search = max(i for i, endpoint in enumerate(endpoints) if endpoint == "esearch")
    assert endpoints.index("efetch") < last_search, "fetching overlaps the searches"
    fetched = _efetched_ids(fake)
    assert sorted(fetched) == sorted(set(fetched)), "each article fetched once"
    assert len(fetched) == 21
    assert len(announcements(queued_events(redis_url), "evidence.baseline")) == 22
