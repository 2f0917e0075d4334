"""The operator status page: gathered from :mod:`.stats`, rendered as one self-contained page.

No JavaScript and no external assets: the chart is inline SVG, so the page works behind any
proxy and under the app's strict content security policy. Addresses are masked.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from pubwatch_notify.ops import stats
from pubwatch_shared.topics import Topic

CHART_WIDTH = 420
BAR_HEIGHT = 18
LABEL_WIDTH = 90


@dataclass(frozen=True)
class TopicRow:
    slug: str
    name: str
    last_poll_ago_s: float | None
    articles_received: int
    announced_by_ingest: int


@dataclass(frozen=True)
class StatusPage:
    topics: list[TopicRow]
    queue: stats.QueueStats
    last_day: dict[str, int]
    failures: list[stats.Failure]
    workers: dict[str, int]


async def gather(session: AsyncSession, redis: Redis, topics: Mapping[str, Topic]) -> StatusPage:
    ingest = await stats.ingest_stats(redis)
    articles = await stats.articles_by_topic(session)
    now = time.time()
    # Topics in the file first, then any that only the data knows (removed from the file).
    slugs = list(topics) + sorted((set(articles) | set(ingest.last_poll)) - set(topics))
    rows = [
        TopicRow(
            slug=slug,
            name=topics[slug].name if slug in topics else "(not in the topics file)",
            last_poll_ago_s=(now - ingest.last_poll[slug]) if slug in ingest.last_poll else None,
            articles_received=articles.get(slug, 0),
            announced_by_ingest=ingest.announced.get(slug, 0),
        )
        for slug in slugs
    ]
    since = datetime.now(UTC) - timedelta(days=1)
    last_day: dict[str, int] = {}
    for (_, status), count in (
        await stats.deliveries_by_channel_and_status(session, since=since)
    ).items():
        last_day[status] = last_day.get(status, 0) + count
    return StatusPage(
        topics=rows,
        queue=await stats.queue_stats(redis),
        last_day=last_day,
        failures=await stats.recent_failures(session),
        workers=await stats.live_worker_counts(redis),
    )


def ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def bar_chart(counts: Mapping[str, int]) -> str:
    """Horizontal bars, one per outcome, as inline SVG."""
    if not counts:
        return "<p>No deliveries in the last 24 hours.</p>"
    peak = max(counts.values()) or 1
    items = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    height = len(items) * (BAR_HEIGHT + 6)
    bars = []
    for index, (status, count) in enumerate(items):
        y = index * (BAR_HEIGHT + 6)
        width = max(1, round((CHART_WIDTH - LABEL_WIDTH - 60) * count / peak))
        colour = {"failed": "#b3261e", "sent": "#2e7d32", "delivered": "#1b5e20"}.get(
            status, "#5f6b7a"
        )
        bars.append(
            f'<text x="0" y="{y + 13}" font-size="12">{escape(status)}</text>'
            f'<rect x="{LABEL_WIDTH}" y="{y}" width="{width}" height="{BAR_HEIGHT}" '
            f'fill="{colour}"><title>{escape(status)}: {count}</title></rect>'
            f'<text x="{LABEL_WIDTH + width + 6}" y="{y + 13}" font-size="12">{count}</text>'
        )
    return (
        f'<svg role="img" aria-label="Deliveries by outcome, last 24 hours" '
        f'width="{CHART_WIDTH}" height="{height}" viewBox="0 0 {CHART_WIDTH} {height}" '
        f'xmlns="http://www.w3.org/2000/svg">{"".join(bars)}</svg>'
    )


def render(page: StatusPage) -> str:
    topic_rows = "".join(
        f"<tr><td>{escape(row.slug)}</td><td>{escape(row.name)}</td>"
        f"<td>{ago(row.last_poll_ago_s)}</td><td>{row.articles_received}</td>"
        f"<td>{row.announced_by_ingest}</td></tr>"
        for row in page.topics
    )
    failure_rows = (
        "".join(
            f"<tr><td>{failure.delivery_id}</td><td>{failure.at:%Y-%m-%d %H:%M} UTC</td>"
            f"<td>{escape(failure.channel)}</td><td>{escape(failure.topic)}</td>"
            f"<td>{escape(failure.masked_address)}</td><td>{escape(failure.reason)}</td></tr>"
            for failure in page.failures
        )
        or '<tr><td colspan="6">No failed deliveries.</td></tr>'
    )
    queue = page.queue
    workers = ", ".join(f"{escape(name)}: {count}" for name, count in page.workers.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>PubWatch status</title>
<meta name="robots" content="noindex">
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #1d232b; }}
table {{ border-collapse: collapse; margin-bottom: 1.5rem; }}
th, td {{ border-bottom: 1px solid #d8dde3; padding: .3rem .7rem; text-align: left; }}
</style></head>
<body>
<h1>PubWatch status</h1>
<p>Live workers: {workers}</p>
<h2>Queue</h2>
<table>
<tr><th>Jobs</th><th>Due now</th><th>Deferred</th><th>In progress</th><th>Oldest due job</th></tr>
<tr><td>{queue.queued}</td><td>{queue.ready}</td><td>{queue.deferred}</td>
<td>{queue.in_progress}</td><td>{queue.oldest_ready_age_s:.0f} s</td></tr>
</table>
<h2>Topics</h2>
<table>
<tr><th>Topic</th><th>Name</th><th>Last poll</th><th>Articles received</th>
<th>Announced by ingest</th></tr>
{topic_rows}
</table>
<h2>Deliveries in the last 24 hours</h2>
{bar_chart(page.last_day)}
<h2>Recent failures</h2>
<table>
<tr><th>Delivery</th><th>When</th><th>Channel</th><th>Topic</th><th>To</th><th>Reason</th></tr>
{failure_rows}
</table>
<p>Re-send one with <code>pubwatch notify resend DELIVERY_ID</code>.</p>
</body></html>
"""
