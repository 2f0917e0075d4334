"""Ingest's settings (``PUBWATCH_*``). Built once by the entry point and passed in."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from pubwatch_shared.settings import CommonSettings, check_url_port

# NCBI's published limits per identity: requests per second without and with an API key.
RATE_WITHOUT_KEY_PER_S = 3
RATE_WITH_KEY_PER_S = 10


class IngestSettings(CommonSettings):
    eutils_url: str = "https://eutils.ncbi.nlm.nih.gov/entrez/eutils/"
    ncbi_api_key: str | None = None
    ncbi_email: str | None = Field(
        default=None, description="The operator's address, sent to NCBI with every request."
    )
    ncbi_tool: str = Field(default="pubwatch", description="Names this software to NCBI.")

    poll_interval_min: int = Field(
        default=60, ge=1, le=1440, description="Minutes between scheduled polls of every topic."
    )
    overlap_days: int = Field(
        default=30,
        ge=0,
        description="Each search starts this many days before the last watermark, so records "
        "entered late with an older entry date are still found.",
    )
    retraction_check_interval_s: float = Field(
        default=86_400, ge=0, description="How often each topic re-checks announced articles."
    )
    request_timeout_s: float = Field(default=30.0, gt=0)
    max_attempts: int = Field(default=6, ge=1, description="Tries per E-utilities request.")
    backoff_base_s: float = Field(default=1.0, ge=0, description="First retry waits about this.")
    backoff_max_s: float = Field(default=60.0, ge=0)
    rate_limit_per_s: int | None = Field(
        default=None, ge=1, description="Override; default 3/s without an API key, 10/s with."
    )
    rate_window_s: float = Field(
        default=1.02,
        ge=1.0,
        description="How long each request counts against the limit, from the moment its "
        "answer began (by which NCBI has certainly seen it): NCBI's 1 s and a hair for the "
        "clocks. See pubwatch_ingest.ratelimit.",
    )
    efetch_batch_size: int = Field(default=200, ge=1, le=200)
    esearch_max_results: int = Field(
        default=10_000, ge=1, le=10_000, description="PubMed esearch never returns more."
    )
    event_chunk_size: int = Field(default=50, ge=1, le=500, description="Items per event.")
    topics_per_batch: int = Field(
        default=25,
        ge=1,
        description="Topics locked and polled together; their new articles are fetched in "
        "shared efetch batches.",
    )
    lock_ttl_s: float = Field(default=60.0, gt=0, description="Renewed while a poll runs.")
    article_cache_ttl_s: int = Field(
        default=900, ge=1, description="How long a fetched article is reused by other topics."
    )
    job_timeout_s: int = Field(default=3600, ge=10, description="Longest scheduled poll.")
    dtd_cache_dir: Path | None = Field(
        default=None, description="Where NCBI DTDs newer than biopython's are kept; var/dtd."
    )

    @field_validator("eutils_url")
    @classmethod
    def _http_url_with_slash(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"must be an http(s) URL with a host, got {value!r}")
        check_url_port(value)
        return value if value.endswith("/") else value + "/"

    @field_validator("ncbi_tool")
    @classmethod
    def _tool_without_spaces(cls, value: str) -> str:
        if not value or any(ch.isspace() for ch in value):
            raise ValueError("NCBI asks for a tool name without spaces")
        return value

    @field_validator("ncbi_api_key", "ncbi_email")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value.strip() or None if value else None

    @property
    def requests_per_s(self) -> int:
        if self.rate_limit_per_s is not None:
            return self.rate_limit_per_s
        return RATE_WITH_KEY_PER_S if self.ncbi_api_key else RATE_WITHOUT_KEY_PER_S

    @property
    def rate_slot_lease_s(self) -> float:
        """Longest wait for an answer to begin; a request still in flight counts until then."""
        return 2 * self.request_timeout_s

    @property
    def resolved_dtd_cache_dir(self) -> Path:
        return self.dtd_cache_dir or self.var_dir / "dtd"
