"""The thread store: where message-thread points live between turns, behind one protocol
(`Backend`): in this process's memory, in a diskcache directory every worker of the host shares
(`--thread-dir`), or in Redis for a fleet (state.threads).  Each applies the one claim rule,
`claimed` and `released` on a `Point`, inside its own atomic step; tests/test_backends_threads.py
is their contract.  flow.threads is what handlers use of it."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Callable, Protocol

import diskcache
import orjson

from .answers import BytesDisk
from .outage import Outage

log = logging.getLogger("ccproxyd.threads")
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
