"""Team mode: attaching what a fleet of daemons shares through Redis (`--redis URL`) to the app.

Every piece is an optimisation or a fleet-wide view of something each daemon also keeps itself;
none may fail a request.  `link.Link` owns the connection and its up/down state; the others use
it through `Link.run`, which returns a fallback at once while Redis is down.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from ..config import credentials
from ..observe import redact

PASSWORD_VARIABLE = "CCPROXYD_REDIS_PASSWORD"   # or a credential file of that name


async def attach(ctx, url: str, timeout: float, cache: bool) -> None:
    """Connect and give `ctx` the shared versions: fleet cache (unless the response cache is off,
    --no-cache), holds, limits, thread backend."""
    from ..flow.fleet import FleetCache
    from ..state.clients import Limits
    from ..state.holds import Holds
    from ..state.limits import RedisCounts
    from ..state.link import Link
    from ..state.threads import RedisBackend

    redact.register(urlsplit(url).password)
    link = ctx.link = Link(url, credentials.lookup(PASSWORD_VARIABLE, os.environ), timeout)
    await link.start()
    ctx.fleet = FleetCache(link) if cache else None
    ctx.holds = Holds(link, ctx.guards)
    ctx.holds.start()
    ctx.limits = Limits(RedisCounts(link))
    ctx.thread_backend = RedisBackend(link)


async def detach(ctx) -> None:
    if getattr(ctx, "link", None) is None:
        return
    await ctx.holds.close()
    if ctx.fleet is not None:
        await ctx.fleet.close()
    await ctx.link.close()
