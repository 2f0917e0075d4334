"""Notify's settings (``PUBWATCH_*``). Built once by the entry point and passed in."""

from __future__ import annotations

from functools import cached_property
from urllib.parse import urlsplit

from pubwatch_shared.settings import CommonSettings
from pydantic import Field, field_validator, model_validator

PLACEHOLDER_SECRETS = frozenset({"", "change-me", "changeme", "secret", "dev-secret-key"})
DEV_SECRET_KEY = "dev-secret-key"  # noqa: S105 - refused outside dev mode


class NotifySettings(CommonSettings):
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; unset means SQLite at var/pubwatch.db."
    )
    public_url: str = "http://127.0.0.1:8000"
    secret_key: str = DEV_SECRET_KEY
    dev_mode: bool = Field(default=True, description="Allows the placeholder secret key.")
    api_host: str = "127.0.0.1"
    api_port: int | None = Field(
        default=None, description="Defaults to the port of PUBWATCH_PUBLIC_URL."
    )

    smtp_url: str | None = None
    email_from: str = "PubWatch <alerts@pubwatch.localhost>"
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_from: str | None = None
    twilio_messaging_service_sid: str | None = None
    twilio_api_url: str = "https://api.twilio.com"

    events_api_keys: str = Field(default="", description="name:key pairs, comma-separated.")

    @field_validator("public_url", "twilio_api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"must be an http(s) URL with a host, got {value!r}")
        return value.rstrip("/")

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"smtp", "smtps"} or not parts.hostname:
            raise ValueError("must look like smtp://user:pass@host:port (smtps:// for TLS)")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith(("sqlite", "postgresql", "postgres://")):
            raise ValueError("must be a sqlite:// or postgresql:// URL")
        return value

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> NotifySettings:
        if not self.dev_mode and self.secret_key in PLACEHOLDER_SECRETS:
            raise ValueError(
                "PUBWATCH_SECRET_KEY is a placeholder; set a long random value "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`) "
                "or set PUBWATCH_DEV_MODE=true for a local run"
            )
        if self.twilio_account_sid and not (self.twilio_from or self.twilio_messaging_service_sid):
            raise ValueError(
                "PUBWATCH_TWILIO_ACCOUNT_SID is set but neither PUBWATCH_TWILIO_FROM nor "
                "PUBWATCH_TWILIO_MESSAGING_SERVICE_SID is: Twilio needs a sender"
            )
        if self.twilio_account_sid and not self.twilio_auth_token:
            raise ValueError(
                "PUBWATCH_TWILIO_ACCOUNT_SID is set but PUBWATCH_TWILIO_AUTH_TOKEN is not"
            )
        return self

    @cached_property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.var_dir / 'pubwatch.db'}"

    @property
    def listen_port(self) -> int:
        if self.api_port is not None:
            return self.api_port
        parts = urlsplit(self.public_url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def sms_configured(self) -> bool:
        return bool(self.twilio_account_sid and self.twilio_auth_token)
