"""The daily digest run: N daily email subscribers each get one digest of the items that
waited for it, through a real notify worker process and a separate SMTP sink process,
against a plain aiosmtplib loop over the same number of connections to the same sink.

    uv run python -m benchmarks.digest_run [--quick] [--count N] [--profile RAW_FILE]

The path is the product's own: the items reach the digests by fan-out (two events, so each
digest merges two deliveries), then the digests are made due and the operator's
``run-digests`` action enqueues the ``enqueue_due_digests`` job, which pages the due
subscribers into ``send_digests`` jobs. Timed from that trigger until the sink has accepted
N messages. Reports digests/s, p50/p99 received time from the trigger, the worker's peak
RSS and CPU seconds, duplicates, and checks that every subscriber's items went out in one
message (in the store for all of them; in the message bodies for a sample).

The plain loop is a sample of at most 20,000 messages (its rate is steady; a full 100k loop
would cost minutes for no new information), extrapolated to N.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import psutil
from arq import ArqRedis, create_pool
from sqlalchemy import case, distinct, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from benchmarks.fanout_common import (
    BASELINE_SAMPLE,
    CONNECTIONS,
    WORKER_CODE,
    _get,
    _post,
    percentile,
    rss_mb,
    subscription_pages,
    terminating,
    worker_env,
)
from benchmarks.fanout_email import plain_loop_run, start_sink
from pubwatch_notify.ops.actions import run_digests
from pubwatch_notify.store.engine import make_engine, make_sessionmaker
from pubwatch_notify.store.migrate import upgrade_to_head
from pubwatch_notify.store.models import Delivery, DeliveryStatus, Subscription
from pubwatch_shared.embedded_redis import RedisServer
from pubwatch_shared.heartbeat import live_workers
from pubwatch_shared.queue import deserialize, enqueue_event, redis_settings, serialize
from tests.fakes.smtp import SmtpSink
from tests.notify.delivery.helpers import OTHER_TOPIC, REPO_ROOT, TOPIC, article, make_event

FULL_COUNT = 100_000
QUICK_COUNT = 2_000
# The plain loop's rate does not change with its length; a sample this size is enough.
PLAIN_LOOP_SAMPLE_MAX = BASELINE_SAMPLE
# The issue sets no goal for digests; they are held to the fan-out's: at 100k, at least 0.5x
# the plain loop's rate, i.e. at most twice its time for as many messages.
GOAL_TIME_FACTOR = 2.0
GOAL_COUNT = FULL_COUNT
# Each digest merges one delivery per event: two, so the merge is part of what is measured.
EVENTS = 2
# Daily subscribers on another topic whose digests go to an in-process sink that keeps the
# bodies (the sink process cannot hand bodies over HTTP), to check what a digest contains.
BODY_SAMPLE = 10
MAIN_PREFIX = "digest"
SAMPLE_PREFIX = "sample"
POLL_S = 0.25
WORKER_START_TIMEOUT_S = 60.0
PROFILE_RATE_HZ = 100
PROFILE_TOP = 15


def address_of(prefix: str, n: int) -> str:
    return f"{prefix}{n}@example.org"


def pmid_of(event_index: int) -> str:
    return str(9000 + event_index)


def title_of(event_index: int) -> str:
    # article() titles its item after the PMID; each event carries a different one.
    return str(article(pmid_of(event_index))["title"])


async def seed_daily_subscribers(
    engine: AsyncEngine, count: int, topic: str, prefix: str, next_digest: datetime
) -> None:
    """``count`` confirmed daily email subscriptions to ``topic``, their next digest at
    ``next_digest``."""
    pages = subscription_pages(
        count,
        "email",
        lambda n: address_of(prefix, n),
        lambda n: f"{prefix}{n}",
        topic=topic,
        frequency="daily",
        next_digest_at=next_digest,
    )
    async with engine.begin() as connection:
        for rows in pages:
            await connection.execute(insert(Subscription), rows)


class WorkerWatch:
    """A process's peak RSS (sampled) and CPU seconds, over a window that can be restarted."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak_rss = 0
        self._cpu_at_start = 0.0

    def restart(self) -> None:
        self.peak_rss = 0
        self._cpu_at_start = self._cpu_now()
        self.sample()

    def sample(self) -> None:
        self.peak_rss = max(self.peak_rss, int(self.process.memory_info().rss))

    def cpu_seconds(self) -> float:
        return round(self._cpu_now() - self._cpu_at_start, 1)

    def _cpu_now(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)


