"""Ping events on a quiet stream: when nothing was written to a client for `interval` seconds,
`event: ping` goes out (Anthropic's keep-alive), so that proxies and clients between see bytes.

One timer per stream, moved on lazily (when it fires early it sets itself for when the stream
would be quiet long enough), instead of a task per stream that sleeps: a stream that writes often
never touches the timer, and starting and stopping it costs a fifth of a task's."""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable

PING = b'event: ping\ndata: {"type":"ping"}\n\n'


class Pings:
    __slots__ = ("loop", "send", "interval", "last_write", "handle", "sending")

    def __init__(self, send: Callable[[bytes], Awaitable[None]], interval: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.send, self.interval = send, interval
        self.last_write = time.monotonic()
        self.sending: asyncio.Task | None = None          # a ping being written
        self.handle: asyncio.TimerHandle | None = self.loop.call_later(interval, self._due)

    def wrote(self) -> float:
        """The stream wrote now (returned: time.monotonic())."""
        self.last_write = now = time.monotonic()
        return now

    def _due(self) -> None:
        quiet = time.monotonic() - self.last_write
        if quiet >= self.interval:
            if self.sending is None or self.sending.done():
                self.last_write = time.monotonic()
                self.sending = self.loop.create_task(self.send(PING))
                self.sending.add_done_callback(_seen)
            quiet = 0.0
        self.handle = self.loop.call_later(self.interval - quiet, self._due)

    def stop(self) -> None:
        """No more pings; one being written is cancelled (the stream's end or error goes next)."""
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        if self.sending is not None:
            self.sending.cancel()


def _seen(task: asyncio.Task) -> None:
    """A ping that could not be written (the client left): the stream's next write says so."""
    if not task.cancelled():
        task.exception()
