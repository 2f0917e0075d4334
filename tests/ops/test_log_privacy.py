"""No address, number or token in any log line, through a whole run of real processes.

Sign-up through the web form (confirmation email), a new article through ingest to a
confirmed subscriber (alert email), the status page, metrics, export and deletion: every
process's output is captured and searched for the subscribers' addresses, the secrets and
every token that went out in a link.
"""

from __future__ import annotations

import asyncio
import base64
import re
import subprocess
from datetime import date, timedelta
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from pubwatch_shared.embedded_redis import free_port
from tests.e2e.processes import base_env, run_command, running, wait_for_http
from tests.e2e.test_walking_skeleton import _add_confirmed_subscriber
from tests.fakes.eutils import FakeEutils
from tests.fakes.pubmed_xml import make_article
from tests.fakes.smtp import SmtpSink
from tests.notify.web.helpers import post_signup

pytestmark = pytest.mark.slow

TERM = "log privacy[tiab]"
SECRET = "privacy-test-secret-key-long-enough-for-tests"
ADMIN_TOKEN = "privacy-admin-token-0123456789"
SUBSCRIBER = "confirmed.reader@example.org"
NEWCOMER = "brand.new.reader@example.org"
TOPICS = f'[[topic]]\nslug = "privacy"\nname = "Privacy condition"\nquery = \'{TERM}\'\n'
LINK = re.compile(r"https?://[^\s\"'<>]+")


def _tokens_in(text: str) -> set[str]:
    """Long opaque pieces of every link: the signed tokens messages carry."""
    pieces: set[str] = set()
    for url in LINK.findall(text):
        parts = urlsplit(url)
        pieces |= {p for p in re.split(r"[/?=&#]", f"{parts.path}?{parts.query}") if len(p) >= 20}
    return pieces


def _text_of(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def test_logs_hold_no_address_and_no_token(
    tmp_path: Path, redis_url: str, smtp_sink: SmtpSink, fake_eutils: FakeEutils
) -> None:
    (tmp_path / "topics.toml").write_text(TOPICS)
    database_url = f"sqlite:///{tmp_path / 'pubwatch.db'}"
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    env = base_env(
        redis_url=redis_url,
        database_url=database_url,
        topics_file=str(tmp_path / "topics.toml"),
        eutils_url=fake_eutils.url,
        ncbi_email="ops@example.org",
        smtp_url=smtp_sink.url,
        secret_key=SECRET,
        admin_token=ADMIN_TOKEN,
        check_email_deliverability="false",
        var_dir=str(tmp_path / "var"),
        public_url=public_url,
        log_format="json",
    )
    today = date.today()
    fake_eutils.add_article(make_article("32000001", entry_date=today - timedelta(days=2)), [TERM])
    outputs: list[str] = []

    def command(*args: str) -> subprocess.CompletedProcess[str]:
        result = run_command(env, *args)
        outputs.append(result.stderr)
        return result

    command("notify", "migrate")
    _add_confirmed_subscriber(database_url, "privacy", SUBSCRIBER)
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    with (
        running(env, "notify", "api", log_path=api_log),
        running(env, "notify", "worker", log_path=worker_log),
    ):
        wait_for_http(f"{public_url}/readyz")

        async def sign_up() -> int:
            async with httpx.AsyncClient(base_url=public_url) as client:
                response = await post_signup(client, "privacy", email=NEWCOMER)
                return response.status_code

        assert asyncio.run(sign_up()) < 400
        command("ingest", "poll")  # the baseline
        fake_eutils.add_article(make_article("32000002", entry_date=today), [TERM])
        command("ingest", "poll")
        messages = smtp_sink.wait_for(2, timeout_s=60)
        basic = base64.b64encode(f"ops:{ADMIN_TOKEN}".encode()).decode()
        admin = httpx.get(f"{public_url}/admin", headers={"Authorization": f"Basic {basic}"})
        assert admin.status_code == 200
        assert httpx.get(f"{public_url}/metrics").status_code == 200
    command("notify", "export-subscriber", SUBSCRIBER)
    command("notify", "delete-subscriber", "--yes", SUBSCRIBER)

    assert sorted(r for m in messages for r in m.rcpt_tos) == sorted([NEWCOMER, SUBSCRIBER])
    mail_text = "\n".join(_text_of(m.message) for m in messages)
    tokens = _tokens_in(mail_text)
    assert tokens, "the emails carry signed links; none were found"
    logs = "\n".join([api_log.read_text(), worker_log.read_text(), *outputs])
    assert "notify worker started" in logs  # the capture did capture
    forbidden = {SUBSCRIBER, NEWCOMER, "confirmed.reader", "brand.new.reader", SECRET}
    forbidden |= {ADMIN_TOKEN, basic} | tokens
    leaked = sorted(secret for secret in forbidden if secret in logs)
    assert not leaked, leaked
