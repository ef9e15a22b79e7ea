"""One writer thread that commits what queues up together: the response cache's and the ledger's.

A commit costs about as much as several inserts, and a disk write must never run on the event
loop, so each store hands its writes to a `BatchWriter`: the thread takes the first item, waits
up to `window` seconds for more (at most `limit`), and hands the batch to `write` in one call.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Callable

log = logging.getLogger("ccproxyd.batching")
_STOP = object()


class BatchWriter:
    def __init__(self, name: str, write: Callable[[list], None], window: float = 0.05, limit: int = 64) -> None:
        self.name = name
        self.write = write
        self.window = window
        self.limit = limit
        self.closed = False
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._hurry = threading.Event()         # set by flush and close: write without waiting out the window
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()

    @property
    def started(self) -> bool:
        return self._thread is not None

    def put(self, item) -> bool:
        """Queue an item (from any thread, never blocking); False once closed."""
        if self.closed:
            return False
        if self._thread is None:
            with self._starting:                # the event loop and an executor thread may race here
                if self._thread is None:
                    thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                    thread.start()
                    self._thread = thread
        self._queue.put(item)
        return True

    def flush(self, timeout: float) -> bool:
        """Wait (blocking) until what was queued before this call is written; False on timeout.
        The writer does not wait out its window for it."""
        if self._thread is None or self.closed:
            return True
        marker = _Flush()
        self._queue.put(marker)
        self._hurry.set()
        return marker.wait(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then end the thread."""
        self.closed = True
        if self._thread is not None:
            self._queue.put(_STOP)
            self._hurry.set()
            self._thread.join(timeout=timeout)
            self._thread = None

    def _run(self) -> None:
        stop = False
        while not stop:
            batch = [self._queue.get()]
            if not _ends(batch[-1]) and self._queue.qsize() < self.limit - 1:
                self._hurry.wait(self.window)
            self._hurry.clear()
            while len(batch) < self.limit and not _ends(batch[-1]):
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = batch[-1] is _STOP
            items = [item for item in batch if item is not _STOP and not isinstance(item, _Flush)]
            try:
                if items:
                    self.write(items)
            except Exception:                  # a bug in `write`: the thread must live on
                log.exception("%s: a batch of %d could not be written", self.name, len(items))
            finally:
                for item in batch:
                    if isinstance(item, _Flush):
                        item.set()


def _ends(item) -> bool:
    """A batch ends at a stop or a flush marker."""
    return item is _STOP or isinstance(item, _Flush)


class _Flush(threading.Event):
    """A queue item: set once everything queued before it is written."""
