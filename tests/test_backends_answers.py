"""The answer store's contract (state.answers.AnswerSink), one suite run against every sink
proxy.lead stores a finished answer through: this host's disk (Store), and in team mode the
fleet's Redis, alone (no --cache-dir) or with this host's disk behind it (flow.fleet.TeamStore),
with a real redis-server on a loopback port."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from ccproxyd.flow.fleet import FleetCache, TeamStore
from ccproxyd.state.answers import AnswerSink, Store
from ccproxyd.state.link import Link


pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not installed (make test installs it)")

MESSAGE = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
           "content": [{"type": "text", "text": "kept"}], "stop_reason": "end_turn", "stop_sequence": None,
           "usage": {"input_tokens": 3, "output_tokens": 1}}


class Sinks:
    """Each sink with the way to read back what it kept (the disk's get, the fleet's lookup)."""

    def __init__(self, kind: str, tmp_path, redis_url: str) -> None:
        self.kind, self.tmp_path, self.redis_url = kind, tmp_path, redis_url
        self.disk = self.link = self.fleet = None

    async def open(self) -> AnswerSink:
        if self.kind in ("disk", "fleet+disk"):
            self.disk = Store(str(self.tmp_path / "cache"), 1 << 20)
        if self.kind == "disk":
            return self.disk
        self.link = Link(self.redis_url)
        await self.link.start()
        self.fleet = FleetCache(self.link)
        return TeamStore(self.fleet, self.disk)

    async def kept(self, key: str) -> list[dict | None]:
        found = []
        if self.disk is not None:
            found.append(self.disk.get(key))
        if self.fleet is not None:
            kind, value = await self.fleet.lookup(key)
            found.append(value if kind == "hit" else None)
        return found

    async def close(self) -> None:
        if self.fleet is not None:
            await self.fleet.close()
        if self.link is not None:
            await self.link.close()
        if self.disk is not None:
            self.disk.close()


@pytest.fixture(params=["disk", "fleet", "fleet+disk"])
def sinks(request, tmp_path, redis_server):
    return Sinks(request.param, tmp_path, redis_server.url)


def put(sink: AnswerSink, key: str, message: dict, ttl: float, calls: list | None = None) -> asyncio.Future:
    """put_later, and a future that resolves at its first done(); `calls` counts every done()."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    calls = [] if calls is None else calls

    def finished() -> None:
        calls.append(1)
        loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))
    sink.put_later(key, message, ttl, finished)
    return done


def test_a_kept_answer_is_read_back_whole_and_done_runs_once(sinks):
    async def scenario():
        sink = await sinks.open()
        try:
            assert isinstance(sink, AnswerSink)
            calls: list = []
            await asyncio.wait_for(put(sink, "k-whole", MESSAGE, 60, calls), 10)
            await asyncio.sleep(0.2)                      # a second done() would have come by now
            assert len(calls) == 1
            return await sinks.kept("k-whole")
        finally:
            await sinks.close()
    found = asyncio.run(scenario())
    assert found and all(message == MESSAGE for message in found)


def test_an_answer_is_kept_only_for_its_ttl(sinks):
    async def scenario():
        sink = await sinks.open()
        try:
            await asyncio.wait_for(put(sink, "k-brief", MESSAGE, 0.3), 10)
            await asyncio.sleep(1.2)
            return await sinks.kept("k-brief")
        finally:
            await sinks.close()
    assert all(message is None for message in asyncio.run(scenario()))


def test_a_key_never_kept_is_not_found(sinks):
    async def scenario():
        await sinks.open()
        try:
            return await sinks.kept("k-never")
        finally:
            await sinks.close()
    assert all(message is None for message in asyncio.run(scenario()))


# ------------------------------------------------------------ the flight mirror

def test_a_mirrored_flight_reaches_a_follower_on_another_daemon_in_order(redis_server):
    """flow.cache.FlightMirror's one implementation, flow.fleet.Publisher: what the leader's flight
    publishes, then its end, reach a follower reading through another Redis connection (as another
    daemon would), and `followed()` says so while it follows."""
    from ccproxyd.flow.cache import Flight, FlightMirror

    async def scenario():
        links = [Link(redis_server.url), Link(redis_server.url)]
        for link in links:
            await link.start()
        leader, follower = FleetCache(links[0]), FleetCache(links[1])
        try:
            kind, lease = await leader.lookup("k-mirror")
            assert kind == "lead"
            mirror = leader.publisher("k-mirror", lease)
            assert isinstance(mirror, FlightMirror)
            copy = Flight()
            following = asyncio.ensure_future(follower.follow(copy, "k-mirror", lease, lead_here=None))
            for _ in range(100):                          # the follower has counted itself in
                if await mirror.followed():
                    break
                await asyncio.sleep(0.02)
            seen_followed = await mirror.followed()
            for piece in (b"event: a\n\n", b"event: b\n\n"):
                mirror.publish(piece)
            mirror.finish(MESSAGE, None)
            await asyncio.wait_for(following, 10)
            return seen_followed, copy.batches, copy.message
        finally:
            for fleet in (leader, follower):
                await fleet.close()
            for link in links:
                await link.close()
    seen_followed, batches, message = asyncio.run(scenario())
    assert seen_followed is True
    # the publisher may gather what came together into one write: the bytes, in order, are the contract
    assert b"".join(batches) == b"event: a\n\nevent: b\n\n" and message == MESSAGE
