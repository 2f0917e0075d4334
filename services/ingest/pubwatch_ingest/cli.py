"""``pubwatch ingest ...``: the ingest worker, an on-demand poll, and a topics-file check."""

from __future__ import annotations

import asyncio
import logging
import sys

import click

from pubwatch_ingest.opsviews import TopicStatus, topic_statuses
from pubwatch_ingest.poller import TopicReport
from pubwatch_ingest.runtime import poller_for
from pubwatch_ingest.settings import IngestSettings
from pubwatch_shared.embedded_redis import EmbeddedRedisError, redis_url_or_embedded
from pubwatch_shared.liveness import run_check
from pubwatch_shared.settings import load_settings_or_exit
from pubwatch_shared.topics import Topic, TopicsFileError, load_topics

log = logging.getLogger("pubwatch.ingest")


def load_settings(process_name: str) -> IngestSettings:
    """Settings from the environment; a bad setting ends the process with a clear message."""
    settings = load_settings_or_exit(IngestSettings, process_name)
    if not settings.ncbi_email:
        log.warning("PUBWATCH_NCBI_EMAIL is not set: NCBI asks every client for a contact address")
    return settings


def load_topics_or_exit(settings: IngestSettings) -> list[Topic]:
    try:
        return load_topics(settings.topics_file)
    except TopicsFileError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


@click.group()
def ingest() -> None:
    """Watch PubMed for each topic and post change events."""


@ingest.command("check-topics")
def check_topics() -> None:
    """Validate the topics file (PUBWATCH_TOPICS_FILE) and list its topics."""
    settings = load_settings("ingest-check")
    topics = load_topics_or_exit(settings)
    for topic in topics:
        click.echo(f"{topic.slug:<40} {topic.name}")
    click.echo(f"{settings.topics_file}: {len(topics)} topics, OK")


@ingest.command()
def worker() -> None:
    """Run the scheduled poller until SIGTERM or Ctrl-C."""
    from pubwatch_ingest.worker import run_worker

    settings = load_settings("ingest-worker")
    load_topics_or_exit(settings)  # refuse to start on a broken file
    try:
        with redis_url_or_embedded(settings.redis_url, settings.var_dir) as redis_url:
            asyncio.run(run_worker(settings, redis_url))
    except EmbeddedRedisError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


def _print_report(report: TopicReport, dry_run: bool) -> None:
    if report.status in {"busy", "failed"}:
        detail = report.error or "another poll of this topic is running"
        click.echo(f"{report.slug}: {report.status} ({detail})")
        return
    kind = "baseline" if report.status == "baseline" else "new"
    click.echo(
        f"{report.slug}: {report.found} found, {len(report.new_articles)} {kind}, "
        f"{report.notices} errata/comments skipped, {len(report.retracted)} retracted, "
        f"{len(report.events)} events {'(dry run: not sent)' if dry_run else 'sent'}"
        + (
            f", {report.recovered_events} re-sent from an interrupted poll"
            if report.recovered_events
            else ""
        )
    )
    for article in report.new_articles:
        click.echo(f"  + {article.pmid} [{article.evidence_level.value}] {article.title}")
        click.echo(f"      {article.summary}")
    for article in report.retracted:
        click.echo(f"  ! {article.pmid} RETRACTED {article.title}")


@ingest.command()
@click.option(
    "--topic", "slugs", multiple=True, metavar="SLUG", help="Only this topic (repeatable)."
)
@click.option("--dry-run", is_flag=True, help="Show what is new without sending or recording it.")
def poll(slugs: tuple[str, ...], dry_run: bool) -> None:
    """Poll topics now and print what was found."""
    settings = load_settings("ingest-poll")
    topics = load_topics_or_exit(settings)
    if slugs:
        unknown = set(slugs) - {t.slug for t in topics}
        if unknown:
            click.echo(f"error: unknown topic(s) {', '.join(sorted(unknown))}", err=True)
            sys.exit(2)
        topics = [t for t in topics if t.slug in slugs]

    def progress(stage: str, done: int, total: int) -> None:
        click.echo(f"\r{stage}: {done}/{total} articles", nl=done >= total, err=True)

    async def run(redis_url: str) -> list[TopicReport]:
        async with poller_for(settings, redis_url) as poller:
            return await poller.poll(topics, dry_run=dry_run, progress=progress)

    try:
        with redis_url_or_embedded(settings.redis_url, settings.var_dir) as redis_url:
            reports = asyncio.run(run(redis_url))
    except EmbeddedRedisError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    for report in reports:
        _print_report(report, dry_run)
    if any(report.status == "failed" for report in reports):
        sys.exit(1)


@ingest.command("check-worker")
def check_worker() -> None:
    """Exit 0 when an ingest worker on this host is alive (its heartbeat is fresh)."""
    from pubwatch_ingest.worker import HEARTBEAT_SERVICE

    settings = load_settings("ingest-check-worker")
    result = run_check(settings.redis_url, HEARTBEAT_SERVICE)
    click.echo(result.message, err=not result.ok)
    sys.exit(0 if result.ok else 1)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


@ingest.command("topics")
def topics_command() -> None:
    """List the topics with their last poll and how many PMIDs each has seen and announced."""
    settings = load_settings("ingest-topics")
    topics = load_topics_or_exit(settings)

    try:
        with redis_url_or_embedded(settings.redis_url, settings.var_dir) as redis_url:
            statuses: list[TopicStatus] = asyncio.run(topic_statuses(redis_url, topics))
    except EmbeddedRedisError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except Exception as exc:
        click.echo(f"error: cannot read ingest state from Redis: {exc}", err=True)
        sys.exit(1)
    click.echo(f"{'TOPIC':<40} {'LAST POLL':<14} {'SEEN':>7} {'ANNOUNCED':>9} {'WATERMARK':<10}")
    for status in statuses:
        click.echo(
            f"{status.slug:<40} {_age(status.polled_ago_s):<14} {status.seen:>7} "
            f"{status.announced:>9} {status.watermark or '-':<10}"
            + ("  (poll in progress)" if status.locked else "")
        )
    click.echo(f"{len(statuses)} topics from {settings.topics_file}")
