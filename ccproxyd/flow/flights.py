"""The shared path: one upstream call for every identical request, and its answer kept.

`Flights.join` is the one entry point.  It works out the request's key (the translated upstream
body without its per-session fields, the provider, the client, the model asked for and the
thinking shown), then hands back either a stored answer (a dict: from a flight here that has
finished, the disk store, or in team mode the fleet's store) or a `Flight` to follow: a running
upstream call of an identical request here, one another daemon runs (team mode:
flow.fleet.FleetCache), or a new one this request leads.  The request that starts a flight pays
for its call when the call runs here (flow.outcome.Outcome.settled: in team mode also a call this
daemon takes over from a daemon it followed).  A flight runs to its end even if
every client leaves, unless none comes back within the orphan grace: then it is cancelled and
forgotten (and, in team mode, only when no other daemon follows it).  proxy.lead runs the call
and stores a complete answer of the route's primary model.  Errors are raised, never returned.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial

import orjson

from ..observe import access as observe
from . import proxy
from ..state.answers import Store
from .cache import Flight, cache_key
from .outcome import Outcome
from ..config.routing import Decision

log = logging.getLogger("ccproxyd.http")

PER_SESSION = ("user", "prompt_cache_key")    # left out of the response cache key: sessions share answers


class Flights:
    def __init__(self, upstreams, guards, store: Store | None, fleet, background: set, orphan_grace: float,
                 ping_interval: float) -> None:
        self.upstreams, self.guards, self.store, self.fleet = upstreams, guards, store, fleet
        self.background = background          # every lead task, waited for at shutdown
        self.orphan_grace = orphan_grace
        self.ping_interval = ping_interval
        self.running: dict[str, Flight] = {}  # key -> the flight identical requests here join

    def shared(self, decision: Decision, cache_control: str) -> bool:
        """Whether this request takes the shared path: a store to keep answers in (disk or fleet),
        a route that caches, and a client that did not say no-cache or no-store."""
        control = cache_control.lower()
        return ((self.store is not None or self.fleet is not None) and decision.route.cache_ttl is not None
                and "no-cache" not in control and "no-store" not in control)

    async def join(self, body: dict, raw: bytes, decision: Decision, client: str | None,
                   outcome: Outcome) -> dict | Flight:
        primary = decision.primary
        upstream_body, names = proxy.upstream_request(body, primary.model)
        try:
            content = orjson.dumps(upstream_body)
            key = cache_key({k: v for k, v in upstream_body.items() if k not in PER_SESSION}, primary.provider.name,
                            primary.provider.base_url, client, decision.requested, decision.thinking)
        except TypeError as exc:            # deeper than orjson writes once translated
            raise proxy.too_deep(primary, exc) from None
        flight = self.running.get(key)
        message = flight.message if flight is not None else self.store.get(key) if self.store is not None else None
        if message is not None:
            outcome.hit(message, primary)
            return message
        if flight is not None:
            outcome.sharing(leads=False)
            return flight
        flight = self.running[key] = Flight(self.orphan_grace)    # identical requests here join it now
        first = [(content, names)]                       # handed over, not held by this closure for the stream
        del content
        request_id = outcome.record.request_id

        def lead(store):                                 # here, or (team mode) after the fleet's verdict
            flight.here = True                           # the call runs on this daemon: this request pays
            return proxy.lead(self.upstreams, self.guards, decision, raw, first.pop(), flight, store, key,
                              decision.route.cache_ttl, self.ping_interval, request_id)
        if self.fleet is None:
            task = asyncio.create_task(lead(self.store))
        else:                                            # team mode: a stored answer, or lead, or follow
            verdict = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(self.fleet.run(flight, key, lead, self.store, verdict, decision.requested,
                                                      observe.stored_origin(primary)))
        self.background.add(task)
        task.add_done_callback(lambda t: (self.background.discard(t), self._forget(key, flight)))
        flight.on_orphan = partial(self._orphaned, key, flight, task, body["max_tokens"])
        if self.fleet is None:
            outcome.sharing(leads=True, first=True)
            return flight
        try:
            leads = await asyncio.shield(verdict) in ("lead", "local")
        except asyncio.CancelledError:                   # the client left while Redis was asked
            outcome.sharing(leads=False, first=True)     # it pays if the call runs here (Outcome.settled)
            flight.join()
            flight.leave()                               # no client here: cancelled after the grace
            outcome.left(flight)
            raise
        outcome.sharing(leads, first=True)
        return flight

    def _orphaned(self, key: str, flight: Flight, task: asyncio.Task, max_tokens: int) -> None:
        """Every client here left: cancel the call, unless it is one that another daemon follows."""
        if flight.mirror is None:
            return self._cancel(key, flight, task, max_tokens)

        async def unless_followed() -> None:
            if not await flight.mirror.followed() and flight.clients == 0 and not flight.done:
                self._cancel(key, flight, task, max_tokens)
        self.fleet.spawn(unless_followed())

    def _forget(self, key: str, flight: Flight) -> None:
        if self.running.get(key) is flight:
            del self.running[key]

    def _cancel(self, key: str, flight: Flight, task: asyncio.Task, max_tokens: int) -> None:
        """Every client of this upstream call left and none came back within the grace: stop paying
        for it.  Forgotten first, so that a request arriving now starts a call of its own."""
        self._forget(key, flight)
        task.cancel()
        produced = len(flight.answer.translator.output_text()) // 4 if flight.answer is not None else 0
        observe.METRICS.inc("ccproxyd_orphans_cancelled_total", help="Upstream calls cancelled because every client left")
        observe.METRICS.inc("ccproxyd_orphan_tokens_avoided_total", (), max(0, max_tokens - produced),
                            help="Output tokens the cancelled calls could still have generated (an upper bound: "
                                 "max_tokens minus what was produced)")
        log.info("every client of an upstream call left %.1f s ago: cancelled it", flight.grace)