def start_worker(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", WORKER_CODE], env=env, cwd=REPO_ROOT, text=True)


async def wait_until_live(pool: ArqRedis, worker: subprocess.Popen[str]) -> None:
    """Until the worker's heartbeat is in Redis (set in on_startup, after its migrations), so
    no figure includes the worker's start-up."""
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    suffix = f":{worker.pid}"
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"the notify worker exited at start-up ({worker.returncode})")
        if any(name.endswith(suffix) for name in await live_workers(pool, "notify")):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("the notify worker did not start")


def check_alive(worker: subprocess.Popen[str]) -> None:
    if worker.poll() is not None:
        raise RuntimeError(f"the notify worker died ({worker.returncode})")


async def count_deliveries(engine: AsyncEngine, topic: str, status: DeliveryStatus) -> int:
    async with engine.connect() as connection:
        found = await connection.scalar(
            select(func.count())
            .select_from(Delivery)
            .join(Subscription, Subscription.id == Delivery.subscription_id)
            .where(Subscription.topic == topic, Delivery.status == status.value)
        )
    return int(found or 0)


async def make_due(engine: AsyncEngine, topic: str) -> None:
    """The digests of ``topic`` due a minute ago, as at the morning's digest time."""
    async with engine.begin() as connection:
        await connection.execute(
            update(Subscription)
            .where(Subscription.topic == topic)
            .values(next_digest_at=datetime.now(UTC) - timedelta(minutes=1))
        )


async def trigger_digest_run(engine: AsyncEngine, pool: ArqRedis) -> str:
    """What ``pubwatch notify run-digests`` does: enqueue the cron's job by name."""
    async with make_sessionmaker(engine)() as session:
        return await run_digests(session, pool, all_now=False)


@dataclass
class FanoutPhase:
    seconds: float
    pending: int
    worker_peak_rss: int
    worker_cpu_s: float


async def fan_out_into_digests(
    engine: AsyncEngine,
    pool: ArqRedis,
    watch: WorkerWatch,
    worker: subprocess.Popen[str],
    count: int,
    timeout_s: float,
) -> FanoutPhase:
    """Enqueue the events for both topics; wait until the main topic's ``EVENTS * count``
    deliveries are pending (and the sample's), as a day's events leave them."""
    watch.restart()
    started = time.monotonic()
    for topic, name in ((TOPIC, "main"), (OTHER_TOPIC, "sample")):
        for index in range(EVENTS):
            event = make_event(
                f"digest-{name}-{count}-{index}", [article(pmid_of(index))], topic=topic
            )
            await enqueue_event(pool, event)
    pending = 0
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        check_alive(worker)
        watch.sample()
        pending = await count_deliveries(engine, TOPIC, DeliveryStatus.PENDING)
        sample_pending = await count_deliveries(engine, OTHER_TOPIC, DeliveryStatus.PENDING)
        if pending >= EVENTS * count and sample_pending >= EVENTS * BODY_SAMPLE:
            break
        await asyncio.sleep(POLL_S)
    seconds = time.monotonic() - started
    if pending < EVENTS * count:
        raise TimeoutError(f"fan-out left {pending} of {EVENTS * count} pending in {timeout_s} s")
    return FanoutPhase(round(seconds, 2), pending, watch.peak_rss, watch.cpu_seconds())


