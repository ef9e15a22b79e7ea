"""Provider holds across the fleet: a 429's Retry-After or an open breaker on one daemon holds the
provider back on every daemon.

A hold decided here is written as `ccproxyd:hold:<provider>` (wall-clock end, expiring with it;
a later end never shortened by an earlier one) and published on `ccproxyd:holds`.  Every daemon
listens on that channel on its own connection and applies what the others publish to its
breakers (`Guards.peer_hold`), so the request path asks Redis nothing.  On start and after every
outage the keys are read again, for the holds published while this daemon could not hear them.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

from ..upstream.resilience import Guards
from .link import BLOCK_SECONDS, OUTAGE, PREFIX, PROBE_SECONDS, Link, cancelled

log = logging.getLogger("ccproxyd.redis")
CHANNEL = PREFIX + "holds"
KEY = PREFIX + "hold:"
SET_LATER = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return redis.call('PUBLISH', ARGV[3], ARGV[4])
"""


class Holds:
    def __init__(self, link: Link, guards: Guards) -> None:
        self.link = link
        self.guards = guards
        self.origin = secrets.token_hex(6)
        self.script = link.client.register_script(SET_LATER)
        self.pending: set[asyncio.Task] = set()
        self.listener: asyncio.Task | None = None
        self.closed = False
        guards.on_hold = self.publish
        link.on_up.append(self.resync)

    def start(self) -> None:
        self.listener = asyncio.create_task(self._listen())

    def publish(self, provider: str, seconds: float) -> None:
        """Called by a breaker (synchronously): write and publish the hold in the background."""
        if seconds <= 0:
            return
        until = time.time() + seconds
        message = f"{self.origin} {until:.3f} {provider}"
        args = [f"{until:.3f}", max(1, int(seconds * 1000)), CHANNEL, message]
        task = asyncio.ensure_future(self.link.run(
            lambda r: self.script(keys=[KEY + provider], args=args, client=r), None))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    def _apply(self, provider: str, until: float) -> None:
        self.guards.peer_hold(provider, until - time.time())

    async def resync(self) -> None:
        async def read(r) -> list[tuple[str, bytes | None]]:
            names = [key async for key in r.scan_iter(match=KEY + "*", count=200)]
            values = await r.mget(names) if names else []
            return list(zip(names, values))
        for key, value in await self.link.run(read, []):
            if value is not None:
                key = key.decode() if isinstance(key, bytes) else key
                self._apply(key[len(KEY):], float(value))

    async def _listen(self) -> None:
        """Follow the channel; on a broken connection wait for the link to be up, then again."""
        await self.resync()
        while not self.closed:
            if not self.link.up:
                await asyncio.sleep(PROBE_SECONDS)
                continue
            pubsub = self.link.blocking.pubsub()
            try:
                await pubsub.subscribe(CHANNEL)
                await self.resync()                 # what was published before we listened
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=BLOCK_SECONDS)
                    if message is not None and message.get("type") == "message":
                        self._message(message["data"])
            except OUTAGE as exc:
                cancelled()
                self.link.down(exc)
            except asyncio.CancelledError:
                raise
            except Exception:
                cancelled()
                log.exception("redis: the holds listener failed; starting it again")
                await asyncio.sleep(PROBE_SECONDS)
            finally:
                try:
                    await pubsub.aclose()
                except Exception:
                    pass

    def _message(self, data: bytes) -> None:
        try:
            origin, until, provider = (data.decode() if isinstance(data, bytes) else data).split(" ", 2)
            if origin != self.origin:
                self._apply(provider, float(until))
        except ValueError:
            log.warning("redis: a hold message ccproxyd did not write: %r", data[:100])

    async def close(self) -> None:
        self.closed = True
        tasks = [t for t in (self.listener, *self.pending) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)
