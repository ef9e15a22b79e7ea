"""The thread store's contract (threads.Backend), one suite run against every backend: in memory,
on disk (diskcache) and in Redis (a real redis-server).  What a handler relies on: a point is
claimed by its owner only, once at a time; a claim given back can be claimed again; a continued
point says so, to its owner only; points expire with their TTL; a put replaces.  The claim rule
itself (threads.claimed, threads.released), which every backend applies, is table-tested first,
on its own clock: a claim's lapse after CLAIM_SECONDS is tested there, not by waiting 15 minutes."""

from __future__ import annotations

import asyncio

import pytest

from ccproxyd.state import thread_store
from ccproxyd.state.link import Link
from ccproxyd.state.threads import KEY, RedisBackend
from ccproxyd.state.thread_store import CLAIM_SECONDS, CONTINUED, FOUND, IN_FLIGHT, MISSING, Point, claimed, released

from .support import Clock

# ------------------------------------------------------------ the rule, pure

NOW = 5000.0
RULE = [
    # (point, has_record, owner asking) -> verdict, claimed_until written (None: nothing written)
    (None, False, "a", MISSING, None),
    (Point("a"), True, "b", MISSING, None),                       # another owner's: not said whose
    (Point(None), True, "a", MISSING, None),                      # an owner's point is not the anonymous one's
    (Point("a"), True, None, MISSING, None),
    (Point(None), True, None, FOUND, NOW + 900),
    (Point("a"), True, "a", FOUND, NOW + 900),
    (Point("a", claimed_until=NOW + 1), True, "a", IN_FLIGHT, None),
    (Point("a", claimed_until=NOW), True, "a", FOUND, NOW + 900),  # a claim lapses at its end
    (Point("a", claimed_until=NOW - 1), True, "a", FOUND, NOW + 900),
    (Point("a", spent=True), False, "a", CONTINUED, None),
    (Point("a", claimed_until=NOW + 1, spent=True), False, "a", CONTINUED, None),   # continued beats in flight
    (Point("a", spent=True), False, "b", MISSING, None),          # a continued point is not another's either
    (Point("a"), False, "a", MISSING, None),                      # the record was evicted
    (Point("a", claimed_until=NOW + 1), False, "a", IN_FLIGHT, None),
]


@pytest.mark.parametrize("point, has_record, owner, verdict, until", RULE)
def test_the_claim_rule(point, has_record, owner, verdict, until):
    assert CLAIM_SECONDS == 900
    got, written = claimed(point, has_record, owner, NOW)
    assert got == verdict
    assert (written.claimed_until if written else None) == until
    if written is not None:
        assert (written.owner, written.spent) == (point.owner, False)


@pytest.mark.parametrize("point, continued, expected", [
    (Point("a", claimed_until=NOW + 900), False, Point("a")),
    (Point("a", claimed_until=NOW + 900), True, Point("a", spent=True)),
    (Point("a", spent=True), False, Point("a", spent=True)),      # giving back never un-continues
])
def test_the_release_rule(point, continued, expected):
    assert released(point, continued) == expected


# ------------------------------------------------------------ the contract, on every backend

class Harness:
    """Builds one backend inside the test's event loop; `lapse` lets a TTL pass (the memory backend
    on its injected clock; disk and Redis keep real time, so a short TTL is waited out)."""

    def __init__(self, kind: str, tmp_path, redis_url: str | None) -> None:
        self.kind, self.tmp_path, self.redis_url = kind, tmp_path, redis_url
        self.clock = Clock()

    def run(self, scenario) -> None:
        async def main() -> None:
            link = None
            if self.kind == "memory":
                store = thread_store.MemoryBackend(1 << 22, self.clock)
            elif self.kind == "disk":
                store = thread_store.DiskBackend(str(self.tmp_path / "threads"), 1 << 22)
            else:
                link = Link(self.redis_url)
                store = RedisBackend(link)
            try:
                await scenario(store)
            finally:
                store.close()
                if link is not None:
                    await link.close()
        asyncio.run(main())

    async def lapse(self, seconds: float) -> None:
        if self.kind == "memory":
            self.clock.now += seconds
        else:
            await asyncio.sleep(seconds)


@pytest.fixture(params=["memory", "disk", "redis"])
def harness(request, tmp_path):
    url = None
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        server.cli("FLUSHALL")
        url = server.url
    return Harness(request.param, tmp_path, url)


RECORD = b'{"messages": [' + b'"x",' * 30_000 + b'"end"]}'     # past diskcache's inline threshold


