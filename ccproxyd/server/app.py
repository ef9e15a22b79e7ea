"""create_app(settings) -> Sanic.  Listeners open and close long-lived resources."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

from sanic import Sanic

from ..config import table as config
from . import connections, handlers, notify, status, ui
from ..observe import access as observe
from . import team
from ..flow import cuts, proxy, threads
from ..state import thread_store
from ..state.answers import Store
from ..state.clients import Limits
from .context import Context
from ..flow.flights import Flights
from ..state.ledger import Ledger
from ..config.reload import Reloader
from ..upstream.resilience import Guards
from ..config.settings import Settings
from ..flow.stopping import drain
from ..upstream.pool import Upstreams

log = logging.getLogger("ccproxyd")
REQUEST_TIMEOUT = 60         # seconds a client may go silent while sending its request
DRAIN_MARGIN = 3.0           # seconds past the drain deadline for the last error events to be sent
TELEMETRY_FLUSH = 5.0        # seconds the last OpenTelemetry export may hold up the exit


def create_app(settings: Settings, name: str = "ccproxyd") -> Sanic:
    observe.setup_logging(settings.log_level, settings.log_format)
    # in each worker: the connection cap is a class setting, which does not cross processes
    app = Sanic(name, ctx=Context(settings, connections.configure()))
    observe.scrub_handlers()                # Sanic's handlers exist now
    app.config.REQUEST_MAX_SIZE = settings.max_body_bytes
    app.config.RESPONSE_TIMEOUT = 3600
    app.config.REQUEST_TIMEOUT = REQUEST_TIMEOUT
    app.config.KEEP_ALIVE_TIMEOUT = 75
    app.config.PING_INTERVAL = settings.ping_interval
    app.config.MOTD = False
    # Sanic closes the listener, then waits this long for open connections; drain (stopping.py) ends
    # what still runs at drain_timeout, and the margin lets those error events reach the clients.
    app.config.GRACEFUL_SHUTDOWN_TIMEOUT = settings.drain_timeout + DRAIN_MARGIN
    app.config.ACCESS_LOG = False
    handlers.register(app)
    ui.register(app)

    @app.before_server_start
    async def open_resources(app: Sanic) -> None:
        loop = asyncio.get_running_loop()
        app.ctx.table = await loop.run_in_executor(None, config.load_file, settings.routes)
        app.ctx.upstreams = Upstreams(lambda: app.ctx.table.provider_keys)
        app.ctx.guards = Guards()
        app.ctx.store = (await loop.run_in_executor(None, Store, settings.cache_dir, settings.cache_size)
                         if settings.cache_dir else None)
        app.ctx.ledger = (await loop.run_in_executor(None, Ledger, settings.ledger_dir, settings.ledger_days)
                          if settings.ledger_dir else None)
        if app.ctx.ledger is not None:
            observe.SINKS.append(app.ctx.ledger.record)
        app.ctx.limits = Limits()
        if settings.redis_url:                   # team mode: shared cache, holds, limits, threads
            await team.attach(app.ctx, settings.redis_url, settings.redis_timeout, cache=bool(settings.cache_dir))
        if settings.thread_ttl > 0:
            backend = app.ctx.thread_backend or await loop.run_in_executor(None, thread_store.backend_for, settings)
            app.ctx.threads = threads.Threads(backend, settings.thread_ttl, settings.thread_store_size // 8)
        else:
            app.ctx.threads = None
        app.ctx.stopping = False
        app.ctx.background = set()
        app.ctx.flights = Flights(app.ctx.upstreams, app.ctx.guards, app.ctx.store, app.ctx.fleet, app.ctx.background,
                                  settings.orphan_grace, settings.ping_interval)
        app.ctx.reloader = Reloader(app.ctx, settings.routes)
        app.ctx.stop_watch = asyncio.Event()
        app.ctx.watch_task = asyncio.create_task(app.ctx.reloader.watch(app.ctx.stop_watch))
        try:
            loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(sighup(app)))
        except (NotImplementedError, RuntimeError, ValueError):
            log.warning("SIGHUP reload is not available in this process")
        if settings.metrics_dir:                 # the manager forwards SIGHUP to workers with a snapshot
            write_snapshot(app, settings.metrics_dir)
        if observe.telemetry_wanted():          # OpenTelemetry: imported only when asked for
            from ..observe import otel
            observe.telemetry = otel.Telemetry()
            observe.telemetry.table = lambda: app.ctx.table

    @app.after_server_start
    async def ready(app: Sanic) -> None:
        log.info("worker %d serving http://%s:%d, at most %d client connections", os.getpid(),
                 settings.host if ":" not in settings.host else f"[{settings.host}]", settings.port, app.ctx.cap)
        notify.notify(f"READY=1\nSTATUS=serving routes version {app.ctx.table.version}")
        app.ctx.snapshots = (asyncio.create_task(write_snapshots(app, settings.metrics_dir))
                             if settings.metrics_dir else None)
        interval = notify.watchdog_interval()
        app.ctx.watchdog = asyncio.create_task(watchdog(interval)) if interval else None

    @app.before_server_stop
    async def stopping(app: Sanic) -> None:
        """Returns at once, so that Sanic closes the listener now: new connections are refused
        (a load balancer or the client's retry goes elsewhere) while running answers drain."""
        notify.notify("STOPPING=1")
        app.ctx.stopping = True
        if app.ctx.watchdog is not None:
            app.ctx.watchdog.cancel()
        app.ctx.drain = asyncio.create_task(drain(settings.drain_timeout))
        if app.ctx.snapshots is not None:
            app.ctx.snapshots.cancel()
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(settings.metrics_dir, f"{os.getpid()}.json"))

    @app.after_server_stop
    async def close_resources(app: Sanic) -> None:
        app.ctx.drain.cancel()
        app.ctx.stop_watch.set()
        try:
            await asyncio.wait_for(app.ctx.watch_task, 2)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            pass
        # upstream calls that still run for the cache (their clients are gone): end them first,
        # so that none finishes after the store has closed
        leads = list(app.ctx.background)
        for task in leads:
            task.cancel()
        if leads:
            await asyncio.wait(leads, timeout=5)
        await app.ctx.upstreams.close()
        if app.ctx.store is not None:
            app.ctx.store.close()
        if cuts.CUTS:                           # cut calls still being counted: their lines and rows
            await asyncio.wait(list(cuts.CUTS), timeout=5)
        if app.ctx.ledger is not None:          # after the leads: their rows are queued by now
            observe.SINKS.remove(app.ctx.ledger.record)
            await asyncio.get_running_loop().run_in_executor(None, app.ctx.ledger.close)
        if app.ctx.threads is not None:
            app.ctx.threads.backend.close()
        if observe.telemetry is not None:       # the last spans and metric points leave now
            telemetry, observe.telemetry = observe.telemetry, None
            await telemetry.stop(TELEMETRY_FLUSH)
        await team.detach(app.ctx)

    return app


async def sighup(app: Sanic) -> None:
    notify.reloading()
    if not await app.ctx.reloader.reload_settled("SIGHUP"):
        log.info("SIGHUP: worker %d still serving routing table version %s", os.getpid(), app.ctx.table.version)
    notify.notify(f"READY=1\nSTATUS=serving routes version {app.ctx.table.version}")


def write_snapshot(app: Sanic, directory: str) -> None:
    """This worker's metrics where the others can sum them (atomic rename)."""
    _write_file(directory, observe.METRICS.snapshot(status.worker_gauges(app.ctx)))


def _write_file(directory: str, data: bytes) -> None:
    path = os.path.join(directory, f"{os.getpid()}.json")
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)


async def write_snapshots(app: Sanic, directory: str) -> None:
    """Every second: the counters are read on the event loop, the file is written off it."""
    while True:
        await asyncio.sleep(1.0)
        data = observe.METRICS.snapshot(status.worker_gauges(app.ctx))
        await asyncio.to_thread(_write_file, directory, data)


async def watchdog(interval: float) -> None:
    while True:
        notify.notify("WATCHDOG=1")
        await asyncio.sleep(interval)
