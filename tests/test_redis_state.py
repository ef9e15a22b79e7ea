"""The shared state against a real redis-server, in one process (no daemons): a link that starts
with Redis down serves its fallbacks at once and reconnects by itself; the client-limit script
is atomic under concurrent admissions from two links (two daemons); thread claims; rediss:// with a
password from the credentials directory."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time

import pytest

from ccproxyd.state.clients import Limits
from ccproxyd.config.table import ClientPolicy
from ccproxyd.errors import ClientLimited
from ccproxyd.state.limits import RedisCounts
from ccproxyd.state.link import Link
from ccproxyd.state.threads import RedisBackend
from ccproxyd.state.thread_store import CONTINUED, FOUND, IN_FLIGHT, MISSING

from .conftest import free_port
from .support import RedisServer

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


def test_rediss_with_the_password_from_the_credentials_directory(tmp_path, certificates, monkeypatch):
    """TLS to Redis (redis-server's own --tls-port, a CA made for the test) and `requirepass`, the
    password read from $CREDENTIALS_DIRECTORY/CCPROXYD_REDIS_PASSWORD; never shown in /health."""
    from types import SimpleNamespace

    from ccproxyd.server import team as shared
    from ccproxyd.upstream.resilience import Guards

    cert, key = certificates.cert_file, certificates.key_file
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
                               "--tls-key-file", str(key), "--tls-ca-cert-file", str(certificates.ca_file),
                               "--tls-auth-clients", "no", "--requirepass", "pw-from-credentials", "--save", "",
                               "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "CCPROXYD_REDIS_PASSWORD").write_text("pw-from-credentials\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    monkeypatch.delenv("CCPROXYD_REDIS_PASSWORD", raising=False)

    async def scenario() -> None:
        for _ in range(100):                                       # until the server listens
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        ctx = SimpleNamespace(guards=Guards())
        await shared.attach(ctx, f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={certificates.ca_file}", 1.0, cache=True)
        try:
            assert ctx.link.up, ctx.link.health()
            assert await ctx.link.run(lambda r: r.set("ccproxyd:probe", "1"), None) is True
            assert ctx.link.health()["url"] == f"rediss://127.0.0.1:{port}/0"
        finally:
            await shared.detach(ctx)
    try:
        asyncio.run(scenario())
    finally:
        server.kill()
        server.wait(5)
