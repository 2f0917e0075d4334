"""Settings both services read. Each service extends :class:`CommonSettings` with its own.

Settings are built once by the entry point and passed in; nothing reads the environment at
import time, so tests build their own.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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
                "PUBWATCH_REDIS_URL must start with redis://, rediss:// or unix:// "
                f"(got a value starting with {value.split(':', 1)[0]!r})"
            )
        return value

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, value: str) -> str:
        if value not in {"auto", "text", "json"}:
            raise ValueError("PUBWATCH_LOG_FORMAT must be auto, text or json")
        return value
