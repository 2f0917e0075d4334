"""Which channel each kind of message goes through, from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from pubwatch_notify.channels.base import EmailChannel, SmsChannel
from pubwatch_notify.channels.outbox import OutboxEmailChannel, OutboxSmsChannel
from pubwatch_notify.channels.pool import ChannelPool
from pubwatch_notify.channels.smtp import SmtpEmailChannel
from pubwatch_notify.channels.twilio_sms import TwilioSmsChannel
from pubwatch_notify.settings import NotifySettings


def make_email_channel(settings: NotifySettings) -> EmailChannel:
    if settings.smtp_url:
        return SmtpEmailChannel(
            settings.smtp_url,
            settings.email_from,
            timeout_s=settings.smtp_timeout_s,
            max_per_second=settings.smtp_max_per_second,
        )
    return OutboxEmailChannel(settings.resolved_outbox_dir, settings.email_from)


def make_sms_channel(settings: NotifySettings) -> SmsChannel:
    if settings.sms_configured:
        assert settings.twilio_account_sid is not None
        assert settings.twilio_auth_token is not None
        return TwilioSmsChannel(
            account_sid=settings.twilio_account_sid,
            auth_token=settings.twilio_auth_token,
            api_url=settings.twilio_api_url,
            from_number=settings.twilio_from,
            messaging_service_sid=settings.twilio_messaging_service_sid,
            max_per_second=settings.twilio_max_per_second,
            timeout_s=settings.twilio_timeout_s,
        )
    return OutboxSmsChannel(settings.resolved_outbox_dir)


@dataclass
class Channels:
    email: ChannelPool[EmailChannel]
    sms: ChannelPool[SmsChannel]

    async def close(self) -> None:
        await self.email.close()
        await self.sms.close()


def build_channels(settings: NotifySettings) -> Channels:
    """Pools of the configured channels, one connection per concurrent job at most."""
    size = settings.worker_max_jobs
    return Channels(
        email=ChannelPool(lambda: make_email_channel(settings), size),
        sms=ChannelPool(lambda: make_sms_channel(settings), size),
    )
