"""Settings both services read. Each service extends :class:`CommonSettings` with its own.

Settings are built once by the entry point and passed in; nothing reads the environment at
import time, so tests build their own.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pubwatch_shared.logs import configure_logging

ENV_PREFIX = "PUBWATCH_"


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    redis_url: str | None = Field(
        default=None,
        description="Redis URL; unset means an embedded Redis server the process starts and owns.",
    )
    var_dir: Path = Field(default=Path("var"), description="Where local state lives.")
    topics_file: Path = Path("topics.toml")
    log_level: str = "INFO"
    log_format: str = Field(default="auto", description="auto, text or json")

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                "must start with redis://, rediss:// or unix:// "
                f"(got a value starting with {value.split(':', 1)[0]!r})"
            )
        check_url_port(value)
        return value

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, value: str) -> str:
        if value not in {"auto", "text", "json"}:
            raise ValueError("must be auto, text or json")
        return value


SettingsT = TypeVar("SettingsT", bound=CommonSettings)


def check_url_port(url: str) -> None:
    """Refuse a URL whose port is not a number from 1 to 65535 (``host:abc``), which would
    otherwise fail later, deep in a client library, with a traceback."""
    try:
        port = urlsplit(url).port
    except ValueError:
        raise ValueError("has a port that is not a number from 1 to 65535") from None
    if port == 0:
        raise ValueError("has a port that is not a number from 1 to 65535")


def settings_error_lines(exc: ValidationError) -> list[str]:
    """One plain line per problem, naming the environment variable it came from."""
    lines = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"])
        name = f"{ENV_PREFIX}{field.upper()}" if field else "settings"
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"error: {name}: {message}")
    return lines


def load_settings_or_exit(settings_class: type[SettingsT], process_name: str) -> SettingsT:
    """Settings from the environment, logging configured; a bad setting ends the process
    with exit code 2 and one line per problem (no traceback)."""
    try:
        settings = settings_class()
    except ValidationError as exc:
        for line in settings_error_lines(exc):
            print(line, file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(process_name, settings.log_level, settings.log_format)
    return settings
