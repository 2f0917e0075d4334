"""With a third of E-utilities requests failing, every article is still announced once."""

from __future__ import annotations

from datetime import date, timedelta

from pubwatch_shared.topics import Topic
from tests.fakes.eutils import FakeEutils
from tests.fakes.pubmed_xml import make_article
from tests.ingest.helpers import TEST_API_KEY, announcements, queued_events

A = Topic("topic-a", "A", "topic a")
B = Topic("topic-b", "B", "topic b")
ALL_FAULTS = ["429", "500", "502", "timeout", "truncated", "empty"]


async def test_faulty_server_still_gives_exactly_once(
    keyed_eutils: FakeEutils, make_poller, redis_url: str
) -> None:
    fake = keyed_eutils
    old = date.today() - timedelta(days=400)
    fake.add_articles([make_article(str(n), entry_date=old) for n in range(1, 6)], [A.query])
    fake.add_articles([make_article(str(n), entry_date=old) for n in range(6, 9)], [B.query])
    poller = await make_poller(
        fake,
        [A, B],
        ncbi_api_key=TEST_API_KEY,
        request_timeout_s=0.3,
        max_attempts=3,  # low, so some polls fail outright and must be repeated
        efetch_batch_size=4,
    )
    # The baseline first, so that what is added later is "new" however the polls fare.
    assert {r.status for r in await poller.poll([A, B])} == {"baseline"}
    fake.fault_rate(1 / 3, ALL_FAULTS, seed=7)

    expected_new: set[tuple[str, str]] = set()
    for round_number in range(3):
        for n in range(10):
            pmid = str(1000 + round_number * 100 + n)
            topics = [A, B] if n % 3 == 0 else [A] if n % 3 == 1 else [B]
            fake.add_article(make_article(pmid), [t.query for t in topics])
            expected_new |= {(t.slug, pmid) for t in topics}
        for _ in range(3):  # a scheduled poll every so often, some failing
            await poller.poll([A, B])

    fake.clear_faults()
    reports = await poller.poll([A, B])
    assert {r.status for r in reports} == {"polled"}

    faults = fake.stats()["by_fault"]
    assert sum(faults.values()) >= 10, f"the fake should have failed many requests: {faults}"
    events = queued_events(redis_url)
    baseline = announcements(events, "evidence.baseline")
    assert set(baseline) == {("topic-a", str(n)) for n in range(1, 6)} | {
        ("topic-b", str(n)) for n in range(6, 9)
    }
    new = announcements(events, "evidence.new")
    assert set(new) == expected_new
    assert set(new.values()) | set(baseline.values()) == {1}, "nobody hears anything twice"
