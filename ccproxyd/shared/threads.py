"""Message-thread points in Redis (threads.Backend): a thread started on one daemon continues on any.

One hash a point, `ccproxyd:thread:<id>` (record, owner, claimed_until, spent), expiring with the
thread TTL.  A claim is one Lua script, so of two continues of one reply on two daemons one gets
FOUND.  While Redis is down a continue is `thread_not_found` (the SDK replays the whole history)
and a new point is not kept; nothing fails.  Redis's own `maxmemory` bounds the space, not
--thread-store-mb.
"""

from __future__ import annotations

from ..threads import CLAIM_SECONDS, CONTINUED, FOUND, IN_FLIGHT, MISSING
from .link import PREFIX, Link

KEY = PREFIX + "thread:"
CLAIM = """
local h = redis.call('HMGET', KEYS[1], 'owner', 'spent', 'claimed_until', 'record')
if not h[1] or h[1] ~= ARGV[1] then return {'missing'} end
if h[2] == '1' then return {'continued'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if tonumber(h[3]) > now then return {'in_flight'} end
if not h[4] then return {'missing'} end
redis.call('HSET', KEYS[1], 'claimed_until', tostring(now + tonumber(ARGV[2])))
return {'found', h[4]}
"""
RELEASE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'claimed_until', '0')
if ARGV[1] == '1' then
  redis.call('HSET', KEYS[1], 'spent', '1')
  redis.call('HDEL', KEYS[1], 'record')
end
return 1
"""
STATES = {b"found": FOUND, b"missing": MISSING, b"continued": CONTINUED, b"in_flight": IN_FLIGHT}


def _owner(owner: str | None) -> str:
    return "-" if owner is None else "o:" + owner


class RedisBackend:
    def __init__(self, link: Link) -> None:
        self.link = link
        self.claim_script = link.client.register_script(CLAIM)
        self.release_script = link.client.register_script(RELEASE)

    async def put(self, message_id: str, record: bytes, owner: str | None, ttl: float) -> None:
        async def write(r) -> None:
            async with r.pipeline(transaction=True) as pipe:
                pipe.delete(KEY + message_id)
                pipe.hset(KEY + message_id, mapping={"record": record, "owner": _owner(owner),
                                                     "claimed_until": "0", "spent": "0"})
                pipe.pexpire(KEY + message_id, max(1, int(ttl * 1000)))
                await pipe.execute()
        await self.link.run(write, None)

    async def claim(self, message_id: str, owner: str | None) -> tuple[str, bytes | None]:
        result = await self.link.run(lambda r: self.claim_script(keys=[KEY + message_id],
                                                                 args=[_owner(owner), CLAIM_SECONDS], client=r), None)
        if not result:
            return MISSING, None
        return STATES.get(result[0], MISSING), (result[1] if len(result) > 1 else None)

    async def release(self, message_id: str, continued: bool) -> None:
        await self.link.run(lambda r: self.release_script(keys=[KEY + message_id], args=["1" if continued else "0"],
                                                          client=r), None)

    def stats(self) -> dict:
        return {"backend": "redis", "url": self.link.where(), "available": self.link.up}

    def close(self) -> None:
        """The link is closed by the app with the rest of the shared state."""
