"""Outages of the stores that must never fail a request: the response cache, the spend ledger, the
thread store on disk and the link to Redis.  Each has an `Outage`: it logs one warning when the
store stops working and one when it works again, however many operations fail in between, and
remembers when the store was last tried, so that retries are spaced.  A file found damaged is set
aside (moved, never deleted: someone may want to look at it) and a new one started, unless another
worker of the host has already done so, which the file's identity (device and inode) tells: the
path then names a different file from the one this process opened.  Stdlib only; no store imports
anything from another.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Callable, Iterable


class Outage:
    """Whether one store is down, since when, and when it was last tried (on `clock`, monotonic)."""

    def __init__(self, log: logging.Logger, clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.clock = clock
        self.since: float | None = None    # start of the current outage; None while the store works
        self.last_try = 0.0
        self.count = 0                     # outages since the store was created

    @property
    def down(self) -> bool:
        return self.since is not None

    @property
    def seconds(self) -> float:
        """How long the current outage has lasted (0 while the store works)."""
        return 0.0 if self.since is None else self.clock() - self.since

    def failed(self, message: str, *args) -> bool:
        """A try failed: log `message % args` if this starts an outage (and say so); either way the
        store was tried now."""
        started = self.since is None
        if started:
            self.log.warning(message, *args)
            self.since = self.clock()
            self.count += 1
        self.tried()
        return started

    def worked(self, message: str, *args) -> None:
        """A try worked: if that ends an outage, log `message % args` (args may include `seconds`,
        read before this call)."""
        if self.since is not None:
            self.log.warning(message, *args)
        self.since = None

    def tried(self) -> None:
        self.last_try = self.clock()

    def due(self, every: float) -> bool:
        """At least `every` seconds since the store was last tried."""
        return self.clock() - self.last_try >= every


def identity(path: str) -> tuple[int, int] | None:
    """Which file `path` names now (device, inode); None if there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def set_aside(moves: Iterable[tuple[str, str]]) -> None:
    """Move each (source, destination) with os.replace; a source already gone is skipped.  The
    first other failure raises OSError (its `filename` is the source) and leaves the rest in place."""
    for source, destination in moves:
        try:
            os.replace(source, destination)
        except FileNotFoundError:
            if os.path.lexists(source):        # it is the destination's directory that is missing
                raise
