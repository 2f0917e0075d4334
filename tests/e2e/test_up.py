"""`pubwatch up` brings the whole system up on embedded defaults, and Ctrl-C takes it all down."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from pubwatch_shared.embedded_redis import free_port
from tests.e2e.processes import REPO_ROOT, base_env, pubwatch_command, wait_for_http
from tests.fakes.eutils import FakeEutils

pytestmark = pytest.mark.slow


def test_up_runs_everything_and_ctrl_c_stops_everything(
    tmp_path: Path, fake_eutils: FakeEutils
) -> None:
    port = free_port()
    env = base_env(
        public_url=f"http://127.0.0.1:{port}",
        var_dir=str(tmp_path / "var"),
        eutils_url=fake_eutils.url,  # never the real NCBI from a test
        ncbi_email="ops@example.org",
        topics_file=str(REPO_ROOT / "topics.toml"),
    )
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as log_file:
        up = subprocess.Popen(
            pubwatch_command("up"), env=env, cwd=tmp_path, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        assert wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout_s=60).status_code == 200
        children = psutil.Process(up.pid).children(recursive=True)
        commands = [" ".join(child.cmdline()) for child in children]
        assert any("redis-server" in c for c in commands), commands
        for process in ("notify api", "notify worker", "ingest worker"):
            assert any(process in c for c in commands), (process, commands)
        # The ingest worker polls on start: the fake E-utilities server hears from it.
        deadline = time.monotonic() + 30
        while fake_eutils.count(endpoint="esearch") == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert fake_eutils.count(endpoint="esearch") > 0, log_path.read_text()

        up.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert up.wait(60) == 0, log_path.read_text()
        _, alive = psutil.wait_procs(children, timeout=10)
        assert alive == [], [p.pid for p in alive]
        log = log_path.read_text()
        assert "embedded redis stopped" in log
        assert "all stopped" in log
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
