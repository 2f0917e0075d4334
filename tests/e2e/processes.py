"""Start PubWatch's real processes for end-to-end tests, the way operators run them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]


def pubwatch_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pubwatch_shared.cli", *args]


def base_env(**settings: str) -> dict[str, str]:
    """The test's environment: nothing inherited from the developer's PUBWATCH_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUBWATCH_")}
    env["PUBWATCH_LOG_FORMAT"] = "text"
    env.update({f"PUBWATCH_{key.upper()}": value for key, value in settings.items()})
    return env


def run_command(
    env: dict[str, str], *args: str, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        pubwatch_command(*args),
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"`pubwatch {' '.join(args)}` exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


@contextmanager
def running(env: dict[str, str], *args: str, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A long-running pubwatch process; SIGTERM on exit, which must end it cleanly."""
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            pubwatch_command(*args),
            env=env,
            cwd=REPO_ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def wait_for_http(url: str, timeout_s: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code < 500:
                return response
        except httpx.HTTPError as exc:
            last_error = exc
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout_s} s ({last_error})")
