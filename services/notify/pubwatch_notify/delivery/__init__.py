"""From a change event to messages people receive: intake, fan-out, sending, digests.

The flow, and the one guarantee each step keeps::

    handle_event      store the event once (unique source + id), then fan out
    fan-out           one delivery per (subscription, event), unique; one send job per page
    send jobs         claim (queued -> sending), send, mark sent right after acceptance
    digests (cron)    due subscribers' pending deliveries -> one message, then next_digest_at
    sweeper (cron)    re-queue stale claims and deliveries whose job was lost

A delivery is only ever marked ``sent`` after the provider accepted its message.
"""