class Profiler:
    """py-spy recording the worker (raw collapsed stacks) until stopped."""

    def __init__(self, pid: int, output: Path) -> None:
        self.output = output
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [
                str(Path.home() / ".local/bin/py-spy"),
                "record",
                "-p",
                str(pid),
                "-f",
                "raw",
                "--nolineno",
                "-r",
                str(PROFILE_RATE_HZ),
                "-o",
                str(output),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> dict[str, Any]:
        seconds = time.monotonic() - self.started
        self.process.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
        self.process.wait(60)
        return summarise_profile(self.output.read_text(), seconds)


# The worker's event-loop thread (its stacks start in the ``-c`` code); py-spy counts a
# thread blocked in C as busy, so its waits for I/O are told apart by their leaf. (The other
# threads, aiosqlite's, mostly wait for their next statement the same way.)
EVENT_LOOP_ROOT = "<module> (<string>)"
EVENT_LOOP_IDLE = "EpollSelector.select (selectors.py)"
# Frames every busy event-loop stack passes through: they say nothing about the cost.
PLUMBING_FILES = ("(asyncio/", "(arq/worker.py)", "(<string>)", "(pubwatch_notify/worker.py)")


def frame_package(frame: str) -> str:
    """``f (sqlalchemy/orm/session.py)``: ``sqlalchemy``; ``f (selectors.py)``: ``selectors``."""
    path = frame.rpartition("(")[2].rstrip(")")
    return path.split("/")[0].removesuffix(".py")


def summarise_profile(raw: str, seconds: float) -> dict[str, Any]:
    """Where the worker's event-loop thread spends its busy time: own time by package, top
    functions by own time and including callees, as shares of its busy samples."""
    busy: list[tuple[list[str], int]] = []
    loop_samples = 0
    for line in raw.splitlines():
        stack, _, samples_text = line.rpartition(" ")
        if not stack.strip() or not samples_text.isdigit():
            continue
        frames, samples = stack.split(";"), int(samples_text)
        if frames[0] == EVENT_LOOP_ROOT:
            loop_samples += samples
            if frames[-1] != EVENT_LOOP_IDLE:
                busy.append((frames, samples))
    busy_total = sum(samples for _, samples in busy)
    own: Counter[str] = Counter()
    own_by_package: Counter[str] = Counter()
    including: Counter[str] = Counter()
    for frames, samples in busy:
        own[frames[-1]] += samples
        own_by_package[frame_package(frames[-1])] += samples
        for frame in set(frames):
            if not any(part in frame for part in PLUMBING_FILES):
                including[frame] += samples

    def shares(counter: Counter[str], top: int) -> list[dict[str, Any]]:
        return [
            {"function": name, "share": round(samples / busy_total, 3)}
            for name, samples in counter.most_common(top)
        ]

    return {
        "seconds": round(seconds, 1),
        "rate_hz": PROFILE_RATE_HZ,
        # Near 1: the event loop never waits for I/O, the worker is CPU-bound.
        "event_loop_busy_share": round(busy_total / loop_samples, 2) if loop_samples else None,
        "shares_of": f"{busy_total} busy event-loop samples",
        "own_by_package": [
            {"package": name, "share": round(samples / busy_total, 3)}
            for name, samples in own_by_package.most_common(PROFILE_TOP)
        ]
        if busy_total
        else [],
        "top_own": shares(own, PROFILE_TOP) if busy_total else [],
        "top_including_callees": shares(including, 2 * PROFILE_TOP) if busy_total else [],
    }


@dataclass
class DigestPhase:
    trigger: str
    started_wall: float
    accepted: int
    stats: dict[str, Any]
    seconds_waited: float
    worker_peak_rss: int
    worker_cpu_s: float
    sink_cpu_s: float
    profile: dict[str, Any] | None


async def run_and_wait(
    engine: AsyncEngine,
    pool: ArqRedis,
    watch: WorkerWatch,
    worker: subprocess.Popen[str],
    sink_watch: WorkerWatch,
    control_url: str,
    count: int,
    timeout_s: float,
    profile_to: Path | None,
) -> DigestPhase:
    """Trigger the digest run and wait until the sink has accepted ``count`` messages."""
    _post(f"{control_url}/reset")
    await make_due(engine, TOPIC)
    profiler = Profiler(int(worker.pid), profile_to) if profile_to is not None else None
    watch.restart()
    sink_watch.restart()
    started_wall = time.time()
    started = time.monotonic()
    trigger = await trigger_digest_run(engine, pool)
    accepted = 0
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        check_alive(worker)
        watch.sample()
        accepted = int(_get(f"{control_url}/stats")["accepted"])
        if accepted >= count:
            break
        await asyncio.sleep(POLL_S)
    seconds_waited = time.monotonic() - started
    profile = profiler.stop() if profiler is not None else None
    return DigestPhase(
        trigger,
        started_wall,
        accepted,
        _get(f"{control_url}/stats"),
        round(seconds_waited, 2),
        watch.peak_rss,
        watch.cpu_seconds(),
        sink_watch.cpu_seconds(),
        profile,
    )


def received_pages(control_url: str, total: int) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = []
    for offset in range(0, total, 10_000):
        received += _get(f"{control_url}/received?limit=10000&offset={offset}")["received"]
    return received


def recipients_check(received: list[dict[str, Any]], count: int) -> dict[str, int]:
    """Every main subscriber got a message and nobody else did (envelope recipients)."""
    expected = {address_of(MAIN_PREFIX, n) for n in range(count)}
    got = {rcpt.strip("<>").lower() for item in received for rcpt in item["rcpt_tos"]}
    return {"missing": len(expected - got), "unexpected": len(got - expected)}


async def wait_until_settled(engine: AsyncEngine, count: int, timeout_s: float) -> None:
    """The last ``sent`` commits land just after the sink's 250; wait for them."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await count_deliveries(engine, TOPIC, DeliveryStatus.SENT) >= EVENTS * count:
            return
        await asyncio.sleep(POLL_S)


async def store_check(engine: AsyncEngine, since: datetime) -> dict[str, int]:
    """Per subscriber in the store: all ``EVENTS`` items ``sent``, under one message key
    (one message carried them all), and the next digest moved past the run."""
    per_subscriber = (
        select(
            Delivery.subscription_id,
            func.count().label("deliveries"),
            func.sum(case((Delivery.status == DeliveryStatus.SENT.value, 1), else_=0)).label(
                "sent"
            ),
            func.count(distinct(Delivery.message_key)).label("message_keys"),
        )
        .join(Subscription, Subscription.id == Delivery.subscription_id)
        .where(Subscription.topic == TOPIC)
        .group_by(Delivery.subscription_id)
        .subquery()
    )
    async with engine.connect() as connection:
        subscribers = await connection.scalar(
            select(func.count()).select_from(Subscription).where(Subscription.topic == TOPIC)
        )
        complete = await connection.scalar(
            select(func.count())
            .select_from(per_subscriber)
            .where(
                per_subscriber.c.deliveries == EVENTS,
                per_subscriber.c.sent == EVENTS,
                per_subscriber.c.message_keys == 1,
            )
        )
        rescheduled = await connection.scalar(
            select(func.count())
            .select_from(Subscription)
            .where(
                Subscription.topic == TOPIC,
                Subscription.next_digest_at > since,
                Subscription.last_digest_at >= since,
            )
        )
    return {
        "subscribers": int(subscribers or 0),
        "all_items_sent_in_one_message": int(complete or 0),
        "next_digest_moved_on": int(rescheduled or 0),
    }


def body_problems(mail: EmailMessage) -> list[str]:
    """What a sample digest lacks: the digest subject, or any event's item in its text."""
    problems: list[str] = []
    subject = str(mail["Subject"])
    if "daily PubWatch digest" not in subject:
        problems.append(f"subject {subject!r}")
    text_part = mail.get_body(preferencelist=("plain",))
    text = text_part.get_content() if isinstance(text_part, EmailMessage) else ""
    problems += [
        f"{mail['To']}: no {title_of(index)!r}"
        for index in range(EVENTS)
        if title_of(index) not in text
    ]
    return problems


async def sample_body_check(
    engine: AsyncEngine, pool: ArqRedis, env: dict[str, str]
) -> dict[str, Any]:
    """The sample topic's digests through a fresh worker to an in-process sink that keeps
    bodies: each must be a daily digest listing every event's item."""
    with SmtpSink(keep_raw=True) as sink:
        worker = start_worker({**env, "PUBWATCH_SMTP_URL": sink.url})
        with terminating(worker, 60):
            await wait_until_live(pool, worker)
            await make_due(engine, OTHER_TOPIC)
            await trigger_digest_run(engine, pool)
            mails = await sink.wait_for_async(BODY_SAMPLE, timeout_s=120)
        problems = [problem for mail in mails for problem in body_problems(mail.message)]
        recipients = sorted(rcpt for mail in mails for rcpt in mail.rcpt_tos)
    expected = sorted(address_of(SAMPLE_PREFIX, n) for n in range(BODY_SAMPLE))
    if recipients != expected:
        problems.append(f"recipients {recipients} instead of {expected}")
    return {"digests": len(mails), "complete": not problems, "problems": problems[:10]}


async def job_summary(pool: ArqRedis) -> dict[str, Any]:
    """The arq jobs that ran (kept results): how many of each, and the send jobs' totals."""
    results = await pool.all_job_results()
    by_function = Counter(str(result.function) for result in results)
    digest_totals: Counter[str] = Counter()
    # Send jobs by the minute in their id: the trigger's pass, and any pass the minute cron
    # made while the run was going (its jobs then find their subscribers done or claimed).
    by_pass: dict[str, Counter[str]] = {}
    retried = 0
    for result in results:
        if result.function == "send_digests" and isinstance(result.result, dict):
            digest_totals.update(result.result)
            retried += int(result.job_try > 1)
            run_pass = str(result.job_id).rpartition(":")[0]
            by_pass.setdefault(run_pass, Counter())["jobs"] += 1
            by_pass[run_pass]["sent"] += int(result.result.get("sent", 0))
    return {
        "by_function": dict(by_function),
        "send_digests_totals": dict(digest_totals),
        "send_digests_by_pass": {name: dict(counts) for name, counts in sorted(by_pass.items())},
        "send_digests_tried_again": retried,
    }


def correctness_problems(digest_run: dict[str, Any], count: int) -> list[str]:
    """What went wrong, if anything: every subscriber gets exactly one digest holding all
    their items, nothing is refused, and each schedule moves on to the next day."""
    store = digest_run["store"]
    checks = {
        f"{digest_run['digests']} of {count} digests arrived": digest_run["complete"],
        f"{digest_run['duplicates']} recipients got more than one": not digest_run["duplicates"],
        f"{digest_run['refused']} refused by the sink": not digest_run["refused"],
        f"recipients {digest_run['recipients']}": not any(digest_run["recipients"].values()),
        f"{store['all_items_sent_in_one_message']} of {count} had all items in one message": (
            store["all_items_sent_in_one_message"] == count
        ),
        f"{store['next_digest_moved_on']} of {count} schedules moved on": (
            store["next_digest_moved_on"] == count
        ),
        f"sample bodies: {digest_run['sample_bodies']['problems']}": (
            digest_run["sample_bodies"]["complete"]
        ),
    }
    return [problem for problem, passed in checks.items() if not passed]


def time_ratio_goal(digest_seconds: float, plain_seconds_for_count: float) -> dict[str, Any]:
    return {
        "statement": (
            f"digests for {GOAL_COUNT:,} subscribers sent within {GOAL_TIME_FACTOR}x the "
            "plain loop's time for the same number of messages (ratio >= "
            f"{1 / GOAL_TIME_FACTOR:.2f})"
        ),
        "time_factor": round(digest_seconds / plain_seconds_for_count, 2),
        "met": digest_seconds <= GOAL_TIME_FACTOR * plain_seconds_for_count,
    }


def product_version() -> str:
    """The commit the worker ran, ``+dirty`` when the product's files had uncommitted edits:
    the code under measurement can change between runs on a shared working tree."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
    ).stdout.strip()
    edited = subprocess.run(
        ["git", "status", "--porcelain", "--", "services", "shared"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"{commit or 'unknown'}{'+dirty' if edited else ''}"


class PhaseClock:
    """Wall seconds per phase of the benchmark, for "how long did each part take"."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._phase: str | None = None
        self._since = time.monotonic()

    def start(self, phase: str) -> None:
        self.stop()
        self._phase, self._since = phase, time.monotonic()

    def stop(self) -> None:
        if self._phase is not None:
            self.seconds[self._phase] = round(time.monotonic() - self._since, 1)
            self._phase = None


async def run_async(count: int, profile_to: Path | None = None) -> dict[str, Any]:
    started = time.monotonic()
    phases = PhaseClock()
    # Generous but finite: a stall (a lost job left to the sweeper) shows as a failure.
    fanout_timeout_s = 120 + count / 200
    digest_timeout_s = 120 + count / 25
    phases.start("set_up_and_seed")
    sink, smtp_url, control_url = start_sink()
    with tempfile.TemporaryDirectory() as tmp, terminating(sink):
        work = Path(tmp)
        database_url = f"sqlite:///{work / 'digest.db'}"
        engine = make_engine(database_url)
        await upgrade_to_head(engine)
        # Not due before the run is triggered: the fan-out only leaves the items pending.
        tomorrow = datetime.now(UTC) + timedelta(days=1)
        await seed_daily_subscribers(engine, count, TOPIC, MAIN_PREFIX, tomorrow)
        await seed_daily_subscribers(engine, BODY_SAMPLE, OTHER_TOPIC, SAMPLE_PREFIX, tomorrow)
        with RedisServer(work / "redis") as redis_server:
            env = worker_env(database_url, redis_server.url, work, {})
            pool = await create_pool(
                redis_settings(redis_server.url),
                job_serializer=serialize,
                job_deserializer=deserialize,
            )
            try:
                phases.start("worker_start")
                version = product_version()
                worker = start_worker({**env, "PUBWATCH_SMTP_URL": smtp_url})
                with terminating(worker, 60):
                    await wait_until_live(pool, worker)
                    watch = WorkerWatch(int(worker.pid))
                    phases.start("fanout")
                    fanout = await fan_out_into_digests(
                        engine, pool, watch, worker, count, fanout_timeout_s
                    )
                    phases.start("digest_run")
                    digest = await run_and_wait(
                        engine,
                        pool,
                        watch,
                        worker,
                        WorkerWatch(sink.pid),
                        control_url,
                        count,
                        digest_timeout_s,
                        profile_to,
                    )
                    phases.start("checks")
                    received = received_pages(control_url, digest.accepted)
                    await wait_until_settled(engine, count, 30)
                    jobs = await job_summary(pool)
                    phases.start("worker_stop_and_store_check")
                store = await store_check(engine, datetime.fromtimestamp(digest.started_wall, UTC))
                phases.start("sample_bodies")
                bodies = await sample_body_check(engine, pool, env)
            finally:
                await pool.aclose()
        await engine.dispose()
        plain_count = min(count, PLAIN_LOOP_SAMPLE_MAX)
        phases.start("plain_loop")
        plain = await plain_loop_run(plain_count, smtp_url, control_url)
        phases.stop()

    stats = digest.stats
    # Timed to the last message the sink accepted (the poll only notices it later).
    digest_s = (stats["last_received_at"] or time.time()) - digest.started_wall
    latencies = [item["received_at"] - digest.started_wall for item in received]
    digests_per_s = digest.accepted / digest_s
    plain_seconds_for_count = count / plain["deliveries_per_s"]
    digest_run = {
        "trigger": digest.trigger,
        "complete": digest.accepted >= count,
        "digests": digest.accepted,
        "seconds": round(digest_s, 2),
        "digests_per_s": round(digests_per_s, 1),
        "p50_s": round(percentile(latencies, 0.5), 2),
        "p99_s": round(percentile(latencies, 0.99), 2),
        "worker_peak_rss_mb": rss_mb(digest.worker_peak_rss),
        # Near ``seconds``: the worker is CPU-bound; far below: it waits (sink, locks).
        "worker_cpu_s": digest.worker_cpu_s,
        "sink_cpu_s": digest.sink_cpu_s,
        "duplicates": stats["recipients"]["more_than_one"],
        "refused": stats["refused"],
        "recipients": recipients_check(received, count),
        "store": store,
        "sample_bodies": bodies,
        "jobs": jobs,
        "profiled": digest.profile is not None,
    }
    problems = correctness_problems(digest_run, count)
    return {
        "product_version": version,
        "subscribers": count,
        "events_per_digest": EVENTS,
        "connections": CONNECTIONS,
        "fanout": {
            "what": f"{EVENTS} events fanned out to pending digest deliveries (not timed below)",
            "seconds": fanout.seconds,
            "pending_deliveries": fanout.pending,
            "deliveries_per_s": round(fanout.pending / fanout.seconds, 1),
            "worker_peak_rss_mb": rss_mb(fanout.worker_peak_rss),
            "worker_cpu_s": fanout.worker_cpu_s,
        },
        "digest_run": digest_run,
        "correct": not problems,
        "problems": problems,
        "plain_loop": {
            "sample": True,
            "note": f"the baseline is a sample of min(N, {PLAIN_LOOP_SAMPLE_MAX:,}) messages; "
            "its rate is extrapolated to N",
            "messages": plain_count,
            "seconds": phases.seconds["plain_loop"],
            "deliveries_per_s": plain["deliveries_per_s"],
            "extrapolated_s_for_subscribers": round(plain_seconds_for_count, 1),
        },
        "ratio": round(digests_per_s / plain["deliveries_per_s"], 2),
        "goal": {
            **time_ratio_goal(digest_s, plain_seconds_for_count),
            "at_goal_size": count == GOAL_COUNT,
        },
        **({"profile": digest.profile} if digest.profile is not None else {}),
        "phase_s": phases.seconds,
        "total_s": round(time.monotonic() - started, 1),
    }


def run(quick: bool, count: int | None = None, profile_to: Path | None = None) -> dict[str, Any]:
    return asyncio.run(run_async(count or (QUICK_COUNT if quick else FULL_COUNT), profile_to))


def table_rows(figures: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    if "digest_run" not in figures:
        return []
    count = figures["subscribers"]
    digest = figures["digest_run"]
    fanout = figures["fanout"]
    plain = figures["plain_loop"]
    goal = figures["goal"]
    verdict = "met" if goal["met"] else "not met"
    return [
        (
            "digest_run",
            f"{count:,} daily digests",
            f"{digest['digests_per_s']}/s, {digest['seconds']} s, p50 {digest['p50_s']} s, "
            f"p99 {digest['p99_s']} s, RSS {digest['worker_peak_rss_mb']} MB, "
            f"{digest['duplicates']} duplicates"
            + ("" if figures["correct"] else f", PROBLEMS: {'; '.join(figures['problems'])}"),
            f"plain {plain['deliveries_per_s']}/s (sample of {plain['messages']:,}), "
            f"ratio {figures['ratio']}",
        ),
        (
            "digest_run",
            "time vs plain loop",
            f"{digest['seconds']} s for {count:,}",
            f"plain ~{plain['extrapolated_s_for_subscribers']} s, "
            f"{goal['time_factor']}x (goal <= {GOAL_TIME_FACTOR}x: {verdict})",
        ),
        (
            "digest_run",
            "fan-out into digests",
            f"{fanout['pending_deliveries']:,} pending in {fanout['seconds']} s",
            f"RSS {fanout['worker_peak_rss_mb']} MB",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_COUNT:,} subscribers")
    parser.add_argument("--count", type=int, help="subscribers to run instead (e.g. 10000)")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="RAW_FILE",
        help="record the worker with py-spy during the digest run (raw stacks to RAW_FILE) "
        "and add the top functions; sampling slows the worker, so read those figures apart",
    )
    args = parser.parse_args()
    figures = run(args.quick, args.count, args.profile)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
