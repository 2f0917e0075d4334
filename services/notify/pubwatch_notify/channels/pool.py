"""A small pool of open channels shared by a worker's concurrent send jobs.

Each job leases one channel and sends its whole batch over it; the connection then goes
back to the pool for the next job, so a busy worker keeps ``size`` connections open instead
of opening one per job.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

from pubwatch_notify.channels.base import EmailChannel, SmsChannel

ChannelT = TypeVar("ChannelT", EmailChannel, SmsChannel)


class ChannelPool(Generic[ChannelT]):
    def __init__(self, make_channel: Callable[[], ChannelT], size: int) -> None:
        self._make_channel: Callable[[], ChannelT] = make_channel
        self._idle: list[ChannelT] = []
        self._slots = asyncio.Semaphore(size)
        self._leased: set[ChannelT] = set()
        # One instance tells the worker the channel's declared limits without a connection.
        self.prototype: ChannelT = make_channel()

    @property
    def max_per_second(self) -> float | None:
        limit: float | None = self.prototype.max_per_second
        return limit or None

    @property
    def rate_key(self) -> str:
        return str(getattr(self.prototype, "rate_key", self.prototype.name))

    @asynccontextmanager
    async def lease(self) -> AsyncIterator[ChannelT]:
        async with self._slots:
            channel = self._idle.pop() if self._idle else self._make_channel()
            self._leased.add(channel)
            healthy = False
            try:
                yield channel
                healthy = True
            finally:
                self._leased.discard(channel)
                if healthy:
                    self._idle.append(channel)
                else:
                    await asyncio.shield(channel.close())

    async def close(self) -> None:
        channels, self._idle = self._idle + list(self._leased), []
        for channel in channels:
            await channel.close()
