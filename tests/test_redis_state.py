"""The shared state against a real redis-server, in one process (no daemons): a link that starts
with Redis down serves its fallbacks at once and reconnects by itself; the client-limit script
is atomic under concurrent admissions from two links (two daemons); thread claims."""

from __future__ import annotations

import asyncio
import shutil
import time

import pytest

from ccproxyd.clients import Limits
from ccproxyd.config import ClientPolicy
from ccproxyd.errors import ClientLimited
from ccproxyd.shared.limits import RedisCounts
from ccproxyd.shared.link import Link
from ccproxyd.shared.threads import RedisBackend
from ccproxyd.threads import CONTINUED, FOUND, IN_FLIGHT, MISSING

from .test_team import RedisServer

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not installed (make test installs it)")


def test_a_link_started_without_redis_serves_fallbacks_then_reconnects(tmp_path):
    server = RedisServer(tmp_path)

    async def scenario() -> None:
        link = Link(server.url, timeout=0.5)
        await link.start()
        assert not link.up and link.health()["state"] == "down"
        started = time.monotonic()
        assert await link.run(lambda r: r.ping(), "fallback") == "fallback"
        assert time.monotonic() - started < 0.05               # down: Redis is not even asked
        await asyncio.to_thread(server.start)
        for _ in range(100):
            if link.up:
                break
            await asyncio.sleep(0.05)
        assert link.up and link.outages == 1
        assert await link.run(lambda r: r.ping(), "fallback") is True
        await link.close()
    try:
        asyncio.run(scenario())
    finally:
        if server.proc is not None:
            server.kill()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.kill()


def test_the_rpm_script_admits_exactly_the_limit_from_two_daemons(redis_server):
    policy = ClientPolicy("ATOMIC_KEY", rpm=20)

    async def scenario() -> list:
        links = [Link(redis_server.url), Link(redis_server.url)]
        fleets = [Limits(RedisCounts(link)) for link in links]

        async def one(i: int):
            try:
                await fleets[i % 2].admit(policy, "claude-x", 10)
                return "ok"
            except ClientLimited as exc:
                return exc
        results = await asyncio.gather(*(one(i) for i in range(50)))
        for link in links:
            await link.close()
        return results
    results = asyncio.run(scenario())
    assert results.count("ok") == 20
    assert all(isinstance(r, ClientLimited) and 50 <= r.retry_after <= 60 for r in results if r != "ok")


def test_thread_claims_are_atomic_across_links(redis_server):
    async def scenario() -> None:
        links = [Link(redis_server.url), Link(redis_server.url)]
        a, b = (RedisBackend(link) for link in links)
        await a.put("msg_1", b'{"messages": []}', "client-1", 60)
        assert await b.claim("msg_1", "client-2") == (MISSING, None)       # another client's thread
        claims = await asyncio.gather(a.claim("msg_1", "client-1"), b.claim("msg_1", "client-1"))
        assert sorted(state for state, _ in claims) == [FOUND, IN_FLIGHT]
        assert (FOUND, b'{"messages": []}') in claims
        await b.release("msg_1", continued=False)
        assert (await a.claim("msg_1", "client-1"))[0] == FOUND          # given back: claimable again
        await a.release("msg_1", continued=True)
        assert await b.claim("msg_1", "client-1") == (CONTINUED, None)
        for link in links:
            await link.close()
    asyncio.run(scenario())
