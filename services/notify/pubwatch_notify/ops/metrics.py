"""``/metrics`` in Prometheus text format, built from a snapshot taken per scrape.

The numbers live in the database and in Redis, not in this process, so every API replica
answers the same and the workers need no endpoint of their own: a custom collector turns
one snapshot into metric families, in a registry made for that one scrape.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from pubwatch_notify.ops import stats
from pubwatch_shared.opskeys import NCBI_LATENCY_BUCKETS_S, latency_bucket_field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Snapshot:
    events: dict[tuple[str, str], int]
    deliveries: dict[tuple[str, str], int]
    failed_attempts: dict[str, int]
    queue: stats.QueueStats
    ingest: stats.IngestStats
    workers: dict[str, int]


async def take_snapshot(session: AsyncSession, redis: Redis) -> Snapshot:
    return Snapshot(
        events=await stats.events_by_type_and_source(session),
        deliveries=await stats.deliveries_by_channel_and_status(session),
        failed_attempts=await stats.failed_attempts_by_channel(session),
        queue=await stats.queue_stats(redis),
        ingest=await stats.ingest_stats(redis),
        workers=await stats.live_worker_counts(redis),
    )


class SnapshotCollector(Collector):
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        yield _labelled(
            CounterMetricFamily,
            "pubwatch_events_received",
            "Events notify stored.",
            ["type", "source"],
            snap.events,
        )
        yield _labelled(
            GaugeMetricFamily,
            "pubwatch_deliveries",
            "Deliveries by channel and current status (sent, failed, queued, ...).",
            ["channel", "status"],
            snap.deliveries,
        )
        yield _labelled(
            CounterMetricFamily,
            "pubwatch_delivery_failed_attempts",
            "Send attempts that failed and were retried or gave up, by channel.",
            ["channel"],
            snap.failed_attempts,
        )

        queue = snap.queue
        for name, help_text, value in (
            ("pubwatch_queue_jobs", "Jobs on the notify queue, deferred included.", queue.queued),
            ("pubwatch_queue_ready_jobs", "Jobs due now (waiting or running).", queue.ready),
            ("pubwatch_queue_deferred_jobs", "Jobs scheduled for later.", queue.deferred),
            ("pubwatch_queue_in_progress_jobs", "Jobs a worker is running.", queue.in_progress),
            (
                "pubwatch_queue_oldest_job_age_seconds",
                "How long the longest-waiting due job has been due.",
                queue.oldest_ready_age_s,
            ),
        ):
            yield GaugeMetricFamily(name, help_text, value=value)

        yield _labelled(
            GaugeMetricFamily,
            "pubwatch_workers_live",
            "Workers with a fresh heartbeat.",
            ["service"],
            snap.workers,
        )

        ingest = snap.ingest
        now = time.time()
        yield _labelled(
            GaugeMetricFamily,
            "pubwatch_ingest_last_successful_poll_timestamp_seconds",
            "Unix time of each topic's last committed poll.",
            ["topic"],
            ingest.last_poll,
        )
        yield _labelled(
            GaugeMetricFamily,
            "pubwatch_ingest_last_successful_poll_age_seconds",
            "Seconds since each topic's last committed poll.",
            ["topic"],
            {slug: max(0.0, now - at) for slug, at in ingest.last_poll.items()},
        )
        yield _labelled(
            CounterMetricFamily,
            "pubwatch_ingest_articles_announced",
            "PMIDs each topic has announced in events.",
            ["topic"],
            ingest.announced,
        )
        yield _labelled(
            CounterMetricFamily,
            "pubwatch_ncbi_requests",
            "E-utilities HTTP attempts by endpoint and outcome (ok, http_429, timeout, ...).",
            ["endpoint", "outcome"],
            ingest.ncbi_requests,
        )

        latency = ingest.ncbi_latency
        if latency:
            buckets = [
                (str(upper), latency.get(latency_bucket_field(upper), 0.0))
                for upper in NCBI_LATENCY_BUCKETS_S
            ]
            buckets.append(("+Inf", latency.get(latency_bucket_field("+Inf"), 0.0)))
            histogram = HistogramMetricFamily(
                "pubwatch_ncbi_request_duration_seconds", "E-utilities request latency."
            )
            histogram.add_metric([], buckets, sum_value=latency.get("sum", 0.0))
            yield histogram


def _labelled(
    family: type[CounterMetricFamily] | type[GaugeMetricFamily],
    name: str,
    help_text: str,
    labels: list[str],
    samples: Mapping[str, float] | Mapping[tuple[str, str], float],
) -> Metric:
    """One metric family with a sample per label value (a tuple for several labels)."""
    metric = family(name, help_text, labels=labels)
    for key, value in sorted(samples.items()):
        metric.add_metric([key] if isinstance(key, str) else list(key), value)
    return metric


def render(snapshot: Snapshot) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return generate_latest(registry)
