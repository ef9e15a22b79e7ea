"""Stopping: at the drain deadline, every answer still being relayed or collected is cancelled and
ends with an error (a stream's error event, never a clean message_stop on a cut answer; 529 for a
whole answer), and any answer that starts after it ends at once."""

from __future__ import annotations

import asyncio
import logging

from ..errors import Overloaded

log = logging.getLogger("ccproxyd.proxy")


class Stop:
    """What the stop needs to know in this process: the tasks relaying or collecting an answer,
    and whether the drain deadline has passed (an answer that starts after it ends at once)."""

    def __init__(self) -> None:
        self.relays: set[asyncio.Task] = set()
        self.over = False


STOP = Stop()


class cut_at_drain:
    """Around an answer being relayed or collected: at the drain deadline (or when it starts
    after it) the answer is cancelled and ends as 529, which a client retries elsewhere.  (A
    class, not a generator: it runs twice for every request.)"""

    __slots__ = ("task",)

    def __enter__(self) -> None:
        if STOP.over:
            raise _cut_off()
        self.task = asyncio.current_task()
        STOP.relays.add(self.task)

    def __exit__(self, kind, exc, traceback) -> bool:
        STOP.relays.discard(self.task)
        if kind is None or not issubclass(kind, asyncio.CancelledError) or not STOP.over:
            return False                        # the client went away: not ours to answer
        if self.task.cancelling():
            self.task.uncancel()
        raise _cut_off() from None


def _cut_off() -> Overloaded:
    return Overloaded("ccproxyd is shutting down; the answer was cut off, retry it")


async def drain(timeout: float) -> None:
    """On stop, beside Sanic's own wait for open connections: at `timeout` seconds, end every
    answer still running with an error (a stream's error event, never a clean message_stop on a
    cut answer; 529 for a whole answer), and any that starts after that at once."""
    await asyncio.sleep(timeout)
    STOP.over = True
    remaining = list(STOP.relays)
    for task in remaining:
        task.cancel()
    if remaining:
        log.warning("drain timeout: ended %d running streams with an error event", len(remaining))
        await asyncio.wait(remaining, timeout=2)
