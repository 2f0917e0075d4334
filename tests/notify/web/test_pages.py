"""Public pages: topic list, topic page with its evidence, embed framing, terms, privacy,
health."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta

from pubwatch_notify.store.engine import make_engine, make_sessionmaker
from pubwatch_notify.store.models import EventItemRow, StoredEvent
from tests.notify.web.helpers import TOPIC, app_client


async def _add_event(settings, event_id: str, type_: str, items: list[tuple[str, str]], age_days=0):
    engine = make_engine(settings.resolved_database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            event = StoredEvent(
                event_id=event_id,
                source="pubmed",
                type=type_,
                topic=TOPIC,
                occurred_at=datetime.now(UTC) - timedelta(days=age_days),
                strongest_level="rct",
                payload={},
            )
            session.add(event)
            await session.flush()
            for position, (pmid, level) in enumerate(items):
                session.add(
                    EventItemRow(
                        event_id=event.id,
                        position=position,
                        title=f"Study {pmid}",
                        url=f"https://pubmed.ncbi.nlm.nih.gov/{pmid}/",
                        summary=f"What study {pmid} found.",
                        pmid=pmid,
                        evidence_level=level,
                    )
                )
            await session.commit()
    finally:
        await engine.dispose()


async def test_topic_list_links_every_topic(settings):
    async with app_client(settings) as (_, client):
        response = await client.get("/")
    assert response.status_code == 200
    assert f'href="/topics/{TOPIC}"' in response.text


async def test_topic_page_counts_articles_and_shows_latest_evidence(settings):
    async with app_client(settings) as (_, client):
        empty = await client.get(f"/topics/{TOPIC}")
        assert "follows <strong>0</strong> peer-reviewed articles" in empty.text
        await _add_event(
            settings,
            "baseline",
            "evidence.baseline",
            [("1", "review"), ("2", "case_report"), ("3", "other")],
            age_days=30,
        )
        await _add_event(settings, "new-1", "evidence.new", [("4", "rct"), ("1", "review")])
        await _add_event(settings, "retraction", "evidence.retracted", [("9", "other")])
        response = await client.get(f"/topics/{TOPIC}")
    page = response.text
    assert "Get notified when new evidence is published on Indolent systemic mastocytosis" in page
    assert "follows <strong>4</strong> peer-reviewed articles" in page
    assert page.index("Study 4") < page.index("Study 2")
    assert "Randomized controlled trial" in page
    assert "What study 4 found." in page
    assert "Study 9" not in page
    assert page.count("Study 1<") == 1


async def test_pages_read_while_a_writer_holds_the_sqlite_lock(settings):
    """A page view reads a snapshot: a worker mid-transaction does not hold it up (when every
    transaction took the write lock, the page waited in SQLite's busy handler)."""
    async with app_client(settings) as (_, client):
        assert (await client.get(f"/topics/{TOPIC}")).status_code == 200
        writer = sqlite3.connect(
            settings.resolved_database_url.removeprefix("sqlite:///"), isolation_level=None
        )
        writer.execute("BEGIN IMMEDIATE")
        try:
            topic = await asyncio.wait_for(client.get(f"/topics/{TOPIC}"), timeout=5)
            listing = await asyncio.wait_for(client.get("/"), timeout=5)
        finally:
            writer.execute("ROLLBACK")
            writer.close()
    assert topic.status_code == 200
    assert listing.status_code == 200


async def test_framing_only_for_embed_and_only_by_allowed_sites(settings):
    async with app_client(settings) as (_, client):
        embed = await client.get(f"/embed/{TOPIC}")
        topic = await client.get(f"/topics/{TOPIC}")
    assert embed.status_code == 200
    assert "X-Frame-Options" not in embed.headers
    assert "frame-ancestors https://health.example" in embed.headers["Content-Security-Policy"]
    assert 'action="/embed/' in embed.text
    assert topic.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in topic.headers["Content-Security-Policy"]
    assert topic.headers["Referrer-Policy"] == "same-origin"


async def test_sms_disclosure_terms_and_privacy(settings):
    async with app_client(settings) as (_, client):
        topic = await client.get(f"/topics/{TOPIC}")
        terms = await client.get("/terms")
        privacy = await client.get("/privacy")
    for words in (
        "PubWatch alerts",
        "Msg &amp; data rates may apply",
        "HELP",
        "STOP",
        'href="/terms"',
        'href="/privacy"',
    ):
        assert words in topic.text
    assert terms.status_code == privacy.status_code == 200
    assert "Reply <strong>STOP</strong>" in terms.text
    assert "ask us to delete your data" in privacy.text


async def test_health_and_readiness(settings):
    async with app_client(settings) as (_, client):
        health = await client.get("/healthz")
        ready = await client.get("/readyz")
    assert health.json() == {"status": "ok"}
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"redis": "ok", "database": "ok", "migrations": "ok"}


async def test_unknown_page_for_a_browser_is_html(settings):
    async with app_client(settings) as (_, client):
        page = await client.get("/nowhere", headers={"Accept": "text/html"})
        api = await client.get("/nowhere")
    assert page.status_code == 404
    assert "Page not found" in page.text
    assert api.status_code == 404
    assert api.json() == {"detail": "Not Found"}
