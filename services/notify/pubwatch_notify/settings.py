"""Notify's settings (``PUBWATCH_*``). Built once by the entry point and passed in."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from pubwatch_shared.settings import CommonSettings, check_url_port

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
    api_workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="uvicorn worker processes for `pubwatch notify api` (one per CPU core "
        "is a good start; every process shares the database and Redis).",
    )

    smtp_url: str | None = None
    email_from: str = "PubWatch <alerts@pubwatch.localhost>"
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_from: str | None = None
    twilio_messaging_service_sid: str | None = None
    twilio_api_url: str = "https://api.twilio.com"

    events_api_keys: str = Field(default="", description="name:key pairs, comma-separated.")
    # The events API for other systems (issue 6); the formats are parsed in api/clients.py.
    events_api_topics: str = Field(
        default="",
        description="Topics each client may post to: 'name:slug slug,other:*'. "
        "A client not listed may post to every topic.",
    )
    events_api_signing_secrets: str = Field(
        default="",
        description="name:secret pairs, comma-separated. A client listed here must sign every "
        "request (X-PubWatch-Signature); two secrets for one name allow a rotation.",
    )
    events_api_rate_per_minute: int = Field(
        default=600, ge=1, description="Requests per minute each client may make."
    )
    events_api_burst: int = Field(
        default=60, ge=1, description="Requests a client may make at once before the rate applies."
    )
    events_api_signature_tolerance_s: int = Field(
        default=300, ge=1, description="Signatures older (or newer) than this are refused."
    )
    events_api_max_body_bytes: int = Field(default=64 * 1024, ge=1024)

    # Delivery: fan-out, sending, retries (issue 5).
    fanout_page_size: int = Field(default=1000, ge=1, le=10_000)
    worker_max_jobs: int = Field(default=8, ge=1, description="Concurrent jobs per worker.")
    send_job_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="Longest a send job may run. A delivery claimed longer ago than this is "
        "no longer in flight and may be claimed again.",
    )
    send_max_tries: int = Field(default=10, ge=1, description="Then a delivery fails.")
    retry_base_delay_s: float = Field(default=2.0, gt=0)
    retry_max_delay_s: float = Field(default=300.0, gt=0)
    transient_failures_before_backoff: int = Field(
        default=5,
        ge=1,
        description="Consecutive transient failures after which a send job stops and backs off.",
    )
    shutdown_grace_s: int = Field(
        default=20, ge=0, description="On SIGTERM, how long running jobs get to finish."
    )
    smtp_timeout_s: float = Field(default=30.0, gt=0)
    smtp_max_per_second: float | None = Field(default=None, description="Unset: no limit.")
    twilio_max_per_second: float | None = Field(
        default=1.0,
        description="Messages per second the sender may send (long code 1, toll-free 3, "
        "short code 100). Unset or 0: no limit.",
    )
    twilio_timeout_s: float = Field(default=30.0, gt=0)
    sms_weekly_cap: int = Field(
        default=5, ge=1, description="SMS messages per subscriber per 7 days."
    )
    sms_quiet_start_hour: int = Field(default=21, ge=0, le=23)
    sms_quiet_end_hour: int = Field(default=8, ge=0, le=23)
    outbox_dir: Path | None = Field(
        default=None, description="Where unconfigured channels store messages; var/outbox."
    )

    admin_token: str | None = Field(
        default=None,
        description="Password for the operator status page /admin (HTTP Basic, any user "
        "name); unset: /admin is off.",
    )

    # Sign-up pages and the rules around them.
    program_name: str = Field(
        default="PubWatch alerts", description="The SMS program name the CTIA disclosure shows."
    )
    consent_wording_version: str = Field(
        default="2026-11",
        description="Version of the consent wording; change it whenever the wording changes.",
    )
    embed_allowed_origins: str = Field(
        default="",
        description="Origins (https://site.example) allowed to frame /embed/{topic}, "
        "comma- or space-separated; empty: no site may frame it.",
    )
    check_email_deliverability: bool = Field(
        default=True, description="Look up the email domain in DNS when someone signs up."
    )
    phone_default_region: str = Field(
        default="US", description="Region assumed for numbers written without +country code."
    )
    default_timezone: str = "America/New_York"
    signup_limit_per_ip: int = Field(default=30, description="Sign-up attempts per IP per hour.")
    signup_limit_per_address: int = Field(
        default=5, description="Sign-up attempts per email address or number per hour."
    )
    confirmation_interval_s: int = Field(
        default=3600, description="At most one confirmation message per address in this time."
    )

    @field_validator("public_url", "twilio_api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"must be an http(s) URL with a host, got {value!r}")
        check_url_port(value)
        return value.rstrip("/")

    @field_validator("default_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r}") from None
        return value

    @field_validator("embed_allowed_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        for origin in value.replace(",", " ").split():
            parts = urlsplit(origin)
            if parts.scheme not in {"http", "https"} or not parts.hostname or parts.path:
                raise ValueError(f"{origin!r} is not an origin like https://site.example")
        return value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"smtp", "smtps"} or not parts.hostname:
            raise ValueError("must look like smtp://user:pass@host:port (smtps:// for TLS)")
        check_url_port(value)
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith(("sqlite", "postgresql", "postgres://")):
            raise ValueError("must be a sqlite:// or postgresql:// URL")
        check_url_port(value)
        from sqlalchemy.engine import make_url  # here: only processes given a URL pay for it
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(value)
        except (ArgumentError, ValueError):
            raise ValueError(
                "is not a valid database URL (scheme://user:pass@host:port/name)"
            ) from None
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
    def embed_origins(self) -> list[str]:
        return self.embed_allowed_origins.replace(",", " ").split()

    @property
    def sms_configured(self) -> bool:
        return bool(self.twilio_account_sid and self.twilio_auth_token)

    @property
    def resolved_outbox_dir(self) -> Path:
        return self.outbox_dir or self.var_dir / "outbox"
