"""Web pages benchmark: the topic page and the subscribe POST with 50 concurrent clients.

The notify API runs exactly as ``events_api`` runs it (``pubwatch notify api``: uvicorn in its
own process, a private Redis, SQLite and, when ``PUBWATCH_TEST_POSTGRES_URL`` names a server,
a fresh PostgreSQL database), with the few settings a sign-up load needs on top
(``SETTINGS_CHANGED`` says which and why). Before measuring, the topic gets real content
through the events API: a baseline of 1,000 articles in events of 50 (as ingest chunks
them) and a few ``evidence.new`` events, so the page counts and lists stored rows.

Three figures, each from 50 clients on their own keep-alive connections for a fixed time:

- baseline, ``GET /healthz``: no database, no template, the framework and HTTP floor;
- ``GET /topics/{slug}``: the article count, the latest evidence and the form's template;
- ``POST /topics/{slug}``: a real, accepted sign-up with a new address every time (stores a
  pending subscription and its consent record, queues the confirmation job); every answer
  must be the "check your inbox" page.

They run in interleaved rounds (baseline, page, sign-up, baseline, ...) so that the noise of a
shared machine falls on all three alike; each figure's ratio is its rate over the baseline's.

The CSRF token is a signed nonce (valid 24 h) matched against a cookie, not single-use: each
sign-up client fetches the form once, untimed, as a browser does, then posts it repeatedly.
No worker runs, so confirmations are counted as queued jobs, not as sent messages. After the
load the store and the queue are checked: one pending subscription and one queued
confirmation per success page.

``run(quick)`` returns the figures; ``python -m benchmarks.web_pages [--quick]`` prints them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

import httpx
from redis.asyncio import Redis
from sqlalchemy import func, select

from benchmarks.events_api import (
    API_WORKERS,
    CLIENTS,
    POSTGRES_URL_ENV,
    TOPIC,
    api_env,
    api_process,
    client_key,
    postgres_database,
)
from benchmarks.fanout_common import percentile
from pubwatch_notify.api.routes.pages import HONEYPOT_FIELD
from pubwatch_notify.api.security import CSRF_COOKIE, CSRF_FIELD
from pubwatch_notify.store.engine import make_engine
from pubwatch_notify.store.models import Subscription, SubscriptionStatus
from pubwatch_notify.subscriptions.confirmation import confirmation_job_id
from pubwatch_shared.embedded_redis import RedisServer, free_port
from pubwatch_shared.events import EventType, EvidenceLevel
from pubwatch_shared.queue import NOTIFY_QUEUE
from tests.notify.web.helpers import CSRF_RE, signup_form

GOAL_P99_MS = 250
# events_api.api_env names its clients bench-00 ... bench-49; the seeding posts as the first.
SEED_SOURCE = "bench-00"
BASELINE_ARTICLES = 1000
ARTICLES_PER_EVENT = 50  # ingest's default event_chunk_size
NEW_EVENTS = 10
ARTICLES_PER_NEW_EVENT = 3
# What the API process gets on top of events_api.api_env, and why.
SETTINGS_CHANGED = {
    "PUBWATCH_SIGNUP_LIMIT_PER_IP": (
        "1000000000",
        "every client comes from 127.0.0.1; the default (30 sign-ups per IP per hour) would "
        "refuse all but the first 30",
    ),
    "PUBWATCH_CHECK_EMAIL_DELIVERABILITY": (
        "false",
        "no DNS on the benchmark machine; with it on, the figure would time the resolver",
    ),
}
# Left as they are, and why that is enough.
SETTINGS_KEPT = {
    "PUBWATCH_SMTP_URL": "unset (events_api.api_env drops every inherited PUBWATCH_ variable): "
    "confirmations would go to the outbox channel; no worker runs, so they stay queued",
    "PUBWATCH_SIGNUP_LIMIT_PER_ADDRESS": "default 5 per hour: every sign-up has its own address",
    "from events_api.api_env": "database, Redis, public URL, var dir, topics file, "
    "PUBWATCH_LOG_LEVEL=WARNING (an info line per sign-up would time the log handler), the "
    "events API keys and rate limits (used here only to seed the topic), one API worker",
}
CSRF_NOTE = (
    "the CSRF token is a signed nonce valid for 24 h, checked against the pubwatch_csrf "
    "cookie, not single-use: each client fetches the form once before the timed POSTs"
)
_SUCCESS_PAGE_MARK = b"<h1>Check your inbox</h1>"


@dataclass(frozen=True)
class Durations:
    warmup_s: float  # one discarded pass of every figure: connections, caches, statements
    per_round_s: float
    rounds: int


QUICK = Durations(warmup_s=0.2, per_round_s=0.8, rounds=1)
FULL = Durations(warmup_s=0.5, per_round_s=2.5, rounds=3)


# -- a minimal HTTP/1.1 client -------------------------------------------------------------
# Plain asyncio streams, as in events_api: on two cores an HTTP client library in the
# measuring process would take CPU from the measured one.


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header_values(self, name: str) -> list[str]:
        return _values(self.headers, name)


@dataclass
class Connection:
    """One client's keep-alive connection and what its browser would remember."""

    client: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    host: str
    cookie: str = ""
    csrf_token: str = ""

    async def exchange(self, request: bytes) -> Answer:
        self.writer.write(request)
        await self.writer.drain()
        status = int((await self.reader.readline()).split()[1])
        headers: list[tuple[str, str]] = []
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name.strip().lower(), value.strip()))
        if any(value.lower() == "chunked" for value in _values(headers, "transfer-encoding")):
            raise RuntimeError("chunked answers are not expected from these pages")
        length = int(next(iter(_values(headers, "content-length")), "0"))
        return Answer(status, headers, await self.reader.readexactly(length))

    def get(self, path: str) -> bytes:
        return f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n{self._cookie_line()}\r\n".encode()

    def post_form(self, path: str, form: dict[str, str]) -> bytes:
        body = urlencode(form).encode()
        return (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nOrigin: http://{self.host}\r\n"
            f"{self._cookie_line()}Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    def remember_cookie(self, answer: Answer) -> None:
        for header in answer.header_values("set-cookie"):
            morsels = SimpleCookie(header)
            if CSRF_COOKIE in morsels:
                self.cookie = f"{CSRF_COOKIE}={morsels[CSRF_COOKIE].value}"

    def _cookie_line(self) -> str:
        return f"Cookie: {self.cookie}\r\n" if self.cookie else ""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def _values(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [value for key, value in headers if key == name]


async def _connect(port: int, client: int) -> Connection:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return Connection(client, reader, writer, f"127.0.0.1:{port}")


# -- what each figure's clients do ---------------------------------------------------------


class Scenario(Protocol):
    name: str

    async def prepare(self, connection: Connection) -> None:
        """Untimed, on each new connection: what the client's browser did before."""

    def request(self, connection: Connection) -> bytes: ...

    def succeeded(self, answer: Answer) -> bool: ...


class Healthz:
    """The baseline: the API's cheapest route, no database and no template."""

    name = "healthz"

    async def prepare(self, connection: Connection) -> None:
        return None

    def request(self, connection: Connection) -> bytes:
        return connection.get("/healthz")

    def succeeded(self, answer: Answer) -> bool:
        return answer.status == 200


class TopicPage:
    """A returning visitor reading the topic page (its CSRF cookie is sent back)."""

    name = "topic_page"

    def __init__(self) -> None:
        self.path = f"/topics/{TOPIC}"
        self.cookies: dict[int, str] = {}  # per client, kept across passes like a browser

    async def prepare(self, connection: Connection) -> None:
        if connection.client not in self.cookies:
            connection.remember_cookie(await connection.exchange(connection.get(self.path)))
            self.cookies[connection.client] = connection.cookie
        connection.cookie = self.cookies[connection.client]

    def request(self, connection: Connection) -> bytes:
        return connection.get(self.path)

    def succeeded(self, answer: Answer) -> bool:
        return answer.status == 200


class SubscribePost:
    """A sign-up by email, each with an address never used before in this run."""

    name = "subscribe_post"

    def __init__(self, run_id: str) -> None:
        self.path = f"/topics/{TOPIC}"
        self.run_id = run_id
        self.sequence = itertools.count()
        self.posted = 0
        # (cookie, token) per client: the form is fetched once per client for the whole run.
        self.forms: dict[int, tuple[str, str]] = {}

    async def prepare(self, connection: Connection) -> None:
        if connection.client not in self.forms:
            page = await connection.exchange(connection.get(self.path))
            connection.remember_cookie(page)
            match = CSRF_RE.search(page.body.decode())
            if page.status != 200 or match is None or not connection.cookie:
                raise RuntimeError(f"the topic page gave no form to sign up with ({page.status})")
            self.forms[connection.client] = (connection.cookie, match.group(1))
        connection.cookie, connection.csrf_token = self.forms[connection.client]

    def request(self, connection: Connection) -> bytes:
        self.posted += 1
        form = signup_form(email=f"reader-{self.run_id}-{next(self.sequence)}@example.org")
        # The form's hidden honeypot field is posted empty by a person's browser.
        form[HONEYPOT_FIELD] = ""
        form[CSRF_FIELD] = connection.csrf_token
        return connection.post_form(self.path, form)

    def succeeded(self, answer: Answer) -> bool:
        # A filled-in honeypot also gets this page; the store check after the load tells
        # the two apart.
        return answer.status == 200 and _SUCCESS_PAGE_MARK in answer.body


# -- load ------------------------------------------------------------------------------------


@dataclass
class Tally:
    requests: int = 0
    succeeded: int = 0
    connection_errors: int = 0
    elapsed_s: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.requests += other.requests
        self.succeeded += other.succeeded
        self.connection_errors += other.connection_errors
        self.elapsed_s += other.elapsed_s
        for status, count in other.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + count
        self.latencies_s.extend(other.latencies_s)

    def figures(self) -> dict[str, Any]:
        def ms(share: float) -> float | None:
            return round(percentile(self.latencies_s, share) * 1000, 1) if self.requests else None

        return {
            "requests": self.requests,
            "succeeded": self.succeeded,
            "connection_errors": self.connection_errors,
            "statuses": dict(sorted(self.statuses.items())),
            "elapsed_s": round(self.elapsed_s, 2),
            "per_s": round(self.succeeded / self.elapsed_s, 1) if self.elapsed_s else 0.0,
            "p50_ms": ms(0.50),
            "p99_ms": ms(0.99),
            "max_ms": round(max(self.latencies_s) * 1000, 1) if self.latencies_s else None,
        }


async def _client_until(connection: Connection, scenario: Scenario, stop_at: float) -> Tally:
    tally = Tally()
    while time.perf_counter() < stop_at:
        request = scenario.request(connection)
        started = time.perf_counter()
        try:
            answer = await connection.exchange(request)
        except (ConnectionError, asyncio.IncompleteReadError, IndexError, ValueError):
            # The server dropped the connection or answered garbage: count it, stop this client.
            tally.connection_errors += 1
            break
        tally.latencies_s.append(time.perf_counter() - started)
        tally.requests += 1
        tally.succeeded += scenario.succeeded(answer)
        status = str(answer.status)
        tally.statuses[status] = tally.statuses.get(status, 0) + 1
    return tally


async def _pass(port: int, scenario: Scenario, duration_s: float) -> Tally:
    """All clients connect and prepare, then request back to back for ``duration_s``."""
    connections = await asyncio.gather(*(_connect(port, client) for client in range(CLIENTS)))
    try:
        await asyncio.gather(*(scenario.prepare(c) for c in connections))
        started = time.perf_counter()
        tallies = await asyncio.gather(
            *(_client_until(c, scenario, started + duration_s) for c in connections)
        )
        total = Tally(elapsed_s=time.perf_counter() - started)
    finally:
        await asyncio.gather(*(c.close() for c in connections))
    for tally in tallies:  # their elapsed_s is 0: the pass's wall time counts once
        total.add(tally)
    return total


async def _load(port: int, durations: Durations, sign_ups: SubscribePost) -> dict[str, Tally]:
    scenarios: list[Scenario] = [Healthz(), TopicPage(), sign_ups]
    for scenario in scenarios:
        await _pass(port, scenario, durations.warmup_s)
    totals = {scenario.name: Tally() for scenario in scenarios}
    for _ in range(durations.rounds):
        for scenario in scenarios:
            totals[scenario.name].add(await _pass(port, scenario, durations.per_round_s))
    return totals


# -- content and checks ----------------------------------------------------------------------


def _article(pmid: int, level: EvidenceLevel, published: str) -> dict[str, Any]:
    return {
        "title": f"Study {pmid}: treatment outcomes in indolent systemic mastocytosis.",
        "url": f"https://pubmed.ncbi.nlm.nih.gov/{pmid}/",
        "summary": (
            f"Study {pmid} followed adults with indolent systemic mastocytosis for two years. "
            "Symptom scores fell more with the study drug than with placebo, serum tryptase "
            "dropped by a third, and side effects were mild; larger trials are under way."
        ),
        "pmid": str(pmid),
        "doi": f"10.1000/bench.{pmid}",
        "journal": "Journal of Allergy and Clinical Immunology",
        "published": published,
        "publication_types": ["Journal Article"],
        "evidence_level": level.value,
    }


def _topic_events() -> list[dict[str, Any]]:
    """The topic's baseline (a month old) and a few newer ``evidence.new`` events."""
    levels = list(EvidenceLevel)
    now = datetime.now(UTC).replace(microsecond=0)
    events: list[dict[str, Any]] = []

    def event(kind: EventType, n: int, pmids: range, occurred: datetime) -> dict[str, Any]:
        return {
            "id": f"web-pages-bench:{kind.value}:{n}",
            "type": kind.value,
            "topic": TOPIC,
            "source": SEED_SOURCE,
            "occurred_at": occurred.isoformat(),
            "items": [_article(p, levels[p % len(levels)], f"20{p % 25:02d}-06") for p in pmids],
        }

    first_pmid = 30_000_000
    for n, start in enumerate(range(0, BASELINE_ARTICLES, ARTICLES_PER_EVENT)):
        pmids = range(first_pmid + start, first_pmid + start + ARTICLES_PER_EVENT)
        events.append(event(EventType.BASELINE, n, pmids, now - timedelta(days=30)))
    first_new = first_pmid + BASELINE_ARTICLES
    for n in range(NEW_EVENTS):
        start = first_new + n * ARTICLES_PER_NEW_EVENT
        occurred = now - timedelta(days=NEW_EVENTS - n)
        events.append(
            event(EventType.NEW, n, range(start, start + ARTICLES_PER_NEW_EVENT), occurred)
        )
    return events


def _seed_topic(base_url: str) -> dict[str, Any]:
    """Post the topic's events through the events API and check the page shows them."""
    events = _topic_events()
    with httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {client_key(0)}"}, timeout=30
    ) as client:
        for event in events:
            response = client.post("/v1/events", json=event)
            if response.status_code != 202:
                raise RuntimeError(f"seeding: {response.status_code} {response.text[:300]}")
        page = client.get(f"/topics/{TOPIC}")
    articles = BASELINE_ARTICLES + NEW_EVENTS * ARTICLES_PER_NEW_EVENT
    newest_title = events[-1]["items"][0]["title"]
    if f"<strong>{articles}</strong>" not in page.text or newest_title not in page.text:
        raise RuntimeError("the topic page does not show the seeded articles")
    return {"events": len(events), "articles": articles, "page_bytes": len(page.content)}


async def _stored_and_queued(database_url: str, redis_url: str) -> dict[str, int]:
    """Pending subscriptions in the store and confirmation jobs waiting on the queue."""
    engine = make_engine(database_url)
    try:
        async with engine.connect() as connection:
            pending = await connection.scalar(
                select(func.count())
                .select_from(Subscription)
                .where(
                    Subscription.topic == TOPIC,
                    Subscription.status == SubscriptionStatus.PENDING,
                )
            )
    finally:
        await engine.dispose()
    # Job ids are confirmation_job_id(...): "confirm:<subscription>:<version>:<hour>".
    job_prefix = confirmation_job_id(0, 0, datetime.now(UTC)).split(":")[0] + ":"
    redis = Redis.from_url(redis_url)
    try:
        job_ids = await redis.zrange(NOTIFY_QUEUE, 0, -1)
    finally:
        await redis.aclose()
    confirmations = sum(job_id.decode().startswith(job_prefix) for job_id in job_ids)
    return {"pending_subscriptions": int(pending or 0), "confirmations_queued": confirmations}


# -- one database ----------------------------------------------------------------------------


def _measure(database_url: str, work_dir: Path, durations: Durations) -> dict[str, Any]:
    redis = RedisServer(work_dir / "redis", appendonly=False)
    redis.start()
    try:
        port = free_port()
        env = api_env(database_url, redis.url, port, work_dir / "var", API_WORKERS)
        env.update({name: value for name, (value, _) in SETTINGS_CHANGED.items()})
        started = time.perf_counter()
        with api_process(env, port, work_dir / "api.log"):
            api_start_s = time.perf_counter() - started
            seeded = _seed_topic(f"http://127.0.0.1:{port}")
            sign_ups = SubscribePost(uuid.uuid4().hex[:8])
            totals = asyncio.run(_load(port, durations, sign_ups))
            checked = asyncio.run(_stored_and_queued(database_url, redis.url))
    finally:
        redis.close()
    baseline = totals["healthz"].figures()
    figures: dict[str, Any] = {
        "api_start_s": round(api_start_s, 1),
        "seeded": seeded,
        "healthz": baseline,
    }
    for name in ("topic_page", "subscribe_post"):
        page = totals[name].figures()
        page["ratio_to_baseline"] = (
            round(page["per_s"] / baseline["per_s"], 3) if baseline["per_s"] else None
        )
        figures[name] = page
    # Warm-up sign-ups are real sign-ups too: the store must hold every one of them.
    figures["subscribe_post"].update(sign_ups_posted_incl_warmup=sign_ups.posted, **checked)
    figures["meets_goal"] = all(
        _meets_goal(figures[name]) for name in ("topic_page", "subscribe_post")
    ) and (checked["pending_subscriptions"] == checked["confirmations_queued"] == sign_ups.posted)
    return figures


def _meets_goal(page: dict[str, Any]) -> bool:
    return (
        page["requests"] > 0
        and page["succeeded"] == page["requests"]
        and page["connection_errors"] == 0
        and page["p99_ms"] is not None
        and page["p99_ms"] < GOAL_P99_MS
    )


def run(quick: bool) -> dict[str, Any]:
    """Figures per database; ``quick``: one 0.8 s round per figure instead of three of 2.5 s."""
    durations = QUICK if quick else FULL
    figures: dict[str, Any] = {
        "clients": CLIENTS,
        "api_workers": API_WORKERS,
        "topic": TOPIC,
        "goal": {"p99_ms": GOAL_P99_MS, "errors": 0},
        "durations": {
            "warmup_s": durations.warmup_s,
            "per_round_s": durations.per_round_s,
            "rounds": durations.rounds,
        },
        "settings_changed": {
            name: {"value": v, "why": why} for name, (v, why) in SETTINGS_CHANGED.items()
        },
        "settings_kept": SETTINGS_KEPT,
        "csrf": CSRF_NOTE,
        "cpus": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory(prefix="pubwatch-bench-") as tmp:
        work = Path(tmp)
        sqlite_dir = work / "sqlite"
        sqlite_dir.mkdir()
        figures["sqlite"] = _measure(f"sqlite:///{sqlite_dir / 'bench.db'}", sqlite_dir, durations)
        admin_url = os.environ.get(POSTGRES_URL_ENV)
        if admin_url:
            pg_dir = work / "postgres"
            pg_dir.mkdir()
            with postgres_database(admin_url) as url:
                figures["postgres"] = _measure(url, pg_dir, durations)
        else:
            figures["postgres"] = f"skipped: set {POSTGRES_URL_ENV}"
    return figures


def table_rows(figures: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(benchmark, figure, PubWatch, baseline / ratio) rows for the summary table."""
    rows: list[tuple[str, str, str, str]] = []
    for backend in ("sqlite", "postgres"):
        measured = figures.get(backend)
        if not isinstance(measured, dict):
            continue
        baseline = measured["healthz"]
        for name, label in (("topic_page", "topic page"), ("subscribe_post", "subscribe POST")):
            page = measured[name]
            text = f"{page['per_s']}/s, p50 {page['p50_ms']} ms, p99 {page['p99_ms']} ms"
            if name == "subscribe_post":
                text += f", {page['succeeded']}/{page['requests']} success pages"
            rows.append(
                (
                    "web_pages",
                    f"{label}, {backend}",
                    text,
                    f"/healthz {baseline['per_s']}/s, ratio {page['ratio_to_baseline']}",
                )
            )
    return rows


def main() -> None:
    figures = run("--quick" in sys.argv[1:])
    print(json.dumps(figures, indent=2))
    for row in table_rows(figures):
        print(f"{row[1]:<24} {row[2]:<72} {row[3]}", file=sys.stderr)


if __name__ == "__main__":
    main()