def test_a_point_is_its_owners_and_comes_back_whole(harness):
    async def scenario(store) -> None:
        await store.put("msg_a", RECORD, "owner-1", 60)
        await store.put("msg_anon", b"{}", None, 60)
        assert await store.claim("msg_a", "owner-2") == (MISSING, None)
        assert await store.claim("msg_a", None) == (MISSING, None)
        assert await store.claim("msg_anon", "owner-1") == (MISSING, None)
        assert await store.claim("msg_unknown", "owner-1") == (MISSING, None)
        assert await store.claim("msg_a", "owner-1") == (FOUND, RECORD)
        assert await store.claim("msg_anon", None) == (FOUND, b"{}")
    harness.run(scenario)


def test_a_claimed_point_is_in_flight_until_given_back(harness):
    async def scenario(store) -> None:
        await store.put("msg_a", b"rec", "o", 60)
        assert await store.claim("msg_a", "o") == (FOUND, b"rec")
        assert await store.claim("msg_a", "o") == (IN_FLIGHT, None)
        assert await store.claim("msg_a", "p") == (MISSING, None)      # still not another owner's
        await store.release("msg_a", continued=False)                 # the turn failed: retry allowed
        assert await store.claim("msg_a", "o") == (FOUND, b"rec")
    harness.run(scenario)


def test_of_concurrent_claims_one_is_found(harness):
    async def scenario(store) -> None:
        await store.put("msg_a", b"rec", "o", 60)
        claims = await asyncio.gather(*(store.claim("msg_a", "o") for _ in range(6)))
        assert sorted(state for state, _ in claims) == [FOUND] + [IN_FLIGHT] * 5
        assert (FOUND, b"rec") in claims
    harness.run(scenario)


def test_a_continued_point_says_so_to_its_owner_only(harness):
    async def scenario(store) -> None:
        await store.put("msg_a", b"rec", "o", 60)
        assert (await store.claim("msg_a", "o"))[0] == FOUND
        await store.release("msg_a", continued=True)
        assert await store.claim("msg_a", "o") == (CONTINUED, None)
        assert await store.claim("msg_a", "o") == (CONTINUED, None)    # for good, not once
        assert await store.claim("msg_a", "p") == (MISSING, None)
        await store.release("msg_a", continued=False)                 # a late give-back changes nothing
        assert await store.claim("msg_a", "o") == (CONTINUED, None)
    harness.run(scenario)


def test_giving_back_an_unknown_point_does_nothing(harness):
    async def scenario(store) -> None:
        await store.release("msg_none", continued=False)
        await store.release("msg_none", continued=True)
        assert await store.claim("msg_none", None) == (MISSING, None)
        await store.put("msg_none", b"rec", None, 60)                  # a tombstone was not left either
        assert await store.claim("msg_none", None) == (FOUND, b"rec")
    harness.run(scenario)


def test_a_put_replaces_the_point(harness):
    async def scenario(store) -> None:
        await store.put("msg_a", b"old", "o", 60)
        assert (await store.claim("msg_a", "o"))[0] == FOUND
        await store.release("msg_a", continued=True)
        await store.put("msg_a", b"new", "p", 60)
        assert await store.claim("msg_a", "o") == (MISSING, None)
        assert await store.claim("msg_a", "p") == (FOUND, b"new")
    harness.run(scenario)


def test_points_expire_with_their_ttl(harness):
    async def scenario(store) -> None:
        await store.put("msg_short", b"rec", "o", 0.3)
        await store.put("msg_long", b"rec", "o", 600)
        await store.put("msg_spent", b"rec", "o", 0.3)
        assert (await store.claim("msg_spent", "o"))[0] == FOUND
        await store.release("msg_spent", continued=True)
        await harness.lapse(0.5)
        assert await store.claim("msg_short", "o") == (MISSING, None)
        assert await store.claim("msg_spent", "o") == (MISSING, None)   # the tombstone goes too
        assert await store.claim("msg_long", "o") == (FOUND, b"rec")
    harness.run(scenario)


def test_stats_name_the_backend(harness):
    async def scenario(store) -> None:
        assert store.stats()["backend"] == harness.kind
    harness.run(scenario)


def test_redis_decides_again_when_another_daemon_changed_the_point(redis_server):
    """Redis's atomic step is optimistic: a point changed between the read and the write (here by
    redis-cli, standing for another daemon's claim) is read and decided again, never overwritten."""
    async def scenario() -> None:
        link = Link(redis_server.url)
        store = RedisBackend(link)
        await store.put("msg_race", b"rec", "o", 60)
        seen = []

        def change(point, record, now):
            seen.append(point)
            if len(seen) == 1:
                redis_server.cli("HSET", KEY + "msg_race", "claimed_until", "12345.5")
                return "first", Point(point.owner, claimed_until=1.0)
            return "second", None
        assert await store.transact("msg_race", change, "down") == "second"
        assert [p.claimed_until for p in seen] == [0.0, 12345.5]
        assert redis_server.cli("HGET", KEY + "msg_race", "claimed_until") == "12345.5"
        await link.close()
    asyncio.run(scenario())
