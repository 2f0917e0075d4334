"""Ingest benchmark: E-utilities requests and time per poll cycle at 10, 100 and 1,000 topics.

For each size, N topics with overlapping results (the fake E-utilities server over real
sockets, a private Redis), it runs the baseline cycle (each topic's first poll) and then a
cycle with new articles, and compares

- requests per cycle with the minimum: one esearch per topic + ceil(new unique PMIDs / 200)
  efetch, an article that several topics find counted once (ratio 1.0 is optimal);
- cycle time with the floor the rate limit sets: requests / allowed requests per second.
  A cycle of a few seconds is bound by latency rather than by the rate: at 10 topics the
  10 esearches go at once, the efetches wait out the rest of that second, and their
  parsing and the announcements come on top, none of which the floor counts (the
  new-articles cycle, one small efetch, can even finish a hair under its floor);
- the most requests the server saw in any 1-s window with the limit (10/s with a key),
  and how many it refused with 429: the goal is never a request over the limit.

It also measures articles parsed per second with ``Bio.Entrez.read`` (and with PubWatch's
full article reading on top) on a realistic 200-record efetch answer.

Full mode runs 10, 100 and 1,000 topics; quick mode runs 10 and 100. ``run(quick)``
returns the figures keyed by topic count, ``table_rows(figures)`` the summary rows;
``python -m benchmarks.ingest_cycle [--quick] [--sizes 10,100] [--json]`` prints them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import math
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from Bio import Entrez

from pubwatch_ingest.articles import parse_efetch_xml
from pubwatch_ingest.poller import Poller
from pubwatch_ingest.runtime import build_poller, open_pool
from pubwatch_ingest.settings import IngestSettings
from pubwatch_shared.embedded_redis import RedisServer
from pubwatch_shared.topics import Topic
from tests.fakes.eutils import FakeEutils, populate_synthetic
from tests.fakes.pubmed_xml import efetch_xml, make_article

API_KEY = "benchmark-key"
RATE_PER_S = 10  # NCBI's limit with an API key
EFETCH_BATCH_SIZE = 200  # PMIDs per efetch, the most NCBI advises (and the ingest default)

FULL_SIZES = (10, 100, 1_000)
QUICK_SIZES = (10, 100)

ARTICLES_PER_TOPIC = 60
# A fifth of each topic's hits also belong to a neighbouring topic (a ring of topics), and
# a fifth of the new articles match the next topic too: shared articles must be fetched once.
OVERLAP = 0.2
NEW_ARTICLES_PER_TOPIC = 3
# Each cycle starts once every earlier request has left the limiter's window (1.02 s) and
# the fake's (1 s), so a cycle's time and peak do not depend on the cycle before it.
QUIET_BEFORE_CYCLE_S = 1.1

GOALS = {
    "requests_ratio_max": 1.1,
    "cycle_time_ratio_max": 1.2,
    "max_requests_in_any_second_max": RATE_PER_S,
}
CYCLES = (("baseline_cycle", "baseline cycle"), ("new_articles_cycle", "new-articles cycle"))


def _settings(fake: FakeEutils, redis_url: str, var_dir: Path) -> IngestSettings:
    return IngestSettings(
        eutils_url=fake.url,
        redis_url=redis_url,
        var_dir=var_dir,
        ncbi_email="bench@pubwatch.test",
        ncbi_api_key=API_KEY,
        retraction_check_interval_s=86_400,
        topics_per_batch=100,
        efetch_batch_size=EFETCH_BATCH_SIZE,
    )


async def _cycle(poller: Poller, topics: list[Topic], fake: FakeEutils) -> dict[str, Any]:
    await asyncio.sleep(QUIET_BEFORE_CYCLE_S)
    fake.reset_log()
    started = time.monotonic()
    reports = await poller.poll(topics)
    elapsed_s = time.monotonic() - started
    failed = [report for report in reports if report.status == "failed"]
    if failed:
        # Failed topics commit nothing, so the counts below would not describe a cycle.
        raise RuntimeError(f"{len(failed)} of {len(topics)} topics failed: {failed[0].error}")
    unique_new = {article.pmid for report in reports for article in report.new_articles}
    requests = fake.count()
    minimum = len(topics) + math.ceil(len(unique_new) / EFETCH_BATCH_SIZE)
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
        "max_requests_in_any_second": fake.max_in_any_window(1.0),
        "rate_limit": RATE_PER_S,
        "rejected_429": fake.count(status=429),
    }


def _add_new_articles(fake: FakeEutils, topics: list[Topic]) -> None:
    """``NEW_ARTICLES_PER_TOPIC`` articles entered yesterday per topic, some shared."""
    rng = random.Random(1)
    next_pmid = 900_000_000
    for index in range(len(topics)):
        for _ in range(NEW_ARTICLES_PER_TOPIC):
            next_pmid += 1
            matched = [index] + ([(index + 1) % len(topics)] if rng.random() < OVERLAP else [])
            fake.add_article(
                make_article(next_pmid, entry_date=date.today() - timedelta(days=1)),
                [topics[i].query for i in matched],
            )


async def _measure_size(n_topics: int) -> dict[str, Any]:
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory() as tmp,
        FakeEutils(api_keys=[API_KEY]) as fake,
        RedisServer(Path(tmp) / "redis", appendonly=False) as redis_server,
    ):
        terms = populate_synthetic(
            fake,
            topics=n_topics,
            per_topic=ARTICLES_PER_TOPIC,
            overlap=OVERLAP,
            seed=1,
            days=300,
        )
        topics = [Topic(term, term, term) for term in terms]
        pool = await open_pool(redis_server.url)
        poller = build_poller(_settings(fake, redis_server.url, Path(tmp) / "var"), pool)
        figures: dict[str, Any] = {}
        try:
            figures["baseline_cycle"] = await _cycle(poller, topics, fake)
            _add_new_articles(fake, topics)
            figures["new_articles_cycle"] = await _cycle(poller, topics, fake)
        finally:
            await poller.client.aclose()
            await pool.aclose()
    figures["elapsed_s"] = round(time.monotonic() - started, 1)
    return figures


def _parse_rate(repeats: int) -> dict[str, Any]:
    records = EFETCH_BATCH_SIZE
    body = efetch_xml([make_article(30_000_000 + n, seed=n) for n in range(records)])
    # The first read loads the DTDs, once per process: left out, or it would be charged to
    # Entrez.read alone and make it look slower than the full reading that follows.
    parse_efetch_xml(body)
    gc.collect()
    entrez_times: list[float] = []
    full_times: list[float] = []
    for _ in range(repeats):
        # Interleaved, and the median taken: load from other processes on this shared
        # machine then falls on both readings alike instead of on whichever ran during it.
        started = time.perf_counter()
        Entrez.read(io.BytesIO(body), validate=False, escape=True)
        entrez_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        parse_efetch_xml(body)
        full_times.append(time.perf_counter() - started)
    entrez_s = statistics.median(entrez_times)
    full_s = statistics.median(full_times)
    return {
        "batch_records": records,
        "batch_kib": round(len(body) / 1024, 1),
        "entrez_read_articles_per_s": round(records / entrez_s),
        "full_parse_articles_per_s": round(records / full_s),
        # A cycle at 10 requests/s can at best bring 2,000 records/s: parsing must beat that.
        "records_per_s_at_rate_limit": records * RATE_PER_S,
    }


def run(quick: bool, sizes: Sequence[int] | None = None) -> dict[str, Any]:
    """Figures per topic count (``sizes`` replaces the mode's), and the parse rate."""
    chosen = sizes or (QUICK_SIZES if quick else FULL_SIZES)
    # Parsing first, in a process that has not yet held a thousand topics' articles.
    parse = _parse_rate(repeats=5 if quick else 15)
    by_size: dict[str, Any] = {}
    for n_topics in chosen:
        # Keys are strings already, as they will be in results.json.
        by_size[str(n_topics)] = asyncio.run(_measure_size(n_topics))
    return {
        "sizes": by_size,
        "parse": parse,
        "goals": GOALS,
    }


def _mark(met: bool) -> str:
    return "✓" if met else "✗"


def _cycle_row(name: str, cycle: dict[str, Any]) -> tuple[str, str, str, str]:
    requests_met = cycle["requests_ratio"] <= GOALS["requests_ratio_max"]
    time_met = cycle["cycle_time_ratio"] <= GOALS["cycle_time_ratio_max"]
    peak_met = cycle["max_requests_in_any_second"] <= cycle["rate_limit"]
    limit_met = peak_met and cycle["rejected_429"] == 0
    return (
        "ingest",
        name,
        f"{cycle['requests']:,} requests, {cycle['cycle_s']} s, "
        f"peak {cycle['max_requests_in_any_second']} in 1 s",
        f"min {cycle['requests_minimum']:,} ({cycle['requests_ratio']:.2f}x "
        f"{_mark(requests_met)}), floor {cycle['cycle_floor_s']} s "
        f"({cycle['cycle_time_ratio']:.2f}x {_mark(time_met)}), "
        f"limit {cycle['rate_limit']}/s {_mark(limit_met)}",
    )


def table_rows(figures: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(benchmark, figure, PubWatch, minimum / floor / ratio) rows for the summary table."""
    rows: list[tuple[str, str, str, str]] = []
    for count, size in figures.get("sizes", {}).items():
        for key, label in CYCLES:
            name = f"{int(count):,} topics, {label}"
            if key in size:
                rows.append(_cycle_row(name, size[key]))
    parse = figures.get("parse")
    if parse:
        parse_ratio = parse["entrez_read_articles_per_s"] / parse["records_per_s_at_rate_limit"]
        rows.append(
            (
                "ingest",
                f"Entrez.read, {parse['batch_records']}-record batch",
                f"{parse['entrez_read_articles_per_s']:,} articles/s "
                f"(full reading {parse['full_parse_articles_per_s']:,}/s)",
                f"{parse['records_per_s_at_rate_limit']:,} records/s at the rate limit "
                f"({parse_ratio:.2f}x per process)",
            )
        )
    return rows


def _topic_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected counts like 10,100, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected positive counts like 10,100, got {text!r}")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ingest_cycle",
        description="Ingest poll cycles against the fake E-utilities server.",
    )
    parser.add_argument("--quick", action="store_true", help="10 and 100 topics only")
    parser.add_argument(
        "--sizes", type=_topic_counts, default=None, help="topic counts instead, e.g. 10,100"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    started = time.monotonic()
    figures = run(args.quick, sizes=args.sizes)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for row in table_rows(figures):
            print(f"{row[1]:<40} {row[2]:<46} {row[3]}")
    sys.stdout.flush()  # the figures first, when both streams go to one terminal or file
    # On stderr, so that --json output stays parseable.
    print(f"elapsed {time.monotonic() - started:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
