"""What the daemon says about itself: GET /health, GET /metrics, and the gauges each worker
leaves for the others."""

from __future__ import annotations

import asyncio
import contextlib
import os

import orjson
from sanic import Request
from sanic.response import raw

from ..observe import access as observe


async def health(request: Request):
    ctx = request.app.ctx
    table, state = ctx.table, ctx.reloader.state
    body = {"status": "ok", "worker": os.getpid(),
            "routes": {"path": table.path, "version": table.version, "loaded_at": state.loaded_at},
            "reload": {"accepted": state.accepted, "rejected": state.rejected, "last_error": state.last_error},
            "providers": ctx.guards.snapshot(),
            "cache": _store_state(ctx.store),
            "ledger": _store_state(ctx.ledger, "path"),
            "threads": ctx.threads.stats() if ctx.threads else {"state": "off"},
            "redis": ctx.link.health() if ctx.link else {"state": "off"},
            "clients": await ctx.limits.usage(table.clients)}
    return raw(orjson.dumps(body), content_type="application/json")


def _store_state(store, where: str = "directory") -> dict:
    """The response cache's or the spend ledger's state: off, up, or down (cannot be used now)."""
    if store is None:
        return {"state": "off"}
    return {"state": "up" if store.available else "down", where: getattr(store, where)}



BREAKER_VALUE = {"closed": 0, "half_open": 1, "open": 2}


async def metrics(request: Request):
    """Prometheus text.  The disk reads (the cache's database, the other workers' snapshots) run
    off the event loop; the counters are read on it."""
    ctx = request.app.ctx
    stats, snapshots = await asyncio.get_running_loop().run_in_executor(None, _read_disk, ctx)
    worker = (("worker", str(os.getpid())),) if ctx.settings.metrics_dir else ()
    gauges = worker_gauges(ctx) + await ctx.limits.gauges(ctx.table.clients, ctx.link, worker)
    if stats is not None:                              # one disk for every worker: not per worker
        gauges += [("ccproxyd_cache_bytes", (), stats["bytes"], "Bytes in the response cache"),
                   ("ccproxyd_cache_entries", (), stats["entries"], "Entries in the response cache"),
                   ("ccproxyd_cache_available", (), int(stats["available"]),
                    "1 while the response cache can be used, 0 while it is down (answers are misses)")]
    merged = observe.METRICS.merged(snapshots) if ctx.settings.metrics_dir else observe.METRICS
    return raw(merged.render(gauges + merged.gauges).encode(), content_type="text/plain; version=0.0.4")


def _read_disk(ctx) -> tuple[dict | None, list[bytes]]:
    """The cache's size, and the other workers' last metric snapshots when there are several."""
    return (ctx.store.stats() if ctx.store is not None else None), read_snapshots(ctx)


def read_snapshots(ctx) -> list[bytes]:
    """The other workers' last metric snapshots (blocking: call it from a thread)."""
    directory = ctx.settings.metrics_dir
    if not directory:
        return []
    own = f"{os.getpid()}.json"
    snapshots = []
    for name in os.listdir(directory):
        if name.endswith(".json") and name != own:
            with contextlib.suppress(OSError), open(os.path.join(directory, name), "rb") as f:
                snapshots.append(f.read())
    return snapshots


def worker_gauges(ctx) -> list[tuple[str, tuple, float, str]]:
    """This process's breakers, reloads and cache evictions; labelled with the worker's pid when
    there are several workers, since each has its own."""
    worker = (("worker", str(os.getpid())),) if ctx.settings.metrics_dir else ()
    state = ctx.reloader.state
    gauges = [("ccproxyd_breaker_state", (("provider", name), *worker), BREAKER_VALUE[snap["state"]],
               "Circuit breaker state: 0 closed, 1 half-open, 2 open")
              for name, snap in sorted(ctx.guards.snapshot().items())]
    gauges += [("ccproxyd_reloads", (("result", "accepted"), *worker), state.accepted, "Routing table reloads"),
               ("ccproxyd_reloads", (("result", "rejected"), *worker), state.rejected, "Routing table reloads")]
    if ctx.store is not None:
        gauges.append(("ccproxyd_cache_evictions", worker, ctx.store.evictions,
                       "Entries evicted by the size limit, by this process since it started"))
    flights = ctx.flights.running.values()
    gauges += [("ccproxyd_shared_calls", worker, len(flights),
                "Upstream calls running now that identical requests share (the shared path)"),
               ("ccproxyd_shared_call_requests", worker, sum(flight.clients for flight in flights),
                "Requests here following those calls now, their first included")]
    return gauges
