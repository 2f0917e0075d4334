"""Subscriptions: sign-up, double opt-in, preferences, unsubscribe and the consent log.

The web routes (``pubwatch_notify.api.routes``) and the Twilio webhooks call into
:mod:`.service`; nothing here knows about HTTP.
"""
