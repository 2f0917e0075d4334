"""The subscribe form: raw fields in, a checked request or plain-word errors out.

Errors are keyed by field name so each is shown next to its field; ``values`` keeps what the
person typed so a mistake never costs them the rest of the form.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pubwatch_notify.store.models import Channel, Frequency
from pubwatch_notify.subscriptions.addresses import AddressError, normalize_email, normalize_phone
from pubwatch_notify.subscriptions.choices import THRESHOLD_LABELS, canonical_timezone
from pubwatch_shared.events import EvidenceLevel

FIELDS = ("channel", "email", "phone", "frequency", "min_level", "timezone", "consent")
MAX_FIELD_CHARS = 400


@dataclass(frozen=True)
class SubscribeRequest:
    topic: str
    channel: Channel
    address: str  # normalized: lower-case email or E.164 number
    frequency: Frequency
    min_level: EvidenceLevel
    timezone: str
    source: str


@dataclass
class FormResult:
    values: dict[str, str]
    errors: dict[str, str] = field(default_factory=dict)
    request: SubscribeRequest | None = None


@dataclass(frozen=True)
class FormRules:
    default_region: str
    check_deliverability: bool


def first_text(form: Mapping[str, object], name: str) -> str:
    """A field's text; anything that is not text (a file upload) counts as empty."""
    value = form.get(name)
    return value[:MAX_FIELD_CHARS] if isinstance(value, str) else ""


def read_values(form: Mapping[str, object], default_timezone: str) -> dict[str, str]:
    values = {name: first_text(form, name) for name in FIELDS}
    values["timezone"] = values["timezone"].strip() or default_timezone
    return values


def check_subscribe_form(
    form: Mapping[str, object],
    topic: str,
    rules: FormRules,
    default_timezone: str,
    source: str,
) -> FormResult:
    """Validate every field (not just the first bad one) so all errors show at once.

    May block on DNS when ``rules.check_deliverability`` is on: run it in a thread.
    """
    values = read_values(form, default_timezone)
    result = FormResult(values=values)
    errors = result.errors

    channel: Channel | None = None
    try:
        channel = Channel(values["channel"])
    except ValueError:
        errors["channel"] = "Choose how we should reach you: email or text message."

    address = ""
    if channel == Channel.EMAIL:
        try:
            address = normalize_email(
                values["email"], check_deliverability=rules.check_deliverability
            )
        except AddressError as exc:
            errors["email"] = str(exc)
    elif channel == Channel.SMS:
        try:
            address = normalize_phone(values["phone"], default_region=rules.default_region)
        except AddressError as exc:
            errors["phone"] = str(exc)

    frequency: Frequency | None = None
    try:
        frequency = Frequency(values["frequency"])
    except ValueError:
        errors["frequency"] = "Choose how often you want to hear from us."

    min_level: EvidenceLevel | None = None
    try:
        min_level = EvidenceLevel(values["min_level"])
    except ValueError:
        min_level = None
    if min_level not in THRESHOLD_LABELS:
        errors["min_level"] = "Choose which studies you want to hear about."

    timezone = canonical_timezone(values["timezone"])
    if timezone is None:
        errors["timezone"] = (
            "We don't know this time zone. Use a name like America/Chicago or Europe/London."
        )

    if values["consent"] != "yes":
        errors["consent"] = "Tick the box to agree to receive these messages."

    if not errors and channel and frequency and min_level and timezone:
        result.request = SubscribeRequest(
            topic=topic,
            channel=channel,
            address=address,
            frequency=frequency,
            min_level=min_level,
            timezone=timezone,
            source=source,
        )
    return result


SWITCH_FIELDS = ("email", "phone", "consent")


@dataclass
class SwitchFormResult:
    """The preferences page's channel switch: the new address, checked like a sign-up's."""

    values: dict[str, str]
    errors: dict[str, str] = field(default_factory=dict)
    address: str | None = None  # normalized, set only when every field is right


def read_switch_values(form: Mapping[str, object]) -> dict[str, str]:
    return {name: first_text(form, name) for name in SWITCH_FIELDS}


def check_switch_form(
    form: Mapping[str, object], channel: Channel, rules: FormRules
) -> SwitchFormResult:
    """Validate a switch to ``channel``: the new address or number and the consent box,
    with the subscribe form's rules and words, every error at once.

    May block on DNS when ``rules.check_deliverability`` is on: run it in a thread.
    """
    values = read_switch_values(form)
    result = SwitchFormResult(values=values)
    address = ""
    try:
        if channel == Channel.EMAIL:
            address = normalize_email(
                values["email"], check_deliverability=rules.check_deliverability
            )
        else:
            address = normalize_phone(values["phone"], default_region=rules.default_region)
    except AddressError as exc:
        result.errors["email" if channel == Channel.EMAIL else "phone"] = str(exc)
    if values["consent"] != "yes":
        result.errors["consent"] = "Tick the box to agree to receive these messages."
    if not result.errors:
        result.address = address
    return result
