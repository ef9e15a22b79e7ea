"""The response cache and in-flight sharing across the fleet.

Keys (K is the response-cache key, which already binds the client, provider and request):
  ccproxyd:cache:K    the stored answer (JSON), expiring with the route's cache ttl
  ccproxyd:flight:K   the id of the flight a daemon is leading for K (a lease, renewed while it runs)
  ccproxyd:followers:ID  how many daemons follow it now (its leader's clients leaving does not
                      cancel a call another daemon follows)
  ccproxyd:stream:ID  that flight's output: SSE bytes as the clients got them (`d`; what queued
                      during one write goes as one entry), then `end` (the whole message, JSON,
                      with `by`: who answered, observe.access.origin_of) or `err` (the error, with
                      the provider, model and attempts that failed; `by` when its answer had begun)

A request that no daemon has answered asks one Lua script (`LOOKUP`): a stored answer, or the
lease for K (this daemon leads: it calls the upstream and XADDs what it sends its own clients),
or the id of the flight another daemon leads (this daemon follows it with XREAD, feeding a local
Flight that its own identical requests join).  So identical concurrent requests on any number of
daemons reach the provider once, and every follower streams the answer as it arrives.

A follower whose leader goes quiet and lets its lease lapse (killed), or whose Redis goes away,
before a byte reached its clients calls the upstream itself on the same Flight (its clients see
nothing of it; the request that started the Flight here pays for that call: flow.outcome); after
bytes went out it ends the stream with a 529 `overloaded_error` event, which clients retry.  While
Redis is down every request leads locally (the disk cache still works).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Awaitable, Callable

import orjson

from ..observe import access as observe
from ..state.link import BLOCK_SECONDS, PREFIX, Link
from .cache import Flight, message_events
from ..errors import TYPE_TO_ERROR, ApiError, CallCancelled, ClientFacingError, Overloaded, error_body
from ..translate.sse import encode
from ..translate.stream import message_id

log = logging.getLogger("ccproxyd.redis")
LEASE_MS = 15_000              # a leader that stops renewing (killed) frees the key after this
STREAM_KEEP_MS = 60_000        # a finished flight's stream stays readable this long
COALESCE_SECONDS = 0.002       # the leader gathers this long before a write: followers lag by it at most
LOOKUP = """
local cached = redis.call('GET', KEYS[1])
if cached then return {'hit', cached} end
local leader = redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2], 'GET')
if leader then return {'follow', leader} end
return {'lead', ARGV[1]}
"""
RELEASE = """
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) end
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _stream(flight_id: str) -> str:
    return f"{PREFIX}stream:{flight_id}"


def _followers(flight_id: str) -> str:
    return f"{PREFIX}followers:{flight_id}"


