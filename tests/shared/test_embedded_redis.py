from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from pubwatch_shared.embedded_redis import EmbeddedRedisError, RedisServer, redis_url_or_embedded


def test_data_survives_a_kill_with_append_only(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis") as server:
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        client.execute_command("BGREWRITEAOF")  # durable now, without waiting for fsync
        time.sleep(0.5)
        client.close()
        server.kill()
        server.start()
        client = redis.Redis.from_url(server.url)
        assert client.get("k") == b"v"
        client.close()
    assert not server.running


def test_second_owner_gets_a_clear_error(tmp_path: Path) -> None:
    with (
        RedisServer(tmp_path / "redis"),
        pytest.raises(EmbeddedRedisError, match="already owned by pid"),
    ):
        RedisServer(tmp_path / "redis").start()


def test_configured_url_is_used_as_is(tmp_path: Path) -> None:
    with redis_url_or_embedded("redis://example.invalid:6379/0", tmp_path) as url:
        assert url == "redis://example.invalid:6379/0"
    assert not (tmp_path / "redis").exists()


def test_embedded_redis_dies_with_its_owner(tmp_path: Path) -> None:
    # A process that owns the embedded Redis is SIGKILLed: the kernel ends Redis too.
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from pubwatch_shared.embedded_redis import RedisServer\n"
        "s = RedisServer(Path(sys.argv[1])); s.start(); print(s.pid, flush=True); time.sleep(60)\n"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "redis")], stdout=subprocess.PIPE, text=True
    )
    assert owner.stdout is not None
    redis_pid = int(owner.stdout.readline())
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    owner.stdout.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(redis_pid, 0)
        except ProcessLookupError:
            break
        # A zombie still answers kill(0); reap status via /proc.
        stat = Path(f"/proc/{redis_pid}/stat")
        if stat.exists() and stat.read_text().split()[2] == "Z":
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"redis-server {redis_pid} outlived its owner")
