"""create_app(settings) -> Sanic.  Listeners open and close long-lived resources."""

from __future__ import annotations

import asyncio
import logging

from sanic import Sanic

from . import config, handlers, tokens
from .settings import Settings
from .upstream import Upstreams

log = logging.getLogger("ccproxyd")


def create_app(settings: Settings, name: str = "ccproxyd") -> Sanic:
    app = Sanic(name)
    app.config.REQUEST_MAX_SIZE = settings.max_body_bytes
    app.config.RESPONSE_TIMEOUT = 3600
    app.config.REQUEST_TIMEOUT = 120
    app.config.KEEP_ALIVE_TIMEOUT = 75
    app.config.PING_INTERVAL = settings.ping_interval
    app.config.MOTD = False
    app.config.ACCESS_LOG = False
    app.ctx.settings = settings
    handlers.register(app)

    @app.before_server_start
    async def open_resources(app: Sanic) -> None:
        app.ctx.table = config.load_file(settings.routes)
        for warning in app.ctx.table.warnings:
            log.warning("%s", warning)
        app.ctx.upstreams = Upstreams()
        # Load the tokenizer off the event loop so the first count_tokens does not stall others.
        app.ctx.tokenizer = asyncio.get_running_loop().run_in_executor(None, tokens.encoding)

    @app.after_server_stop
    async def close_resources(app: Sanic) -> None:
        await app.ctx.upstreams.close()

    return app
