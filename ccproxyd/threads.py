"""Message threads (beta `message-threads-2026-08-12`): ccproxyd holds a conversation between turns.

The wire contract, as the official SDKs speak it (anthropic Python 2.15 `lib/threads`, @anthropic-ai/sdk
1.15 `lib/internal/threads`; their tool runners thread by default):

- `thread: {"type": "create"}` on a request with the whole history: hold this conversation under the
  reply's `id`.  The reply itself is unchanged (no new response field).
- `thread: {"type": "continue", "previous_message_id": "msg_…"}` carries only the new messages (tool
  results; none at all after `pause_turn`) and no `system` or `tools`: the thread keeps those it was
  created with.  Every other field (model, max_tokens, tool_choice, thinking, stream…) is the turn's own.
- Rejections name their cause in `error.details.error_code`: 404 `thread_not_found`, 400
  `thread_already_continued` and 400 `thread_continue_in_flight` make the SDK replay the whole history
  under a new thread (`create`); 400 `thread_unsupported_request` (with `details.unsupported`, a list of
  names, when one is to blame) makes a tool runner go on without threads, sending the whole history.

So a continue is rebuilt here into the request the client would have sent without threads: the stored
`system` and `tools`, the stored history and reply, then the new messages; from then on it is an
ordinary request, and its reply becomes the next thread point.  Each reply can be continued once.

State has one owner, this module; the backend is behind `Backend`: in this process's memory, in a
diskcache directory that every worker of the host shares and that outlives a restart (`--thread-dir`),
or in Redis for a fleet (shared.threads).  Each applies the one claim rule, `claimed` and `released`
on a `Point`, inside its own atomic step; tests/test_backends_threads.py is their contract.  A record is
JSON bytes of `system`, `tools` and `messages`: what the client sent, never a provider key or the
client's key (the owner is the hash ccproxyd already keeps for the cache key).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Awaitable, Callable, Protocol

import diskcache
import orjson

from . import observe
from .cache import BytesDisk
from .errors import ThreadAlreadyContinued, ThreadContinueInFlight, ThreadNotFound, ThreadUnsupported
from .outage import Outage
from .translate.response import accumulate

log = logging.getLogger("ccproxyd.threads")
KEPT_FIELDS = ("system", "tools")        # taken from the thread on a continue (the SDKs' CREATE_ONLY_FIELDS)
CLAIM_SECONDS = 900.0                    # a continue's claim lapses after this (a worker that died mid-turn)
TOMBSTONE_BYTES = 96                     # what a continued entry is counted as once its record is dropped

# what a backend says of a thread point when a continue claims it
FOUND, MISSING, CONTINUED, IN_FLIGHT = "found", "missing", "continued", "in_flight"


class Backend(Protocol):
    """Where thread points live.  Every method is a coroutine so that a networked backend fits; none may
    block the event loop.  `claim` is atomic: of two continues of one point, one gets FOUND."""

    async def put(self, message_id: str, record: bytes, owner: str | None, ttl: float) -> None: ...

    async def claim(self, message_id: str, owner: str | None) -> tuple[str, bytes | None]: ...

    async def release(self, message_id: str, continued: bool) -> None: ...

    def stats(self) -> dict: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Point:
    """What the claim rule reads of a stored thread point (every backend keeps these three beside
    the record): whose it is, until when a continue holds it, and whether it has been continued."""
    owner: str | None
    claimed_until: float = 0.0
    spent: bool = False


def claimed(point: Point | None, has_record: bool, owner: str | None, now: float) -> tuple[str, Point | None]:
    """The claim rule, the one every backend applies inside its own atomic step: the verdict on a
    continue by `owner` at `now`, and the point to write back (None: nothing changes).  A point
    that is missing or another owner's is MISSING (never say whose it is); a continued one is
    CONTINUED; one held by a continue that has not lapsed is IN_FLIGHT; one whose record is gone
    (evicted) is MISSING; otherwise the caller holds it for CLAIM_SECONDS."""
    if point is None or point.owner != owner:
        return MISSING, None
    if point.spent:
        return CONTINUED, None
    if point.claimed_until > now:
        return IN_FLIGHT, None
    if not has_record:
        return MISSING, None
    return FOUND, replace(point, claimed_until=now + CLAIM_SECONDS)


def released(point: Point, continued: bool) -> Point:
    """The release rule: the claim is given back; a point whose turn was answered is continued
    (spent: its record may go, a second continue is CONTINUED)."""
    return replace(point, claimed_until=0.0, spent=point.spent or continued)


@dataclass
class _Entry:
    point: Point
    record: bytes | None                 # None once continued (a tombstone, to say so)
    expires: float


class MemoryBackend:
    """Thread points in this process, in the order they were stored, bounded by bytes and TTL: the
    oldest go first when the budget is full.  Every operation is a few dict steps on the event loop.
    Several workers each have their own: a continue that reaches another worker is `thread_not_found`,
    and the SDK replays the history there."""

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.clock = clock
        self.bytes = 0
        self.evictions = 0
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    @staticmethod
    def _size(message_id: str, entry: _Entry) -> int:
        return len(message_id) + (len(entry.record) if entry.record is not None else TOMBSTONE_BYTES)

    def _drop(self, message_id: str) -> None:
        entry = self._entries.pop(message_id)
        self.bytes -= self._size(message_id, entry)

    def _live(self, message_id: str) -> _Entry | None:
        entry = self._entries.get(message_id)
        if entry is not None and entry.expires <= self.clock():
            self._drop(message_id)
            return None
        return entry

    def _trim(self) -> None:
        now = self.clock()
        while self._entries:
            oldest_id, oldest = next(iter(self._entries.items()))
            if oldest.expires <= now:
                self._drop(oldest_id)
            elif self.bytes > self.max_bytes:
                self._drop(oldest_id)
                self.evictions += 1
            else:
                break

    async def put(self, message_id: str, record: bytes, owner: str | None, ttl: float) -> None:
        if message_id in self._entries:
            self._drop(message_id)
        entry = self._entries[message_id] = _Entry(Point(owner), record, self.clock() + ttl)
        self.bytes += self._size(message_id, entry)
        self._trim()

    async def claim(self, message_id: str, owner: str | None) -> tuple[str, bytes | None]:
        entry = self._live(message_id)
        verdict, point = claimed(entry and entry.point, entry is not None and entry.record is not None, owner,
                                 self.clock())
        if point is None:
            return verdict, None
        entry.point = point
        return verdict, entry.record

    async def release(self, message_id: str, continued: bool) -> None:
        entry = self._entries.get(message_id)
        if entry is None:
            return
        entry.point = released(entry.point, continued)
        if entry.point.spent and entry.record is not None:
            self.bytes -= len(entry.record) - TOMBSTONE_BYTES
            entry.record = None

    def stats(self) -> dict:
        return {"backend": "memory", "entries": len(self._entries), "bytes": self.bytes,
                "max_bytes": self.max_bytes, "evictions": self.evictions}

    def close(self) -> None:
        self._entries.clear()


class DiskBackend:
    """Thread points in a diskcache (SQLite) directory: shared by the workers of a host, kept across
    restarts.  Two keys a point: `s:ID`, its state (owner, expiry, claim, spent), and `r:ID`, its
    record; a claim is one transaction, so two processes never both get FOUND.  Every call runs on a
    worker thread.  A store that fails (damaged, full, unwritable) never fails a request: the point
    counts as missing (the SDK replays) and the failure is logged once until it works again."""

    def __init__(self, directory: str, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.cache = diskcache.Cache(directory, disk=BytesDisk, size_limit=max_bytes, statistics=False,
                                     eviction_policy="least-recently-stored", cull_limit=4)
        self.outage = Outage(log)

    async def _run(self, fn, *args, failed=None):
        try:
            result = await asyncio.get_running_loop().run_in_executor(None, fn, *args)
        except (OSError, sqlite3.Error, diskcache.Timeout) as exc:
            self.outage.failed("thread store %s cannot be used (%s: %s); continues are answered thread_not_found",
                               self.directory, type(exc).__name__, exc)
            return failed
        self.outage.worked("thread store %s works again", self.directory)
        return result

    def _state(self, message_id: str) -> tuple[Point, float] | None:
        """The point and its expiry (`s:ID`, JSON: owner, expires, claimed_until, spent)."""
        raw = self.cache.get("s:" + message_id)
        if not isinstance(raw, bytes):
            return None
        state = orjson.loads(raw)
        return Point(state["owner"], state["claimed_until"], state["spent"]), state["expires"]

    def _set_state(self, message_id: str, point: Point, expires: float) -> None:
        state = {"owner": point.owner, "expires": expires, "claimed_until": point.claimed_until, "spent": point.spent}
        self.cache.set("s:" + message_id, orjson.dumps(state), expire=max(0.001, expires - time.time()))

    def _put(self, message_id: str, record: bytes, owner: str | None, ttl: float) -> None:
        with self.cache.transact():
            self.cache.set("r:" + message_id, record, expire=ttl)
            self._set_state(message_id, Point(owner), time.time() + ttl)

    def _claim(self, message_id: str, owner: str | None) -> tuple[str, bytes | None]:
        with self.cache.transact():
            state = self._state(message_id)
            record = self.cache.get("r:" + message_id) if state is not None else None
            verdict, point = claimed(state and state[0], isinstance(record, bytes), owner, time.time())
            if point is None:
                return verdict, None
            self._set_state(message_id, point, state[1])
            return verdict, record

    def _release(self, message_id: str, continued: bool) -> None:
        with self.cache.transact():
            state = self._state(message_id)
            if state is None:
                return
            point = released(state[0], continued)
            if point.spent:
                self.cache.delete("r:" + message_id)
            self._set_state(message_id, point, state[1])

    async def put(self, message_id: str, record: bytes, owner: str | None, ttl: float) -> None:
        await self._run(self._put, message_id, record, owner, ttl)

    async def claim(self, message_id: str, owner: str | None) -> tuple[str, bytes | None]:
        return await self._run(self._claim, message_id, owner, failed=(MISSING, None))

    async def release(self, message_id: str, continued: bool) -> None:
        await self._run(self._release, message_id, continued)

    def stats(self) -> dict:
        """What is known without reading the disk (/health calls it on the event loop)."""
        return {"backend": "disk", "directory": self.directory, "max_bytes": self.max_bytes,
                "available": not self.outage.down}

    def close(self) -> None:
        self.cache.close()


def backend_for(settings) -> Backend:
    """The backend the settings name (blocking: it may open a database)."""
    if settings.thread_dir:
        try:
            return DiskBackend(settings.thread_dir, settings.thread_store_size)
        except (OSError, sqlite3.Error, diskcache.Timeout) as exc:
            log.warning("cannot open the thread store in %s (%s); keeping threads in memory", settings.thread_dir, exc)
    return MemoryBackend(settings.thread_store_size)


class Threads:
    """The thread store as handlers use it: `open(body, owner)` gives the Turn to serve."""

    def __init__(self, backend: Backend, ttl: float, max_record_bytes: int) -> None:
        self.backend = backend
        self.ttl = ttl
        self.max_record_bytes = max_record_bytes

    async def open(self, body: dict, owner: str | None) -> "Turn":
        """The whole request a threaded `body` stands for (checked by wire.messages first), as a Turn.
        A continue claims its thread point until the Turn closes."""
        thread = body["thread"]
        request = {k: v for k, v in body.items() if k != "thread"}
        previous = None
        if thread["type"] == "continue":
            previous = thread["previous_message_id"]
            state, record = await self.backend.claim(previous, owner)
            if state != FOUND:
                _count(state)
                raise REJECTIONS[state](previous)
            kept = orjson.loads(record)
            request["messages"] = kept["messages"] + request["messages"]
            for field in KEPT_FIELDS:
                if field in kept:
                    request[field] = kept[field]
        raw = orjson.dumps(request)
        if len(raw) > self.max_record_bytes:
            if previous is not None:
                await self.backend.release(previous, continued=False)
            _count("unsupported")
            raise ThreadUnsupported(f"this conversation ({len(raw)} bytes) is larger than ccproxyd holds in a "
                                    f"thread ({self.max_record_bytes} bytes); send it without `thread`")
        _count("continue" if previous else "create")
        return Turn(self, request, raw, owner, previous)

    def stats(self) -> dict:
        return {"state": "on", "ttl": self.ttl, "max_record_bytes": self.max_record_bytes, **self.backend.stats()}


REJECTIONS = {
    MISSING: lambda pid: ThreadNotFound(
        f"thread: no thread state for previous_message_id {pid[:100]!r} (expired, evicted, or held by another "
        "ccproxyd process); replay the full conversation with thread.type 'create'"),
    CONTINUED: lambda pid: ThreadAlreadyContinued(
        f"thread: the response {pid[:100]!r} has already been continued, and a response can be continued only "
        "once; continue from the thread's most recent response id"),
    IN_FLIGHT: lambda pid: ThreadContinueInFlight(
        f"thread: another request is still continuing from {pid[:100]!r}; wait for it and continue from its "
        "response id, or replay the full conversation with thread.type 'create'"),
}


def _count(result: str) -> None:
    observe.METRICS.inc("ccproxyd_threads_total", (("result", result),),
                        help="Threaded requests: create, continue, or why one was refused")


class Turn:
    """One threaded request: `body` and `raw` are the whole request (a continue rebuilt); the reply is
    kept as the next thread point before the client can see its end, so that a client continuing at
    once finds it.  `watch` and `sender` do that for a stream, `keep` for a whole message; `close`
    gives back a claim whose turn produced no reply (failed, or the client left), so it can be retried."""

    def __init__(self, threads: Threads, body: dict, raw: bytes, owner: str | None, previous: str | None) -> None:
        self.threads = threads
        self.body = body
        self.raw = raw
        self.owner = owner
        self.previous = previous
        self.kept = False
        self._events: list = []
        self._complete = False

    def watch(self, events: list) -> None:
        """Every event list of a stream, before it is sent (proxy.relay's `on_events`)."""
        self._events += events
        if events and events[-1][0] == "message_stop":
            self._complete = True

    def sender(self, send: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        """`send`, except that the bytes that end the message wait until the reply is kept
        (`end`, the stream's end with them, passes through)."""
        async def send_kept(data: bytes, *end: bool) -> None:
            if self._complete:                  # once: a ping sent while the reply is being kept goes by
                self._complete = False
                message, self._events = accumulate(self._events, []), []
                await self.keep(message)
            await send(data, *end)
        return send_kept

    async def keep(self, message: dict) -> None:
        """Store this turn's whole conversation under the reply's id; the previous point is continued."""
        threads = self.threads
        record = {field: self.body[field] for field in KEPT_FIELDS if field in self.body}
        record["messages"] = self.body["messages"] + [{"role": "assistant", "content": message["content"]}]
        data = orjson.dumps(record)
        if len(data) <= threads.max_record_bytes:
            await threads.backend.put(message["id"], data, self.owner, threads.ttl)
        else:
            log.info("thread point %s not kept: %d bytes is over the limit of %d", message["id"], len(data),
                     threads.max_record_bytes)
        if self.previous is not None:
            await threads.backend.release(self.previous, continued=True)
        self.kept = True

    async def close(self) -> None:
        if self.previous is not None and not self.kept:
            await self.threads.backend.release(self.previous, continued=False)


async def open_turn(threads: Threads | None, body: dict, owner: str | None) -> Turn | None:
    """The Turn of a request with a `thread`, None for one without; threads switched off refuse it
    as a request that cannot be threaded (a tool runner then sends the whole history each turn)."""
    if body.get("thread") is None:
        return None
    if threads is None:
        _count("unsupported")
        raise ThreadUnsupported("thread: message threads are switched off on this ccproxyd (--thread-ttl 0); "
                                "send the full conversation without `thread`")
    return await threads.open(body, owner)
