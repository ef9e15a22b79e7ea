"""The connection to Redis, and whether it is usable.

Every command runs through `Link.run(op, fallback)`: bounded by a short timeout, and while Redis is
down not tried at all (the fallback comes back at once), so that an outage costs a request
nothing.  The first failure logs one warning and starts a probe that PINGs every PROBE_SECONDS
until Redis answers; then the state is `up` again, one line is logged, and the `on_up` callbacks
run (the holds re-read what the fleet has).  No retries inside redis-py: a lost command is the
caller's fallback, never a second wait.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Awaitable, Callable, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeout

from .outage import Outage
from ..config.settings import Settings

log = logging.getLogger("ccproxyd.redis")
T = TypeVar("T")

CONNECT_TIMEOUT = 0.5      # seconds to open a connection
PROBE_SECONDS = 0.5        # between PINGs while Redis is down
BLOCK_SECONDS = 1.0        # longest blocking read (XREAD, pub/sub) on the second connection
PREFIX = "ccproxyd:"       # every key ccproxyd writes starts with it
OUTAGE = (RedisConnectionError, RedisTimeout, OSError, asyncio.TimeoutError)


def _client(url: str, password: str | None, timeout: float) -> aioredis.Redis:
    options = {"socket_timeout": timeout, "socket_connect_timeout": CONNECT_TIMEOUT, "retry": Retry(NoBackoff(), 0),
               "retry_on_timeout": False, "health_check_interval": 0}
    client = aioredis.Redis.from_url(url, **options)
    if password and not client.connection_pool.connection_kwargs.get("password"):
        client.connection_pool.connection_kwargs["password"] = password
    return client


def cancelled() -> None:
    """Raise CancelledError if this task is being cancelled: a cancellation that reached a Redis
    read may come out as a connection error, and must not be taken for an outage (a loop that
    treats it so would never end)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class Link:
    def __init__(self, url: str, password: str | None = None, timeout: float = Settings.redis_timeout) -> None:
        self.url = url
        self.timeout = timeout              # seconds a command may take; past it Redis counts as down
        self.client = _client(url, password, timeout)
        self.blocking = _client(url, password, BLOCK_SECONDS + timeout)   # XREAD BLOCK, SUBSCRIBE
        self.outage = Outage(log)
        self.changed_at = time.time()
        self.on_up: list[Callable[[], Awaitable[None]]] = []
        self._probe: asyncio.Task | None = None
        self._closed = False

    @property
    def up(self) -> bool:
        return not self.outage.down

    @property
    def outages(self) -> int:
        return self.outage.count

    async def start(self) -> None:
        """One PING at start: a daemon started while Redis is down serves at once, state `down`."""
        await self.run(lambda r: r.ping(), None)

    def where(self) -> str:
        """The URL without its password, for log lines and /health."""
        kwargs = self.client.connection_pool.connection_kwargs
        scheme = "rediss" if "ssl" in str(self.client.connection_pool.connection_class).lower() else "redis"
        if "path" in kwargs:
            return f"unix:{kwargs['path']}"
        return f"{scheme}://{kwargs.get('host', '?')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"

    async def run(self, op: Callable[[aioredis.Redis], Awaitable[T]], fallback: T,
                  client: aioredis.Redis | None = None, timeout: float | None = None) -> T:
        """`op(client)`, or `fallback` when Redis is down or fails now (which marks it down)."""
        if not self.up or self._closed:
            return fallback
        try:
            async with asyncio.timeout(timeout or self.timeout + CONNECT_TIMEOUT):
                return await op(client or self.client)
        except OUTAGE as exc:
            cancelled()
            self.down(exc)
            return fallback
        except RedisError as exc:               # a command Redis refused: not an outage
            cancelled()
            log.warning("redis: %s: %s", type(exc).__name__, exc)
            return fallback

    def down(self, exc: BaseException) -> None:
        if not self.up or self._closed:
            return
        self.changed_at = time.time()
        self.outage.failed("redis %s is unreachable (%s: %s); serving without it: cache bypassed, limits per "
                           "daemon, threads and holds local until it is back", self.where(), type(exc).__name__,
                           exc or "timeout")
        self._probe = asyncio.ensure_future(self._reconnect())

    async def _reconnect(self) -> None:
        """Drop every pooled connection (each is stale after a Redis restart, and would make the
        first commands after it fail once more), then PING until Redis answers."""
        for client in (self.client, self.blocking):
            try:
                await client.connection_pool.disconnect()
            except Exception:
                pass
        while not self._closed:
            await asyncio.sleep(PROBE_SECONDS)
            try:
                async with asyncio.timeout(self.timeout + CONNECT_TIMEOUT):
                    await self.client.ping()
            except (*OUTAGE, RedisError):
                cancelled()
                continue
            self.changed_at = time.time()
            self.outage.worked("redis %s is back after %.1f s; sharing state again", self.where(), self.outage.seconds)
            for callback in self.on_up:
                try:
                    await callback()
                except Exception:
                    log.exception("redis: a reconnect callback failed")
            return

    def health(self) -> dict:
        return {"state": "up" if self.up else "down", "url": self.where(),
                "changed_at": datetime.fromtimestamp(self.changed_at, timezone.utc).isoformat(timespec="seconds"),
                "outages": self.outages}

    async def close(self) -> None:
        self._closed = True
        if self._probe is not None:
            self._probe.cancel()
        for client in (self.client, self.blocking):
            try:
                await client.aclose()
            except Exception:
                pass
