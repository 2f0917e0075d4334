"""Start-up refuses bad settings: the real commands exit non-zero at once, naming the
variable and what is wrong, with no traceback (issue 7, settings validation)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.processes import REPO_ROOT, base_env, pubwatch_command

# Where nothing listens: a process that got past its settings would hang or fail later.
UNREACHABLE_REDIS = "redis://127.0.0.1:9/0"
GOOD_SECRET = "settings-test-secret-key-long-enough-to-be-real"

NOTIFY = [("notify", "api"), ("notify", "worker")]
INGEST = [("ingest", "worker")]

# (settings, the commands that read them, the variable named, words of the reason)
CASES: list[tuple[str, dict[str, str], list[tuple[str, str]], str, str]] = [
    (
        "placeholder secret",
        {"dev_mode": "false", "secret_key": "change-me"},
        NOTIFY,
        "PUBWATCH_SECRET_KEY",
        "placeholder",
    ),
    (
        "default secret",
        {"dev_mode": "false", "secret_key": "dev-secret-key"},
        NOTIFY,
        "PUBWATCH_SECRET_KEY",
        "placeholder",
    ),
    (
        "public url without scheme",
        {"public_url": "pubwatch.example.org"},
        NOTIFY,
        "PUBWATCH_PUBLIC_URL",
        "http(s) URL",
    ),
    (
        "public url bad port",
        {"public_url": "https://pubwatch.example.org:443x"},
        NOTIFY,
        "PUBWATCH_PUBLIC_URL",
        "port",
    ),
    (
        "smtp url without scheme",
        {"smtp_url": "mail.example.org:587"},
        NOTIFY,
        "PUBWATCH_SMTP_URL",
        "smtp://",
    ),
    (
        "smtp url bad port",
        {"smtp_url": "smtp://user:pass@mail.example.org:submission"},
        NOTIFY,
        "PUBWATCH_SMTP_URL",
        "port",
    ),
    (
        "redis url without scheme",
        {"redis_url": "localhost:6379"},
        NOTIFY + INGEST,
        "PUBWATCH_REDIS_URL",
        "redis://",
    ),
    (
        "redis url bad port",
        {"redis_url": "redis://localhost:63a9/0"},
        NOTIFY + INGEST,
        "PUBWATCH_REDIS_URL",
        "port",
    ),
    (
        "database url of another database",
        {"database_url": "mysql://pubwatch@db/pubwatch"},
        NOTIFY,
        "PUBWATCH_DATABASE_URL",
        "postgresql://",
    ),
    (
        "database url bad port",
        {"database_url": "postgresql://pubwatch@db:5432x/pubwatch"},
        NOTIFY,
        "PUBWATCH_DATABASE_URL",
        "port",
    ),
    (
        "eutils url without scheme",
        {"eutils_url": "eutils.ncbi.nlm.nih.gov/entrez/eutils/"},
        INGEST,
        "PUBWATCH_EUTILS_URL",
        "http(s) URL",
    ),
    (
        "eutils url bad port",
        {"eutils_url": "https://eutils.ncbi.nlm.nih.gov:https/entrez/eutils/"},
        INGEST,
        "PUBWATCH_EUTILS_URL",
        "port",
    ),
    (
        "twilio without a sender",
        {"twilio_account_sid": "AC" + "0" * 32, "twilio_auth_token": "token-0123456789"},
        NOTIFY,
        "PUBWATCH_TWILIO_ACCOUNT_SID",
        "sender",
    ),
]


def _params() -> list[object]:
    return [
        pytest.param(settings, command, variable, reason, id=f"{' '.join(command)}: {name}")
        for name, settings, commands, variable, reason in CASES
        for command in commands
    ]


@pytest.mark.parametrize(("settings", "command", "variable", "reason"), _params())
def test_bad_setting_stops_the_process_with_a_clear_reason(
    tmp_path: Path, settings: dict[str, str], command: tuple[str, str], variable: str, reason: str
) -> None:
    (tmp_path / "topics.toml").write_text(
        '[[topic]]\nslug = "alpha"\nname = "Alpha"\nquery = "a[tiab]"\n'
    )
    good = {
        "redis_url": UNREACHABLE_REDIS,
        "database_url": f"sqlite:///{tmp_path / 'pubwatch.db'}",
        "topics_file": str(tmp_path / "topics.toml"),
        "var_dir": str(tmp_path / "var"),
        "secret_key": GOOD_SECRET,
        "dev_mode": "false",
        "public_url": "http://127.0.0.1:9",
    }
    env = base_env(**{**good, **settings})
    started = time.monotonic()
    result = subprocess.run(
        pubwatch_command(*command),
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    took_s = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert took_s < 15, f"took {took_s:.1f} s to refuse: {output}"
    assert variable in result.stderr, output
    assert reason in result.stderr, output
    assert "Traceback" not in output, output
