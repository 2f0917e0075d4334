"""One new PubMed article travels the whole path, through real processes and sockets.

fake E-utilities → `pubwatch ingest poll` → Redis (arq, JSON) → `pubwatch notify worker`
→ SMTP server → one email to the one confirmed subscriber.
"""

from __future__ import annotations

import time
from datetime import date, timedelta
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy.orm import Session

from pubwatch_notify.store.models import Subscription
from pubwatch_notify.subscriptions.addresses import address_hash
from tests.e2e.processes import base_env, run_command, running
from tests.fakes.eutils import FakeEutils
from tests.fakes.pubmed_xml import make_article
from tests.fakes.smtp import SmtpSink

pytestmark = pytest.mark.slow

TERM = "walking skeleton[tiab]"
SECRET = "e2e-secret-key-that-is-long-enough-for-tests"
SUBSCRIBER = "reader@example.org"
BYSTANDER = "other-topic@example.org"

TOPICS = f"""
[[topic]]
slug = "skeleton"
name = "Skeleton condition"
query = '{TERM}'

[[topic]]
slug = "other"
name = "Another condition"
query = 'nothing matches this[tiab]'
"""


def _add_confirmed_subscriber(database_url: str, topic: str, address: str) -> None:
    engine = sqlalchemy.create_engine(database_url)
    with Session(engine) as session, session.begin():
        session.add(
            Subscription(
                topic=topic,
                channel="email",
                address=address,
                address_hash=address_hash(SECRET, address),
                status="confirmed",
                frequency="immediate",
                min_level="other",
                timezone="UTC",
            )
        )
    engine.dispose()


def test_new_article_reaches_the_subscriber_once(
    tmp_path: Path, redis_url: str, smtp_sink: SmtpSink, fake_eutils: FakeEutils
) -> None:
    topics_file = tmp_path / "topics.toml"
    topics_file.write_text(TOPICS)
    database_url = f"sqlite:///{tmp_path / 'pubwatch.db'}"
    env = base_env(
        redis_url=redis_url,
        database_url=database_url,
        topics_file=str(topics_file),
        eutils_url=fake_eutils.url,
        ncbi_email="ops@example.org",
        smtp_url=smtp_sink.url,
        secret_key=SECRET,
        var_dir=str(tmp_path / "var"),
        public_url="http://127.0.0.1:8999",
    )
    today = date.today()
    fake_eutils.add_article(make_article("31000001", entry_date=today - timedelta(days=2)), [TERM])

    run_command(env, "notify", "migrate")
    _add_confirmed_subscriber(database_url, "skeleton", SUBSCRIBER)
    _add_confirmed_subscriber(database_url, "other", BYSTANDER)

    with running(env, "notify", "worker", log_path=tmp_path / "worker.log") as worker:
        # First poll: the existing literature is the baseline; nobody hears about it.
        baseline = run_command(env, "ingest", "poll", "--topic", "skeleton")
        assert "1 baseline" in baseline.stdout, baseline.stdout

        new_article = make_article(
            "31000002",
            entry_date=today,
            title="A randomized trial of a walking skeleton",
            publication_types=["Journal Article", "Randomized Controlled Trial"],
        )
        fake_eutils.add_article(new_article, [TERM])
        second = run_command(env, "ingest", "poll", "--topic", "skeleton")
        assert "1 new" in second.stdout, second.stdout

        (mail,) = smtp_sink.wait_for(1, timeout_s=60)
        # Give a duplicate (or a baseline message) time to show up if the path would send one.
        time.sleep(2)
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()

    assert smtp_sink.count() == 1, [m.rcpt_tos for m in smtp_sink.messages]
    assert mail.rcpt_tos == [SUBSCRIBER]
    body = mail.message.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "A randomized trial of a walking skeleton" in text
    assert "https://pubmed.ncbi.nlm.nih.gov/31000002/" in text
    assert worker.returncode == 0, (tmp_path / "worker.log").read_text()
