"""The exact words a subscriber agrees to, and their version.

The consent log stores both the version and the text as shown, so an operator can prove
what someone agreed to even after the wording changed. Change
``PUBWATCH_CONSENT_WORDING_VERSION`` together with any change here.
"""

from __future__ import annotations

from dataclasses import dataclass

from pubwatch_notify.store.models import Channel

SMS_FREQUENCY = "Msg frequency varies with what is published, at most one a day per topic."
# The confirmation text is a separate consent step with words of its own.
SMS_YES_REPLY_WORDING = "Replied YES to the confirmation text."
EMAIL_LINK_WORDING = "Pressed the button on the page the confirmation email links to."


@dataclass(frozen=True)
class Wording:
    version: str
    text: str


def consent_wording(channel: str, topic_name: str, program_name: str, version: str) -> Wording:
    """What the subscribe form says above its button, for this channel and topic."""
    if channel == Channel.SMS:
        text = (
            f"I agree to receive recurring automated text messages from {program_name} about "
            f"new evidence on {topic_name} at the number above. {SMS_FREQUENCY} "
            "Msg & data rates may apply. Reply HELP for help, STOP to cancel. "
            "Consent is not a condition of any purchase."
        )
    else:
        text = (
            f"I agree to receive emails from PubWatch about new evidence on {topic_name}, "
            "as often as I chose above. Every email has a one-click unsubscribe link."
        )
    return Wording(version=version, text=text)


def sms_disclosure(program_name: str) -> str:
    """The CTIA disclosure shown next to the mobile number field."""
    return (
        f"{program_name}: {SMS_FREQUENCY} Msg & data rates may apply. "
        "Reply HELP for help, STOP to cancel."
    )
