"""What client connections may hold: a cap on open connections, below the process's file limit.

A flood of slow or idle connections (half-sent headers, kept-alive sockets nobody uses) would
otherwise take every file descriptor, and then no client at all is served.  At the cap, a new
connection evicts the one that has waited longest without a request being answered on it; when
every connection is busy answering, the new one is refused instead.
"""

from __future__ import annotations

import logging
import resource
import time

from sanic.http import Stage
from sanic.server.protocols.http_protocol import HttpProtocol

from ..observe import access as observe

log = logging.getLogger("ccproxyd.connections")
SHARE_OF_FILES = 0.75        # of the file limit, for client connections; the rest: upstreams, cache, logs
MIN_CONNECTIONS = 32


def raise_file_limit() -> int:
    """Raise the soft file limit to the hard one (Python keeps the soft default, often 1024);
    returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else hard


def connection_cap(file_limit: int) -> int:
    return max(MIN_CONNECTIONS, int(file_limit * SHARE_OF_FILES))


class BoundedHttpProtocol(HttpProtocol):
    """Sanic's HTTP/1.1 protocol, with `cap` open connections at most in this process."""

    __slots__ = ("opened",)
    cap = 1 << 30              # set once at start-up by `configure`

    def connection_made(self, transport) -> None:
        self.opened = time.monotonic()
        super().connection_made(transport)
        if len(self.connections) > self.cap:
            self._make_room()

    def _busy(self) -> bool:
        http = getattr(self, "_http", None)
        return http is not None and http.stage in (Stage.HANDLER, Stage.RESPONSE)

    def _make_room(self) -> None:
        waiting = [c for c in self.connections if c is not self and not c._busy()]
        if waiting:
            victim = min(waiting, key=lambda c: c.opened)
            observe.METRICS.inc("ccproxyd_connections_evicted_total",
                                help="Client connections closed to make room: idle or slow to send a request")
        else:
            victim = self
            observe.METRICS.inc("ccproxyd_connections_refused_total",
                                help="Client connections refused: every open connection was busy answering")
        log.debug("%d client connections open (cap %d): closing one that has waited since %.1f s ago",
                  len(self.connections), self.cap, time.monotonic() - victim.opened)
        victim.close()


def configure() -> int:
    """Raise the file limit and set the cap from it; returns the cap."""
    BoundedHttpProtocol.cap = connection_cap(raise_file_limit())
    return BoundedHttpProtocol.cap
