"""Email addresses and mobile numbers: validation, one normal form, and the hash we keep.

Every address is normalized once, here, so that the same person typed twice (``Ann@X.org``
and ``ann@x.org``, ``(201) 555-0123`` and ``+12015550123``) is one subscriber.
"""

from __future__ import annotations

import hashlib
import hmac

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from phonenumbers import NumberParseException, PhoneNumberType

MAX_EMAIL_CHARS = 254
MAX_PHONE_INPUT_CHARS = 40
# A DNS lookup that hangs must not hold a sign-up page for long.
DNS_TIMEOUT_S = 5

_MOBILE_TYPES = {PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE}


class AddressError(ValueError):
    """The address cannot be used; the message is plain words for the form."""


def normalize_email(value: str, *, check_deliverability: bool) -> str:
    """The address in lower case, or :class:`AddressError` saying what is wrong with it.

    ``check_deliverability`` asks DNS whether the domain takes mail (it blocks: call it from
    a thread in async code).
    """
    text = value.strip()
    if not text:
        raise AddressError("Enter your email address.")
    if len(text) > MAX_EMAIL_CHARS:
        raise AddressError("This email address is too long.")
    try:
        validated = validate_email(
            text, check_deliverability=check_deliverability, timeout=DNS_TIMEOUT_S
        )
    except EmailNotValidError as exc:
        raise AddressError(_plain_email_error(str(exc))) from None
    # Mailboxes are case-insensitive in practice; one case makes one subscriber.
    return validated.normalized.lower()


def _plain_email_error(message: str) -> str:
    # email-validator's messages are already plain words; only its "@-sign" is jargon.
    if "must have an @-sign" in message:
        return "An email address needs an @, like name@example.com."
    return message.replace("@-sign", "@")


def normalize_phone(value: str, *, default_region: str) -> str:
    """The mobile number in E.164 (``+12015550123``), or :class:`AddressError`."""
    text = value.strip()
    if not text:
        raise AddressError("Enter your mobile number.")
    if len(text) > MAX_PHONE_INPUT_CHARS:
        raise AddressError("This number is too long to be a phone number.")
    try:
        number = phonenumbers.parse(text, default_region)
    except NumberParseException:
        raise AddressError(
            "This doesn't look like a phone number. Write it like (201) 555-0123 or, "
            "outside the US, with + and the country code."
        ) from None
    if not phonenumbers.is_valid_number(number):
        raise AddressError(
            "This number isn't a valid phone number. Check the digits and the country code."
        )
    if phonenumbers.number_type(number) not in _MOBILE_TYPES:
        raise AddressError("This looks like a landline. Text messages need a mobile number.")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def address_hash(secret_key: str, normalized_address: str) -> str:
    """HMAC-SHA256 of the normalized address: what the consent log keeps after deletion."""
    key = f"pubwatch.address-hash:{secret_key}".encode()
    return hmac.new(key, normalized_address.encode(), hashlib.sha256).hexdigest()


def mask_address(address: str) -> str:
    """Enough of an address for its owner to recognise it on a page, not enough to harvest."""
    if "@" in address:
        local, _, domain = address.partition("@")
        return f"{local[:1]}•••@{domain}"
    return f"•••{address[-4:]}"