class FleetCache:
    def __init__(self, link: Link) -> None:
        self.link = link
        self.lookup_script = link.client.register_script(LOOKUP)
        self.release_script = link.client.register_script(RELEASE)
        self.tasks: set[asyncio.Task] = set()

    async def lookup(self, key: str) -> tuple[str, object]:
        """("hit", message) | ("lead", flight id) | ("follow", flight id) | ("local", None): Redis is down."""
        flight_id = secrets.token_hex(8)
        result = await self.link.run(lambda r: self.lookup_script(
            keys=[f"{PREFIX}cache:{key}", f"{PREFIX}flight:{key}"], args=[flight_id, LEASE_MS], client=r), None)
        if not result:
            return "local", None
        verdict, value = result[0].decode(), result[1]
        if verdict == "hit":
            try:
                return "hit", orjson.loads(value)
            except orjson.JSONDecodeError:
                return "local", None
        return verdict, value.decode()

    async def run(self, flight: Flight, key: str, lead: Callable[[object], Awaitable[None]], disk,
                  verdict: asyncio.Future, requested: str, stored: dict) -> None:
        """One flight's whole life in team mode (a background task): ask Redis, tell `verdict`
        ("hit", "lead", "follow" or "local"), then serve the stored answer, or lead the call
        (`lead(store)`, mirrored to the fleet), or follow another daemon's.  The flight is in the
        process's table from the start, so identical requests here join it without asking Redis.
        `stored` is who answered a stored answer (observe.access.stored_origin of the primary)."""
        try:
            kind, value = await self.lookup(key)
        except BaseException:
            verdict.set_result("local")
            flight.error = CallCancelled()
            flight.finish(None)
            raise
        verdict.set_result(kind)
        if kind == "hit":
            message = dict(value, id=message_id(), model=requested)
            flight.origin = stored
            flight.publish(encode(message_events(message)))
            flight.finish(message)
            return
        if kind == "follow":
            try:
                await self.follow(flight, key, value, lambda: lead(TeamStore(self, disk)), stored)
            finally:
                if not flight.done:                 # cancelled: every client here left (the orphan
                    flight.error = CallCancelled()  # grace), or the daemon stops; whoever waits is told
                    flight.finish(None)
            return
        lease = value if kind == "lead" else None
        store = TeamStore(self, disk, lease)
        if lease is not None:
            flight.mirror = self.publisher(key, lease)
        try:
            await lead(store)
        finally:
            if lease is not None and not store.released:
                self.release(key, lease)

    def publisher(self, key: str, flight_id: str) -> "Publisher":
        return Publisher(self, key, flight_id)

    async def store(self, key: str, message: dict, ttl: float, lease: str | None) -> None:
        """Store an answer for the fleet; with the `lease` of the flight that made it, give the
        lease back in the same round trip (the next identical request finds the answer)."""
        if lease is None:
            await self.link.run(lambda r: r.set(f"{PREFIX}cache:{key}", orjson.dumps(message),
                                                px=max(1, int(ttl * 1000))), None)
        else:
            await self._release(key, lease, orjson.dumps(message), max(1, int(ttl * 1000)))

    def release(self, key: str, flight_id: str) -> None:
        """The leader is done without storing (an error, a cut answer, a fallback's): the next
        identical request looks again."""
        self.spawn(self._release(key, flight_id, b"", 0))

    async def _release(self, key: str, flight_id: str, message: bytes, ttl_ms: int) -> None:
        await self.link.run(lambda r: self.release_script(keys=[f"{PREFIX}flight:{key}", f"{PREFIX}cache:{key}"],
                                                          args=[flight_id, message, ttl_ms], client=r), None)

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def follow(self, flight: Flight, key: str, flight_id: str, lead_here: Callable[[], Awaitable[None]],
                     stored: dict | None = None) -> None:
        """Feed `flight` from another daemon's stream; if that cannot be done before a byte was
        published here (Redis failed, or the stream was quiet for a lease and the leader no longer
        holds it), run `lead_here()` (the upstream call, on this same flight, paid for by the
        request that started it here: flow.outcome) instead.  The flight's `origin` is who
        answered, as the leader's last entry says (`stored`, the primary, when it does not say)."""
        stream = _stream(flight_id)
        await self.link.run(lambda r: self._count_follower(r, flight_id, 1), None)
        try:
            await self._read(flight, key, flight_id, lead_here, stream, stored)
        finally:
            self.spawn(self.link.run(lambda r: self._count_follower(r, flight_id, -1), None))

    @staticmethod
    async def _count_follower(r, flight_id: str, step: int) -> None:
        async with r.pipeline(transaction=False) as pipe:
            pipe.incrby(_followers(flight_id), step)
            pipe.pexpire(_followers(flight_id), STREAM_KEEP_MS)
            await pipe.execute()

    async def _read(self, flight: Flight, key: str, flight_id: str, lead_here, stream: str,
                    stored: dict | None) -> None:
        last, silent, failed = "0-0", 0.0, object()
        while True:
            entries = await self.link.run(lambda r: r.xread({stream: last}, count=256, block=int(BLOCK_SECONDS * 1000)),
                                          failed, client=self.link.blocking, timeout=BLOCK_SECONDS + 2 * self.link.timeout)
            if entries is failed:
                break
            if not entries:
                silent += BLOCK_SECONDS
                if silent >= LEASE_MS / 1000:           # quiet that long: is the leader still there?
                    if await self.link.run(lambda r: r.get(f"{PREFIX}flight:{key}"), None) != flight_id.encode():
                        break
                    silent = 0.0
                continue
            silent = 0.0
            for entry_id, fields in entries[0][1]:
                last = entry_id
                if b"d" in fields:
                    flight.publish(fields[b"d"])
                elif b"end" in fields:                  # without `by` (an older leader): the primary's
                    flight.origin = orjson.loads(fields[b"by"]) if b"by" in fields else stored
                    flight.finish(orjson.loads(fields[b"end"]))
                    return
                elif b"err" in fields:                  # `by`: the call had begun its answer
                    flight.origin = orjson.loads(fields[b"by"]) if b"by" in fields else None
                    error = orjson.loads(fields[b"err"])
                    if error.get("cancelled"):          # stopped there (no error event went out)
                        break
                    flight.error = _error(error)
                    flight.finish(None)
                    return
        if not flight.batches:
            flight.origin = None                        # the call here says who answered
            log.info("the daemon leading an identical request went quiet or Redis went away: calling the upstream here")
            await lead_here()
            return
        flight.error = Overloaded("the ccproxyd daemon answering this identical request stopped mid-answer; retry it",
                                  retry_after=1.0)
        flight.publish(encode([("error", error_body(flight.error))]))
        flight.finish(None)

    async def close(self) -> None:
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)


