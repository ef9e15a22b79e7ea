"""The answer store: where complete answers are kept for identical requests to come.

`AnswerSink` is the protocol flow.proxy.lead stores a finished answer through: `Store` (the disk
cache of this host: bytes only, `BytesDisk` refuses a row that claims to be a pickle) and, in team
mode, flow.fleet.TeamStore (the fleet's Redis first, then this host's disk).  Each is an
optimisation that never fails a request; tests/test_backends_answers.py is their contract.
flow.cache has the key and the Flight that fill them."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import sqlite3
import threading
from typing import Callable, Protocol, runtime_checkable

import diskcache
import orjson

from .batching import BatchWriter
from .outage import Outage, identity, set_aside

log = logging.getLogger("ccproxyd.cache")


@runtime_checkable
class AnswerSink(Protocol):
    def put_later(self, key: str, message: dict, ttl: float, done: Callable[[], None]) -> None:
        """Keep `message` under `key` for `ttl` seconds, off the event loop; `done()` runs once on
        the loop's side when it is over, stored or not (a full disk, Redis down: the answer is
        simply not kept)."""
WRITE_WINDOW = 0.05          # seconds the writer waits for more answers to commit together
WRITE_BATCH = 64             # answers per transaction at most


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
    """The disk cache, an optimisation that never fails a request.

    Reads happen on the caller's thread (a lookup costs about 20 µs); writes go to one writer
    thread, which commits what queues up within 50 ms in one transaction.  A database that cannot
    be opened, read or written (damaged, truncated, deleted, unwritable) makes every lookup a miss:
    the damage is logged once, and the writer thread sets the files aside (in `damaged/`) and
    builds a new store, trying again at most every REOPEN_SECONDS while it cannot.

    diskcache's own hit/miss statistics are off: they turn every lookup into a write (about 45 µs
    more each).  /metrics counts hits and misses instead (`ccproxyd_cache_total`)."""

    def __init__(self, directory: str, size_limit: int = 1 << 30) -> None:
        self.directory = directory
        self.size_limit = size_limit
        self.evictions = 0                     # by this process, since it started
        self.cache: diskcache.Cache | None = None
        self._inode: tuple[int, int] | None = None   # of the cache.db this process opened
        self.outage = Outage(log)
        self._lock = threading.Lock()           # one rebuild at a time
        self._writer = BatchWriter("ccproxyd-cache-writer", self._write_batch, WRITE_WINDOW, WRITE_BATCH)
        self._full_logged = False
        self._aside_tried = False              # in this outage: a failure to set aside is logged once
        if not self._open():
            self._rebuild()                    # a damaged store is set aside at start too

    @property
    def available(self) -> bool:
        return self.cache is not None

    # ------------------------------------------------------------ health

    def _open(self) -> bool:
        """Open (or create) the store; on failure, log once per outage and serve without it."""
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            os.chmod(self.directory, 0o700)
            cache = diskcache.Cache(self.directory, disk=BytesDisk, size_limit=self.size_limit,
                                    eviction_policy="least-recently-stored", cull_limit=1, statistics=False)
            len(cache)                         # reads the database: a damaged one fails here
            st = os.stat(os.path.join(self.directory, "cache.db"))
        except (OSError, sqlite3.Error, diskcache.Timeout) as exc:
            self.outage.failed("cannot open the response cache in %s: %s; serving without it", self.directory, exc)
            return False
        self.cache, self._inode, self._aside_tried = cache, (st.st_dev, st.st_ino), False
        self.outage.worked("response cache: %s is working again (after %.0f s without it)", self.directory,
                           self.outage.seconds)
        return True

    def _damaged(self, exc: BaseException, failed: diskcache.Cache) -> None:
        """A read or write on `failed` failed: stop using it now; the writer thread rebuilds the
        store (unless `failed` has already been replaced)."""
        if self.cache is not failed:
            return
        self.cache = None
        self.outage.failed("response cache: %s is damaged (%s: %s); answering as misses and rebuilding it",
                           self.directory, type(exc).__name__, exc)
        self._writer.put(_REBUILD)

    def _rebuild(self) -> None:
        """Set the damaged files aside (unless another process already did and made a new store)
        and open a new store.  Blocking: the writer thread's job, or the constructor's."""
        with self._lock:
            if self.cache is not None:
                return
            self._set_aside(quiet=self._aside_tried)
            self._aside_tried = True
            self._open()

    def _set_aside(self, quiet: bool) -> None:
        now = identity(os.path.join(self.directory, "cache.db"))
        if now is None:
            return                             # gone: nothing to set aside
        if self._inode is not None and now != self._inode:
            return                             # another worker set it aside and built a new one
        aside = os.path.join(self.directory, "damaged")
        try:
            shutil.rmtree(aside, ignore_errors=True)   # one damaged copy, not one per outage
            os.makedirs(aside, mode=0o700)
            set_aside((os.path.join(self.directory, name), os.path.join(aside, name))
                      for name in os.listdir(self.directory) if name != "damaged")
            log.warning("response cache: the damaged files of %s are now in %s", self.directory, aside)
        except OSError as exc:
            (log.debug if quiet else log.warning)("response cache: cannot set the files of %s aside: %s",
                                                  self.directory, exc)

    # ------------------------------------------------------------ use

    def get(self, key: str) -> dict | None:
        cache = self.cache
        if cache is None:
            self._retry_later()
            return None
        try:
            raw = cache.get(key)
        except (ValueError, TypeError):
            return None
        except (OSError, sqlite3.Error) as exc:
            self._damaged(exc, cache)
            return None
        if not isinstance(raw, bytes):
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None

    def _retry_later(self) -> None:
        """While the store is down, ask the writer thread to try it again, now and then."""
        if self.outage.down and self.outage.due(REOPEN_SECONDS):
            self.outage.tried()
            self._writer.put(_REBUILD)

    def put(self, key: str, message: dict, ttl: float) -> None:
        self.put_many([(key, message, ttl)])

    def put_many(self, entries: list[tuple[str, dict, float]]) -> None:
        """Store (key, message, ttl) entries in one transaction; count what the size limit evicted."""
        cache = self.cache
        if cache is None:
            return
        rows = []
        for key, message, ttl in entries:
            try:
                rows.append((key, orjson.dumps(message), ttl))
            except TypeError as exc:            # a model's tool input deeper than orjson writes, say
                log.warning("response cache: cannot store an answer, it cannot be written as JSON (%s)", exc)
        try:
            with cache.transact():
                before = len(cache)
                new = 0
                for key, data, ttl in rows:
                    new += key not in cache
                    cache.set(key, data, expire=ttl)
                self.evictions += max(0, before + new - len(cache))
        except (OSError, sqlite3.Error) as exc:
            if getattr(exc, "errno", None) == errno.ENOSPC or "full" in str(exc).lower():
                if not self._full_logged:           # a full disk is not damage: nothing to rebuild
                    log.warning("response cache: %s is full (%s); answers are not stored until there is room",
                                self.directory, exc)
                self._full_logged = True
                return
            self._damaged(exc, cache)
        self._full_logged = False

    def put_later(self, key: str, message: dict, ttl: float, done: Callable[[], None]) -> None:
        """Queue a write for the writer thread; `done()` runs on that thread once it is over,
        stored or not (a full or broken disk is logged, never raised)."""
        if not self._writer.put((key, message, ttl, done)):
            log.warning("response cache: %s is closed; an answer finished during shutdown is not stored",
                        self.directory)
            done()

    def _write_batch(self, batch: list) -> None:
        """On the writer thread: a rebuild if one was asked for, then the answers in one transaction;
        each answer's `done()` runs whatever happened to it."""
        if _REBUILD in batch:
            self._rebuild()
        writes = [item for item in batch if item is not _REBUILD]
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
        """Entries and bytes (reads the database: call it off the event loop)."""
        cache = self.cache
        entries = volume = 0
        if cache is not None:
            try:
                entries, volume = len(cache), cache.volume()
            except (OSError, sqlite3.Error) as exc:
                self._damaged(exc, cache)
        return {"directory": self.directory, "entries": entries, "bytes": volume,
                "evictions": self.evictions, "available": self.cache is not None}

    def clear(self) -> int:
        return self.cache.clear() if self.cache is not None else 0

    def close(self) -> None:
        """Finish the queued writes, then close the database."""
        self._writer.close()
        if self.cache is not None:
            with contextlib.suppress(Exception):
                self.cache.close()


_REBUILD = ("rebuild",)                          # a writer-queue item: rebuild the store
REOPEN_SECONDS = 30.0                            # between attempts while the store cannot be used
