"""What a daemon process holds between requests, in one typed object: the application's `ctx`.

Everything long-lived is declared here, with its type, instead of being set on a loose namespace:
`app.create_app` sets `settings` and `cap`, its before_server_start listener opens the rest (and
closes them after the server stops), and team mode's `shared.attach` fills the Redis-backed parts.
An attribute not declared here cannot be set (`__slots__`), so a misspelt one fails at once.
Handlers read it as `request.app.ctx`; the routing table is read from it once per request.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..state.answers import Store
    from ..state.clients import Limits
    from ..config.table import RouteTable
    from ..flow.flights import Flights
    from ..state.ledger import Ledger
    from ..config.reload import Reloader
    from ..upstream.resilience import Guards
    from ..config.settings import Settings
    from ..flow.fleet import FleetCache
    from ..state.holds import Holds
    from ..state.link import Link
    from ..flow.threads import Threads
    from ..state.thread_store import Backend
    from ..upstream.pool import Upstreams


class Context:
    settings: Settings
    cap: Any                                  # connections.configure(): the open-connection cap
    table: RouteTable                         # replaced whole by a reload, never changed in place
    upstreams: Upstreams
    guards: Guards                            # breakers, concurrency caps, the retry budget
    store: Store | None                       # the response cache on disk (None: --no-cache)
    flights: Flights                          # the shared path: identical requests, stored answers
    background: set[asyncio.Task]             # upstream calls that run on for the cache
    ledger: Ledger | None                     # the spend ledger (None: --no-ledger)
    limits: Limits                            # client rpm, tpm and budgets
    threads: Threads | None                   # message threads (None: --thread-ttl 0)
    link: Link | None                         # team mode: the Redis connection
    fleet: FleetCache | None                  # team mode: the fleet's cache and flights
    holds: Holds | None                       # team mode: provider holds
    thread_backend: Backend | None            # team mode: message threads in Redis
    reloader: Reloader
    stop_watch: asyncio.Event
    watch_task: asyncio.Task
    snapshots: asyncio.Task | None            # with several workers: this one's metrics snapshots
    watchdog: asyncio.Task | None             # systemd's watchdog pings
    drain: asyncio.Task                       # set at stop: ends what still runs at the deadline
    stopping: bool

    __slots__ = tuple(__annotations__)

    def __init__(self, settings: Settings, cap: Any) -> None:
        self.settings, self.cap = settings, cap
        self.link = self.fleet = self.holds = self.thread_backend = None
        self.stopping = False