def _error(obj: dict) -> ClientFacingError:
    """The leader's error as its own followers see it: type, message, retry-after, and which
    upstream failed after how many attempts."""
    return TYPE_TO_ERROR.get(obj.get("type"), ApiError)(obj.get("message", "upstream error"),
                                                        retry_after=obj.get("retry_after"),
                                                        provider=obj.get("provider"),
                                                        upstream_model=obj.get("upstream_model"),
                                                        attempts=obj.get("attempts") or 0)


class Publisher:
    """The leader's side: what its Flight publishes goes to the stream, in order, from one task;
    the lease is renewed while the flight runs.  A Redis failure stops the mirroring (followers
    then take over as above); the local clients never wait for Redis."""

    def __init__(self, fleet: FleetCache, key: str, flight_id: str) -> None:
        self.fleet = fleet
        self.key = key
        self.flight_id = flight_id
        self.stream = _stream(flight_id)
        self.queue: list[dict] = []
        self.ready = asyncio.Event()
        self.ended = False
        self.task = fleet.spawn(self._write())

    async def followed(self) -> bool:
        """Whether a daemon is following this flight now (then its orphaning here does not end it)."""
        count = await self.fleet.link.run(lambda r: r.get(_followers(self.flight_id)), None)
        return int(count or 0) > 0

    def publish(self, data: bytes) -> None:
        self.queue.append({"d": data})
        self.ready.set()

    def finish(self, message: dict | None, error: BaseException | None, answer=None) -> None:
        if message is not None:
            end = {"end": orjson.dumps(message)}
            if answer is not None:                  # followers' lines say who answered, as the leader's
                end["by"] = orjson.dumps(observe.origin_of(answer))
            self.queue.append(end)
        else:
            cancelled = not isinstance(error, ClientFacingError) or isinstance(error, CallCancelled)
            error = error if isinstance(error, ClientFacingError) else CallCancelled()
            err = {"err": orjson.dumps({"type": error.error_type, "message": error.message,
                                        "retry_after": error.retry_after, "cancelled": cancelled,
                                        "provider": error.provider, "upstream_model": error.upstream_model,
                                        "attempts": error.attempts})}
            if answer is not None:                  # the call broke after its answer began: who answered
                err["by"] = orjson.dumps(observe.origin_of(answer))
            self.queue.append(err)
        self.ended = True
        self.ready.set()

    async def _write(self) -> None:
        """Mostly one XADD a write, of what came within COALESCE_SECONDS; the stream's and the
        lease's expiries are set on the first write, renewed every third of the lease, and the
        stream's lengthened at the end."""
        link = self.fleet.link
        loop = asyncio.get_running_loop()
        renew = 0.0                                  # the first write sets the expiries
        while True:
            try:
                async with asyncio.timeout(LEASE_MS / 3000):
                    await self.ready.wait()
            except TimeoutError:
                pass
            if not self.ended:
                await asyncio.sleep(COALESCE_SECONDS)   # what comes meanwhile goes in the same write
            self.ready.clear()
            batch, self.queue = _joined(self.queue), []
            ended, now = self.ended, loop.time()
            expiries = ended or now >= renew

            async def write(r) -> bool:
                if len(batch) == 1 and not expiries:
                    await r.xadd(self.stream, batch[0])
                    return True
                async with r.pipeline(transaction=False) as pipe:
                    for fields in batch:
                        pipe.xadd(self.stream, fields)
                    if expiries:
                        pipe.pexpire(self.stream, STREAM_KEEP_MS if ended else 2 * LEASE_MS)
                        pipe.pexpire(f"{PREFIX}flight:{self.key}", LEASE_MS)
                    await pipe.execute()
                return True
            if not await link.run(write, False):
                return                              # followers notice the silence and take over
            if expiries:
                renew = now + LEASE_MS / 3000
            if ended:
                return


def _joined(entries: list[dict]) -> list[dict]:
    """What queued while the last write was under way, as few entries as it can be: SSE bytes
    are self-delimiting, so consecutive batches go as one `d` entry."""
    out: list[dict] = []
    for fields in entries:
        if "d" in fields and out and "d" in out[-1]:
            out[-1] = {"d": out[-1]["d"] + fields["d"]}
        else:
            out.append(fields)
    return out


class TeamStore:
    """What proxy.lead stores a finished answer through: Redis first (the fleet's cache, giving
    back the flight's lease when this daemon led it), then the disk cache when there is one;
    `done` runs once both are over, stored or not."""

    def __init__(self, fleet: FleetCache, disk, lease: str | None = None) -> None:
        self.fleet = fleet
        self.disk = disk
        self.lease = lease
        self.released = False

    def put_later(self, key: str, message: dict, ttl: float, done: Callable[[], None]) -> None:
        self.released = self.lease is not None

        async def both() -> None:
            try:
                await self.fleet.store(key, message, ttl, self.lease)
            finally:
                if self.disk is not None:
                    self.disk.put_later(key, message, ttl, done)
                else:
                    done()
        self.fleet.spawn(both())
