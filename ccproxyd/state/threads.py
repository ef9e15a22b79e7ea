"""Message-thread points in Redis (thread_store.Backend): a thread started on one daemon continues on any.

One hash a point, `ccproxyd:thread:<id>` (record, owner, claimed_until, spent), expiring with the
thread TTL.  A claim or a release applies the rule every backend applies (thread_store.claimed,
thread_store.released) inside one optimistic transaction (WATCH, read, MULTI/EXEC, again if another
daemon changed the point meanwhile), on Redis's own clock (TIME), so of two continues of one reply
on two daemons one gets FOUND.  While Redis is down a continue is `thread_not_found` (the SDK
replays the whole history) and a new point is not kept; nothing fails.  Redis's own `maxmemory`
bounds the space, not --thread-store-mb.
"""

from __future__ import annotations

from typing import Callable

from redis.exceptions import WatchError

from .thread_store import MISSING, Point, claimed, released
from .link import PREFIX, Link

KEY = PREFIX + "thread:"
FIELDS = ("owner", "spent", "claimed_until", "record")


def _owner(owner: str | None) -> str:
    return "-" if owner is None else "o:" + owner


class RedisBackend:
    def __init__(self, link: Link) -> None:
        self.link = link

    async def put(self, message_id: str, record: bytes, owner: str | None, ttl: float) -> None:
        async def write(r) -> None:
            async with r.pipeline(transaction=True) as pipe:
                pipe.delete(KEY + message_id)
                pipe.hset(KEY + message_id, mapping={"record": record, "owner": _owner(owner),
                                                     "claimed_until": "0", "spent": "0"})
                pipe.pexpire(KEY + message_id, max(1, int(ttl * 1000)))
                await pipe.execute()
        await self.link.run(write, None)

    async def transact(self, message_id: str, change: Callable, fallback):
        """`change(point, record, now)` gives (result, the point to write or None) for the point as
        it is (None if there is none), on Redis's clock; written only if nobody changed the point
        meanwhile, else read and decided again.  The result, or `fallback` while Redis is down."""
        key = KEY + message_id

        async def attempt(r):
            async with r.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(key)
                        owner, spent, until, record = await pipe.hmget(key, *FIELDS)
                        seconds, micros = await pipe.time()
                        point = None if owner is None else Point(owner.decode(), float(until or 0), spent == b"1")
                        result, new = change(point, record, seconds + micros / 1_000_000)
                        if new is None:
                            return result
                        pipe.multi()
                        pipe.hset(key, mapping={"claimed_until": repr(new.claimed_until),
                                                "spent": "1" if new.spent else "0"})
                        if new.spent:
                            pipe.hdel(key, "record")
                        await pipe.execute()
                        return result
                    except WatchError:
                        continue
        return await self.link.run(attempt, fallback)

    async def claim(self, message_id: str, owner: str | None) -> tuple[str, bytes | None]:
        def claim(point, record, now):
            verdict, new = claimed(point, record is not None, _owner(owner), now)
            return (verdict, record if new is not None else None), new
        return await self.transact(message_id, claim, (MISSING, None))

    async def release(self, message_id: str, continued: bool) -> None:
        await self.transact(message_id, lambda point, record, now: (None, point and released(point, continued)), None)

    def stats(self) -> dict:
        return {"backend": "redis", "url": self.link.where(), "available": self.link.up}

    def close(self) -> None:
        """The link is closed by the app with the rest of the shared state."""
