"""Response cache: the key (pure), the disk store (diskcache, bytes only), in-flight sharing.

Only complete, successful answers are stored, as the final Anthropic message (JSON bytes).  A hit
is replayed as JSON or as a stream with the same grammar as a live one.  Identical concurrent
requests share one upstream call: the first is the leader, the others follow its events.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import queue
import threading
import time
from typing import Callable

import diskcache
import orjson

from .translate.stream import message_id

KEY_VERSION = b"ccpx-cache-1"
log = logging.getLogger("ccproxyd.cache")
WRITE_WINDOW = 0.05          # seconds the writer waits for more answers to commit together
WRITE_BATCH = 64             # answers per transaction at most


def cache_key(upstream_body: dict, provider: str, base_url: str, client: str | None = None,
              requested: str | None = None) -> str:
    """Hash of everything that changes the answer; key order in the JSON does not matter.
    `requested` is the model name the client sent, which every answer echoes back.
    The provider's key is not part of it (it never reaches this function)."""
    material = orjson.dumps({"body": upstream_body, "provider": provider, "base_url": base_url,
                             "client": client, "requested": requested}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(KEY_VERSION + material).hexdigest()


def message_events(message: dict) -> list[tuple[str, dict]]:
    """A stored message as the stream events a live answer would have produced."""
    start = dict(message, id=message_id(), content=[], stop_reason=None, stop_sequence=None,
                 usage=dict(message["usage"], output_tokens=1))
    events = [("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        if kind == "text":
            empty, delta = {"type": "text", "text": ""}, {"type": "text_delta", "text": block["text"]}
        elif kind == "thinking":
            empty, delta = {"type": "thinking", "thinking": "", "signature": ""}, {
                "type": "thinking_delta", "thinking": block["thinking"]}
        else:
            empty = dict(block, input={})
            delta = {"type": "input_json_delta", "partial_json": orjson.dumps(block["input"]).decode()}
        events.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": empty}))
        if kind != "thinking" or block["thinking"]:
            events.append(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
        if kind == "thinking":
            events.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                                   "delta": {"type": "signature_delta", "signature": block["signature"]}}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                                     "usage": message["usage"]}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


class BytesDisk(diskcache.Disk):
    """Stores and returns bytes only: a row that claims to be a pickle is refused, never loaded."""

    def store(self, value, read, key=diskcache.UNKNOWN):
        if not isinstance(value, bytes):
            raise TypeError("the response cache stores bytes only")
        return super().store(value, read, key=key)

    def fetch(self, mode, filename, value, read):
        if mode == diskcache.core.MODE_PICKLE:
            raise ValueError("refusing to unpickle a cache entry")
        return super().fetch(mode, filename, value, read)


class Store:
    """The disk cache.  Reads happen on the caller's thread (a lookup costs about 20 µs); writes go
    to one writer thread, which commits what queues up within 50 ms in one transaction.

    diskcache's own hit/miss statistics are off: they turn every lookup into a write (about 45 µs
    more each).  /metrics counts hits and misses instead (`ccproxyd_cache_total`)."""

    def __init__(self, directory: str, size_limit: int = 1 << 30) -> None:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
        self.directory = directory
        self.evictions = 0                     # by this process, since it started
        self.cache = diskcache.Cache(directory, disk=BytesDisk, size_limit=size_limit,
                                     eviction_policy="least-recently-stored", cull_limit=1, statistics=False)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._closed = False

    def get(self, key: str) -> dict | None:
        try:
            raw = self.cache.get(key)
        except (ValueError, TypeError):
            return None
        if not isinstance(raw, bytes):
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None

    def put(self, key: str, message: dict, ttl: float) -> None:
        self.put_many([(key, message, ttl)])

    def put_many(self, entries: list[tuple[str, dict, float]]) -> None:
        """Store (key, message, ttl) entries in one transaction; count what the size limit evicted."""
        with self.cache.transact():
            before = len(self.cache)
            new = 0
            for key, message, ttl in entries:
                new += key not in self.cache
                self.cache.set(key, orjson.dumps(message), expire=ttl)
            self.evictions += max(0, before + new - len(self.cache))

    def put_later(self, key: str, message: dict, ttl: float, done: Callable[[], None]) -> None:
        """Queue a write for the writer thread; `done()` runs on that thread once it is over,
        stored or not (a full or broken disk is logged, never raised)."""
        if self._closed:
            log.warning("response cache: %s is closed; an answer finished during shutdown is not stored",
                        self.directory)
            done()
            return
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_queued, name="ccproxyd-cache-writer", daemon=True)
            self._writer.start()
        self._queue.put((key, message, ttl, done))

    def _write_queued(self) -> None:
        """Writes whatever queued up within WRITE_WINDOW of the first entry, in one transaction:
        a commit costs as much as several inserts."""
        stop = False
        while not stop:
            batch = [self._queue.get()]
            deadline = time.monotonic() + WRITE_WINDOW
            while len(batch) < WRITE_BATCH and batch[-1] is not None:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            stop = batch[-1] is None
            writes = [item for item in batch if item is not None]
            try:
                self.put_many([(key, message, ttl) for key, message, ttl, _ in writes])
            except Exception as exc:
                log.warning("response cache: cannot store %d answer(s) in %s: %s", len(writes), self.directory, exc)
            for *_, done in writes:
                try:
                    done()
                except Exception:               # the loop that asked may be gone at shutdown
                    pass

    def stats(self) -> dict:
        return {"directory": self.directory, "entries": len(self.cache), "bytes": self.cache.volume(),
                "evictions": self.evictions}

    def clear(self) -> int:
        return self.cache.clear()

    def close(self) -> None:
        """Finish the queued writes, then close the database."""
        self._closed = True
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join(timeout=30)
            self._writer = None
        self.cache.close()


class Flight:
    """One upstream call shared by identical concurrent requests."""

    def __init__(self) -> None:
        self.batches: list[bytes] = []
        self.done = False
        self.message: dict | None = None
        self.error = None                      # the ClientFacingError that ended it, if any
        self.answer = None                     # the proxy's Answer, for the log line
        self._changed = asyncio.Event()

    def publish(self, data: bytes) -> None:
        self.batches.append(data)
        self._wake()

    def finish(self, message: dict | None) -> None:
        self.message, self.done = message, True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def started(self) -> None:
        """Wait until the first bytes are ready or the flight ended."""
        while not self.batches and not self.done:
            await self._changed.wait()

    async def finished(self) -> None:
        while not self.done:
            await self._changed.wait()

    async def follow(self):
        """Every published batch, from the first, as it arrives."""
        seen = 0
        while True:
            waiter = self._changed
            while seen < len(self.batches):
                yield self.batches[seen]
                seen += 1
            if self.done:
                return
            await waiter.wait()
