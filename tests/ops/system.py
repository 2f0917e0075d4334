"""Helpers for operations tests that run PubWatch's real processes against real servers.

The database is PostgreSQL when ``PUBWATCH_TEST_POSTGRES_URL`` is set (as in CI), else a
SQLite file; subscribers are written straight to it in bulk, events go through the API.
"""

from __future__ import annotations

import copy
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session

from pubwatch_notify.store.models import Delivery, Subscription
from pubwatch_notify.subscriptions.addresses import address_hash
from pubwatch_shared.embedded_redis import free_port
from pubwatch_shared.events import EXAMPLE_EVENT
from tests.conftest import POSTGRES_URL_ENV
from tests.e2e.processes import REPO_ROOT, pubwatch_command, run_command

SECRET = "ops-system-secret-key-long-enough-for-production"
API_CLIENT = "trialwatch"
API_KEY = "trialwatch-key-0123456789abcdef"
TOPIC = "ops-topic"
TOPICS = f'[[topic]]\nslug = "{TOPIC}"\nname = "Ops condition"\nquery = \'ops[tiab]\'\n'
# What `running` and `stop` allow a process between SIGTERM and its exit.
GRACE_S = 30.0


def database_url_for(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """PostgreSQL when the environment offers it, else SQLite under ``tmp_path``."""
    if os.environ.get(POSTGRES_URL_ENV):
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite:///{tmp_path / 'pubwatch.db'}"


def sync_engine(database_url: str) -> Engine:
    url = make_url(database_url)
    if url.get_backend_name() in {"postgresql", "postgres"}:
        url = url.set(drivername="postgresql+psycopg")
    return sqlalchemy.create_engine(url)


def add_email_subscribers(database_url: str, topic: str, addresses: list[str]) -> None:
    """Confirmed, immediate email subscribers, inserted in one statement per thousand."""
    now = datetime.now(UTC)
    rows = [
        {
            "topic": topic,
            "channel": "email",
            "address": address,
            "address_hash": address_hash(SECRET, address),
            "status": "confirmed",
            "frequency": "immediate",
            "min_level": "other",
            "timezone": "UTC",
            "confirmed_at": now,
        }
        for address in addresses
    ]
    engine = sync_engine(database_url)
    try:
        with Session(engine) as session, session.begin():
            for start in range(0, len(rows), 1000):
                session.execute(sqlalchemy.insert(Subscription), rows[start : start + 1000])
    finally:
        engine.dispose()


def delivery_statuses(database_url: str) -> dict[str, int]:
    engine = sync_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sqlalchemy.select(Delivery.status, sqlalchemy.func.count()).group_by(
                    Delivery.status
                )
            )
            return {str(status): int(count) for status, count in rows}
    finally:
        engine.dispose()


def event_body(event_id: str, topic: str = TOPIC, source: str = API_CLIENT) -> dict[str, Any]:
    body = copy.deepcopy(dict(EXAMPLE_EVENT))
    body.update(
        id=event_id,
        topic=topic,
        source=source,
        occurred_at=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    )
    return body


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


def post_event(base_url: str, event_id: str, timeout: float = 30) -> httpx.Response:
    """``POST /v1/events`` with the example event as ``event_id``, as the API client."""
    return httpx.post(
        f"{base_url}/v1/events", json=event_body(event_id), headers=auth(), timeout=timeout
    )


def system_env(
    tmp_path: Path, *, redis_url: str, database_url: str, smtp_url: str, port: int, **more: str
) -> dict[str, str]:
    from tests.e2e.processes import base_env

    topics_file = tmp_path / "topics.toml"
    topics_file.write_text(TOPICS)
    settings = {
        "redis_url": redis_url,
        "database_url": database_url,
        "topics_file": str(topics_file),
        "smtp_url": smtp_url,
        "secret_key": SECRET,
        "dev_mode": "false",
        "var_dir": str(tmp_path / "var"),
        "public_url": f"http://127.0.0.1:{port}",
        "events_api_keys": f"{API_CLIENT}:{API_KEY}",
        "check_email_deliverability": "false",
        "ncbi_email": "ops@example.org",
    }
    settings.update(more)
    return base_env(**settings)


@dataclass
class System:
    """Where a system test's processes run: their environment, database and API."""

    env: dict[str, str]
    database_url: str
    base_url: str


def migrated_system(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    *,
    redis_url: str,
    smtp_url: str,
    subscribers: list[str],
    **more: str,
) -> System:
    """The environment for the processes (``more`` as in :func:`system_env`) on a free
    port, the database migrated with ``pubwatch notify migrate`` and ``subscribers`` added
    to ``TOPIC`` as confirmed email subscribers."""
    database_url = database_url_for(request, tmp_path)
    port = free_port()
    env = system_env(
        tmp_path,
        redis_url=redis_url,
        database_url=database_url,
        smtp_url=smtp_url,
        port=port,
        **more,
    )
    run_command(env, "notify", "migrate")
    add_email_subscribers(database_url, TOPIC, subscribers)
    return System(env, database_url, f"http://127.0.0.1:{port}")


class Process:
    """A long-running pubwatch process whose output goes to a log file."""

    def __init__(self, env: dict[str, str], args: tuple[str, ...], log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self._log_file = log_path.open("wb")
        self.popen = subprocess.Popen(
            pubwatch_command(*args),
            env=env,
            cwd=REPO_ROOT,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    @property
    def name(self) -> str:
        return " ".join(self.args)

    def log(self) -> str:
        if not self._log_file.closed:
            self._log_file.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def terminate(self, grace_s: float = GRACE_S) -> tuple[int | None, float]:
        """SIGTERM; the exit code (None if it had to be killed) and the seconds it took."""
        started = time.monotonic()
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.popen.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            code = None
        self._log_file.close()
        return code, time.monotonic() - started

    def close(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
        self._log_file.close()


@contextmanager
def processes() -> Iterator[list[Process]]:
    """A list to start processes into; any still running at the end is killed."""
    started: list[Process] = []
    with ExitStack() as stack:
        stack.callback(_close_all, started)
        yield started


def _close_all(started: list[Process]) -> None:
    for process in started:
        process.close()


def start(
    started: list[Process], env: dict[str, str], *args: str, log_dir: Path, name: str
) -> Process:
    process = Process(env, args, log_dir / f"{name}.log")
    started.append(process)
    return process


def start_api_and_worker(
    started: list[Process], env: dict[str, str], log_dir: Path, worker_name: str = "worker"
) -> tuple[Process, Process]:
    """``pubwatch notify api`` (logged as ``api``) and one ``pubwatch notify worker``."""
    api = start(started, env, "notify", "api", log_dir=log_dir, name="api")
    worker = start(started, env, "notify", "worker", log_dir=log_dir, name=worker_name)
    return api, worker


def wait_until(condition: Any, timeout_s: float, what: str, interval_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def wait_ready(base_url: str, timeout_s: float = 60) -> httpx.Response:
    last: httpx.Response | None = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            last = httpx.get(f"{base_url}/readyz", timeout=5)
            if last.status_code == 200:
                return last
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(
        f"/readyz not 200 within {timeout_s:.0f} s: {last.text if last else 'no answer'}"
    )


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def metric_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text → {(name, labels): value}."""
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, labels_text, value = match.groups()
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels_text or ""))
        samples[(name, labels)] = float(value)
    return samples


def metric(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)
