"""The whole system from the commands the containers run, as processes (issue 7, done-when 1).

docker-compose.yml runs `pubwatch notify migrate`, then `pubwatch notify api`,
`pubwatch notify worker` (here two, as `--scale notify-worker=2` would) and
`pubwatch ingest worker`. This test runs exactly those, checks `/readyz`, posts an event
through `POST /v1/events`, sees the email at the SMTP server, reads the metrics that count
it, runs the workers' health check, then sends SIGTERM to each process and expects a clean
exit (code 0) within the grace period.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.e2e.processes import run_command
from tests.fakes.eutils import FakeEutils
from tests.fakes.smtp import SmtpSink
from tests.ops.system import (
    API_CLIENT,
    GRACE_S,
    metric,
    metric_samples,
    migrated_system,
    post_event,
    processes,
    start,
    wait_ready,
    wait_until,
)

pytestmark = pytest.mark.slow

SUBSCRIBER = "system.reader@example.org"


def test_whole_system_serves_an_event_and_stops_cleanly(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    redis_url: str,
    smtp_sink: SmtpSink,
    fake_eutils: FakeEutils,
) -> None:
    system = migrated_system(
        request,
        tmp_path,
        redis_url=redis_url,
        smtp_url=smtp_sink.url,
        subscribers=[SUBSCRIBER],
        eutils_url=fake_eutils.url,
        shutdown_grace_s="10",
    )
    env, base_url = system.env, system.base_url

    with processes() as started:
        api = start(started, env, "notify", "api", log_dir=tmp_path, name="api")
        workers = [
            start(started, env, "notify", "worker", log_dir=tmp_path, name=f"notify-worker-{n}")
            for n in (1, 2)
        ]
        ingest = start(started, env, "ingest", "worker", log_dir=tmp_path, name="ingest-worker")

        def logs() -> str:
            return "\n".join(f"--- {p.name}\n{p.log()}" for p in started)

        try:
            # /readyz: Redis, the database and the schema; the workers are reported too.
            ready = wait_ready(base_url)

            def workers_reported() -> bool:
                nonlocal ready
                ready = httpx.get(f"{base_url}/readyz", timeout=5)
                workers_live = ready.json().get("workers")
                return (
                    ready.status_code == 200
                    and isinstance(workers_live, dict)
                    and workers_live.get("notify") == 2
                    and workers_live.get("ingest") == 1
                )

            wait_until(workers_reported, 60, "both notify workers and the ingest worker")
            assert ready.json()["checks"] == {"redis": "ok", "database": "ok", "migrations": "ok"}

            before = metric_samples(httpx.get(f"{base_url}/metrics", timeout=10).text)

            posted = post_event(base_url, "system-test-1")
            assert posted.status_code == 202, posted.text

            (mail,) = smtp_sink.wait_for(1, timeout_s=60)
            assert mail.rcpt_tos == [SUBSCRIBER]
            text_part = mail.message.get_body(("plain",))
            assert text_part is not None
            assert "An example randomized trial" in text_part.get_content()

            def sent_counted() -> bool:
                samples = metric_samples(httpx.get(f"{base_url}/metrics", timeout=10).text)
                return metric(samples, "pubwatch_deliveries", channel="email", status="sent") >= 1

            # The delivery is recorded as sent right after the SMTP server's answer.
            wait_until(sent_counted, 15, "the sent delivery in /metrics")
            after = metric_samples(httpx.get(f"{base_url}/metrics", timeout=10).text)
            events = "pubwatch_events_received_total"
            event_labels = {"type": "evidence.new", "source": API_CLIENT}
            assert (
                metric(after, events, **event_labels) == metric(before, events, **event_labels) + 1
            )
            sent = {"channel": "email", "status": "sent"}
            assert (
                metric(after, "pubwatch_deliveries", **sent)
                == metric(before, "pubwatch_deliveries", **sent) + 1
            )
            assert metric(after, "pubwatch_workers_live", service="notify") == 2
            assert metric(after, "pubwatch_workers_live", service="ingest") == 1

            # The compose health check of the notify workers.
            check = run_command(env, "notify", "check-worker", timeout_s=30)
            assert "live notify worker" in check.stdout + check.stderr
            run_command(env, "ingest", "check-worker", timeout_s=30)

            assert all(p.alive() for p in started), logs()
        except BaseException:
            print(logs())
            raise

        # SIGTERM each process, workers first as `docker compose down` does not guarantee.
        exits = {}
        for process in [*workers, ingest, api]:
            code, took_s = process.terminate(GRACE_S)
            exits[process.log_path.stem] = (code, round(took_s, 1))
        assert all(code == 0 for code, _ in exits.values()), (exits, logs())
        assert all(took_s < GRACE_S for _, took_s in exits.values()), exits
        assert "notify worker stopped" in workers[0].log()

    assert smtp_sink.count() == 1, [m.rcpt_tos for m in smtp_sink.messages]
