"""Ingest benchmark: E-utilities requests and time per poll cycle, and parse throughput.

For N topics with overlapping results (the fake E-utilities server over real sockets, a
private Redis) it runs the baseline cycle and then a cycle with new articles, and compares

- requests per cycle with the minimum: one esearch per topic + ceil(new unique PMIDs / 200)
  efetch (ratio 1.0 is optimal);
- cycle time with the floor the rate limit sets: requests / allowed requests per second;
- articles parsed per second with ``Bio.Entrez.read`` (and with PubWatch's full article
  reading on top) on a realistic 200-record efetch answer.

``run(quick)`` returns the figures; ``python -m benchmarks.ingest_cycle [--quick]`` prints them.
"""

from __future__ import annotations

import asyncio
import io
import math
import random
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from Bio import Entrez

from pubwatch_ingest.articles import parse_efetch_xml
from pubwatch_ingest.runtime import build_poller, open_pool
from pubwatch_ingest.settings import IngestSettings
from pubwatch_shared.embedded_redis import RedisServer
from pubwatch_shared.topics import Topic
from tests.fakes.eutils import FakeEutils, populate_synthetic
from tests.fakes.pubmed_xml import efetch_xml, make_article

API_KEY = "benchmark-key"
RATE_PER_S = 10  # NCBI's limit with an API key


def _settings(fake: FakeEutils, redis_url: str, var_dir: Path) -> IngestSettings:
    return IngestSettings(
        eutils_url=fake.url,
        redis_url=redis_url,
        var_dir=var_dir,
        ncbi_email="bench@pubwatch.test",
        ncbi_api_key=API_KEY,
        retraction_check_interval_s=86_400,
        topics_per_batch=100,
    )


async def _cycle(poller: Any, topics: list[Topic], fake: FakeEutils) -> dict[str, float]:
    fake.reset_log()
    started = time.monotonic()
    reports = await poller.poll(topics)
    elapsed_s = time.monotonic() - started
    unique_new = {a.pmid for r in reports for a in r.new_articles}
    requests = fake.count()
    minimum = len(topics) + math.ceil(len(unique_new) / 200)
    floor_s = requests / RATE_PER_S
    return {
        "topics": len(topics),
        "new_unique_pmids": len(unique_new),
        "requests": requests,
        "requests_minimum": minimum,
        "requests_ratio": round(requests / minimum, 3),
        "cycle_s": round(elapsed_s, 2),
        "cycle_floor_s": round(floor_s, 2),
        "cycle_time_ratio": round(elapsed_s / floor_s, 3),
    }


async def _cycles(n_topics: int, per_topic: int, new_per_topic: int) -> dict[str, Any]:
    rng = random.Random(1)
    with (
        tempfile.TemporaryDirectory() as tmp,
        FakeEutils(api_keys=[API_KEY]) as fake,
        RedisServer(Path(tmp) / "redis", appendonly=False) as redis_server,
    ):
        terms = populate_synthetic(
            fake, topics=n_topics, per_topic=per_topic, overlap=0.2, seed=1, days=300
        )
        topics = [Topic(t, t, t) for t in terms]
        pool = await open_pool(redis_server.url)
        poller = build_poller(_settings(fake, redis_server.url, Path(tmp) / "var"), pool)
        try:
            baseline = await _cycle(poller, topics, fake)
            # New articles since: a fifth of them match two neighbouring topics.
            next_pmid = 900_000_000
            for index in range(n_topics):
                for _ in range(new_per_topic):
                    next_pmid += 1
                    chosen = [index] + ([(index + 1) % n_topics] if rng.random() < 0.2 else [])
                    fake.add_article(
                        make_article(next_pmid, entry_date=date.today() - timedelta(days=1)),
                        [topics[i].query for i in chosen],
                    )
            steady = await _cycle(poller, topics, fake)
        finally:
            await poller.client.aclose()
            await pool.aclose()
    return {"baseline_cycle": baseline, "new_articles_cycle": steady}


def _parse_rate(repeats: int) -> dict[str, Any]:
    body = efetch_xml([make_article(30_000_000 + n, seed=n) for n in range(200)])
    started = time.perf_counter()
    for _ in range(repeats):
        Entrez.read(io.BytesIO(body), validate=False, escape=True)
    entrez_s = (time.perf_counter() - started) / repeats
    started = time.perf_counter()
    for _ in range(repeats):
        parse_efetch_xml(body)
    full_s = (time.perf_counter() - started) / repeats
    return {
        "batch_records": 200,
        "batch_kib": round(len(body) / 1024, 1),
        "entrez_read_articles_per_s": round(200 / entrez_s),
        "full_parse_articles_per_s": round(200 / full_s),
        # A cycle at 10 requests/s can at best bring 2,000 records/s: parsing must beat that.
        "records_per_s_at_rate_limit": 200 * RATE_PER_S,
    }


def run(quick: bool) -> dict[str, Any]:
    """Figures with their baselines; ``quick`` uses 20 topics instead of 100."""
    n_topics = 20 if quick else 100
    figures = asyncio.run(_cycles(n_topics, per_topic=40 if quick else 60, new_per_topic=3))
    figures["parse"] = _parse_rate(repeats=3 if quick else 10)
    return figures


def main() -> None:
    quick = "--quick" in sys.argv[1:]
    figures = run(quick)
    for name in ("baseline_cycle", "new_articles_cycle"):
        c = figures[name]
        print(
            f"{name}: {c['topics']} topics, {c['new_unique_pmids']} new unique PMIDs; "
            f"requests {c['requests']} vs minimum {c['requests_minimum']} "
            f"(ratio {c['requests_ratio']}); time {c['cycle_s']} s vs rate-limit floor "
            f"{c['cycle_floor_s']} s (ratio {c['cycle_time_ratio']})"
        )
    p = figures["parse"]
    print(
        f"parse: Entrez.read {p['entrez_read_articles_per_s']} articles/s, full article reading "
        f"{p['full_parse_articles_per_s']} articles/s on a {p['batch_records']}-record batch "
        f"({p['batch_kib']} KiB); the rate limit delivers at most "
        f"{p['records_per_s_at_rate_limit']} records/s"
    )


if __name__ == "__main__":
    main()
