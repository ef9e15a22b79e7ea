"""The dashboard at /ui: three static files and the JSON they draw (GET /ui/data)."""

from __future__ import annotations

import asyncio
from importlib import resources

from sanic import Request, Sanic
from sanic.response import json as json_response, raw

from . import dashboard, status
from ..observe import access as observe
from ..errors import NotFound

TYPES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
         "style.css": "text/css; charset=utf-8"}
FILES = {name: resources.files("ccproxyd").joinpath("data/ui", name).read_bytes() for name in TYPES}
# The page runs only its own script and talks only to this daemon.
HEADERS = {"content-security-policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
           "x-content-type-options": "nosniff", "cache-control": "no-cache"}


async def page(request: Request, name: str = "index.html"):
    if name not in FILES:
        raise NotFound(f"GET {request.path} is not an endpoint of this API")
    return raw(FILES[name], content_type=TYPES[name], headers=HEADERS)


async def data(request: Request):
    ctx = request.app.ctx
    snapshots = await asyncio.to_thread(status.read_snapshots, ctx) if ctx.settings.metrics_dir else []
    merged = observe.METRICS.merged(snapshots) if ctx.settings.metrics_dir else observe.METRICS
    return json_response(dashboard.summary(merged, ctx.table, ctx.reloader.state, ctx.guards.snapshot(),
                                           getattr(ctx, "ledger", None) is not None))


def register(app: Sanic) -> None:
    app.add_route(page, "/ui", methods=["GET"], name="ui_index")
    app.add_route(data, "/ui/data", methods=["GET"], name="ui_data")
    app.add_route(page, "/ui/<name:str>", methods=["GET"], name="ui_file")
