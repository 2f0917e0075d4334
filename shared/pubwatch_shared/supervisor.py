"""``pubwatch up``: start each long-running process as a child and keep them together.

The children are the same commands docker-compose runs, started through this same CLI,
so one machine and many run identical code. If one child dies the others are stopped: a
half-running system that looks healthy is worse than a stopped one.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from pubwatch_shared.embedded_redis import EmbeddedRedisError, RedisServer
from pubwatch_shared.settings import CommonSettings, load_settings_or_exit

log = logging.getLogger("pubwatch.up")

_PR_SET_PDEATHSIG = 1
_STOP_TIMEOUT_S = 25.0


@dataclass
class Child:
    name: str
    args: list[str]
    process: subprocess.Popen[bytes] | None = None


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pubwatch_shared.cli", *args]


def _run_migrations(env: dict[str, str]) -> bool:
    log.info("applying database migrations")
    result = subprocess.run(_cli("notify", "migrate"), env=env, check=False)
    if result.returncode != 0:
        log.error("migrations failed (exit %d); not starting", result.returncode)
        return False
    return True


def run_system(with_ingest: bool = True) -> int:
    settings = load_settings_or_exit(CommonSettings, "up")
    redis_server: RedisServer | None = None
    env = dict(os.environ)
    if settings.redis_url is None:
        redis_server = RedisServer(settings.var_dir / "redis")
        try:
            env["PUBWATCH_REDIS_URL"] = redis_server.start()
        except EmbeddedRedisError as exc:
            log.error("%s", exc)
            return 2
    children = [
        Child("notify-api", _cli("notify", "api")),
        Child("notify-worker", _cli("notify", "worker")),
    ]
    if with_ingest:
        children.append(Child("ingest-worker", _cli("ingest", "worker")))

    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        if not stopping:
            log.info("received %s: stopping everything", signal.Signals(signum).name)
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    exit_code = 0
    try:
        if not _run_migrations(env):
            return 1
        for child in children:
            child.process = subprocess.Popen(child.args, env=env, preexec_fn=_die_with_parent)
            log.info("started %s (pid %d)", child.name, child.process.pid)
        while not stopping:
            for child in children:
                assert child.process is not None
                code = child.process.poll()
                if code is not None:
                    log.error("%s exited with code %d; stopping the others", child.name, code)
                    exit_code = 1
                    stopping = True
            time.sleep(0.2)
    finally:
        _stop_children(children)
        if redis_server is not None:
            redis_server.close()
            log.info("embedded redis stopped")
    log.info("all stopped")
    return exit_code


def _stop_children(children: list[Child]) -> None:
    running = [c for c in children if c.process is not None and c.process.poll() is None]
    for child in running:
        assert child.process is not None
        child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + _STOP_TIMEOUT_S
    for child in running:
        assert child.process is not None
        remaining = max(0.1, deadline - time.monotonic())
        try:
            child.process.wait(remaining)
            log.info("%s stopped", child.name)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s; killing it", child.name, _STOP_TIMEOUT_S)
            child.process.kill()
            child.process.wait()
