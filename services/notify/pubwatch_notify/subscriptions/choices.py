"""The choices a subscriber makes, in the words the pages use."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pubwatch_notify.store.models import Channel, Frequency
from pubwatch_shared.events import EvidenceLevel

CHANNEL_LABELS = {
    Channel.EMAIL: "Email",
    Channel.SMS: "Text message (SMS)",
}

FREQUENCY_LABELS = {
    Frequency.IMMEDIATE: "As soon as something is published",
    Frequency.DAILY: "One summary a day",
    Frequency.WEEKLY: "One summary a week",
}

# The three thresholds the form offers, weakest first; a threshold is the weakest evidence
# level a subscriber still hears about.
THRESHOLD_LABELS = {
    EvidenceLevel.OTHER: "Every new study",
    EvidenceLevel.CLINICAL_TRIAL: "Clinical studies and stronger",
    EvidenceLevel.RCT: "Only high-quality evidence: trials, reviews, guidelines",
}

LEVEL_WORDS = {
    EvidenceLevel.GUIDELINE: "Clinical practice guideline",
    EvidenceLevel.SYSTEMATIC_REVIEW: "Systematic review or meta-analysis",
    EvidenceLevel.RCT: "Randomized controlled trial",
    EvidenceLevel.CLINICAL_TRIAL: "Clinical trial",
    EvidenceLevel.OBSERVATIONAL: "Observational study",
    EvidenceLevel.REVIEW: "Review article",
    EvidenceLevel.CASE_REPORT: "Case report",
    EvidenceLevel.OTHER: "Other article (editorial, letter or comment)",
}

# Offered as suggestions next to the free-text field; any IANA name is accepted.
COMMON_TIMEZONES = (
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Phoenix",
    "America/Los_Angeles",
    "America/Anchorage",
    "Pacific/Honolulu",
    "America/Puerto_Rico",
    "America/Toronto",
    "America/Vancouver",
    "America/Mexico_City",
    "America/Sao_Paulo",
    "Europe/London",
    "Europe/Dublin",
    "Europe/Paris",
    "Europe/Berlin",
    "Europe/Madrid",
    "Europe/Rome",
    "Europe/Amsterdam",
    "Europe/Stockholm",
    "Europe/Athens",
    "Africa/Johannesburg",
    "Asia/Jerusalem",
    "Asia/Dubai",
    "Asia/Kolkata",
    "Asia/Singapore",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Pacific/Auckland",
    "UTC",
)

MAX_TIMEZONE_CHARS = 64


def level_words(level: str) -> str:
    try:
        return LEVEL_WORDS[EvidenceLevel(level)]
    except ValueError:
        return "Article"


def threshold_words(level: str) -> str:
    """The form's words for a stored threshold, or a plain description of any other level."""
    try:
        parsed = EvidenceLevel(level)
    except ValueError:
        return level
    return THRESHOLD_LABELS.get(parsed, f"{LEVEL_WORDS[parsed]} and stronger")


def canonical_timezone(value: str) -> str | None:
    """The IANA name as the time zone database spells it, or None when it is not one."""
    text = value.strip()
    if not text or len(text) > MAX_TIMEZONE_CHARS:
        return None
    # zoneinfo would read a path such as "../../etc/passwd" relative to its data; only
    # names the database lists are accepted.
    by_lower = _timezones_by_lower_case()
    name = by_lower.get(text.lower())
    if name is None:
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return name


_TIMEZONE_CACHE: dict[str, str] = {}


def _timezones_by_lower_case() -> dict[str, str]:
    if not _TIMEZONE_CACHE:
        _TIMEZONE_CACHE.update({name.lower(): name for name in available_timezones()})
        _TIMEZONE_CACHE.setdefault("utc", "UTC")
    return _TIMEZONE_CACHE
