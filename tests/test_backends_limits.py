"""The client counters' contract (clients.Counts), one suite run against this process's counts
(clients.LocalCounts) and the fleet's (shared.limits.RedisCounts on a real redis-server).

Both are driven by one injected clock (support.Clock), which names the UTC day and month a spend
counts in.  Redis's windows run on Redis's own clock (TIME), which a test cannot set; so letting
time pass there moves what Redis holds back by as much instead: the rpm window's admission times
exactly, the tpm window's per-second buckets by whole seconds, rounded up.  Where the two
legitimately differ, the test says so: tpm's retry-after (Redis counts tokens in whole seconds, so
it may ask for up to one second more), the scope /health shows ("process" or "fleet"), and an
unreachable store (only Redis can be one: it answers None and counts nothing)."""

from __future__ import annotations

import asyncio
import calendar
import math

import pytest

from ccproxyd.state.clients import WINDOW, Counts, LocalCounts
from ccproxyd.config.table import ClientPolicy
from ccproxyd.errors import BudgetExhausted, ClientLimited
from ccproxyd.state.limits import RedisCounts, _key
from ccproxyd.state.link import Link

from .conftest import free_port
from .support import Clock

NOON = calendar.timegm((2026, 12, 31, 12, 0, 0))     # a day and a month end 12 hours later


class Harness:
    def __init__(self, kind: str, redis_url: str | None) -> None:
        self.kind, self.redis_url = kind, redis_url
        self.clock = Clock(NOON)
        self.link: Link | None = None

    def run(self, scenario) -> None:
        async def main() -> None:
            if self.kind == "local":
                counts = LocalCounts(self.clock)
            else:
                self.link = Link(self.redis_url)
                counts = RedisCounts(self.link, self.clock)
            assert isinstance(counts, Counts)
            try:
                await scenario(counts)
            finally:
                if self.link is not None:
                    await self.link.close()
        asyncio.run(main())

    async def later(self, seconds: float, *names: str) -> None:
        """`seconds` pass for the clients `names`."""
        self.clock.now += seconds
        if self.kind == "local":
            return
        r = self.link.client
        for name in names:
            admitted = await r.zrange(_key("rpm", name), 0, -1, withscores=True)
            if admitted:
                await r.zadd(_key("rpm", name), {member: score - seconds for member, score in admitted})
            buckets = await r.hgetall(_key("tpm", name))
            if buckets:
                await r.delete(_key("tpm", name))
                shift = math.ceil(seconds)
                await r.hset(_key("tpm", name), mapping={int(s) - shift: int(n) for s, n in buckets.items()})


@pytest.fixture(params=["local", "redis"])
def harness(request):
    url = None
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        server.cli("FLUSHALL")
        url = server.url
    return Harness(request.param, url)


def test_the_window_is_a_minute():
    assert WINDOW == 60


def test_rpm_slides_over_the_window(harness):
    policy = ClientPolicy("K", rpm=3)

    async def scenario(counts) -> None:
        for _ in range(3):                                        # at +0, +10, +20
            assert await counts.admit(policy, 10) is True
            await harness.later(10, "K")
        await harness.later(29, "K")                              # +59
        with pytest.raises(ClientLimited) as refused:
            await counts.admit(policy, 10)
        assert refused.value.retry_after == 1.0                   # the first leaves the window at +60
        assert "over its limit of 3 requests per minute (clients.K.rpm); retry in 1 s" in refused.value.message
        assert (await counts.usage([policy]))["K"]["requests_last_minute"] == 3    # a refusal is not counted
        await harness.later(1.5, "K")                             # +60.5
        assert await counts.admit(policy, 10) is True             # one slot free again, not three
        with pytest.raises(ClientLimited):
            await counts.admit(policy, 10)
    harness.run(scenario)


def test_tpm_counts_the_estimate_then_what_was_used(harness):
    policy = ClientPolicy("K", tpm=1000)

    async def scenario(counts) -> None:
        assert await counts.admit(policy, 5000) is True           # alone in its window: a big request passes
        await counts.settle(policy, 600 - 5000, 0.0)              # it used 600
        assert await counts.admit(policy, 300) is True
        assert (await counts.usage([policy]))["K"]["tokens_last_minute"] == 900
        await harness.later(30, "K")
        with pytest.raises(ClientLimited) as refused:
            await counts.admit(policy, 200)                       # 600 + 300 + 200 > 1000
        assert "over its limit of 1000 tokens per minute (clients.K.tpm)" in refused.value.message
        # the tokens leave the window 30 s from now; Redis's per-second buckets may say up to 1 s more
        if harness.kind == "local":
            assert refused.value.retry_after == 30.0
        else:
            assert 29.0 <= refused.value.retry_after <= 31.0
        await harness.later(31, "K")                              # all of them have left the window
        assert (await counts.usage([policy]))["K"]["tokens_last_minute"] == 0
        assert await counts.admit(policy, 900) is True
    harness.run(scenario)


def test_budgets_are_checked_day_first_and_reset_with_their_period(harness):
    policy = ClientPolicy("K", budget_day=1.0, budget_month=1.5)

    async def scenario(counts) -> None:
        assert await counts.admit(policy, 1) is True
        await counts.settle(policy, 0, 1.25)
        with pytest.raises(BudgetExhausted) as day:
            await counts.admit(policy, 1)
        assert day.value.message == ("client K has spent $1.25 of its daily budget of $1.00 "
                                     "(clients.K.budget_usd.day); it resets at 2027-01-01T00:00:00Z")
        await harness.later(86400)                               # the next day, and month: both reset
        assert await counts.admit(policy, 1) is True
        await counts.settle(policy, 0, 0.5)
        assert await counts.admit(policy, 1) is True
        await counts.settle(policy, 0, 0.25)                     # 0.75 today: under both
        assert await counts.admit(policy, 1) is True
        await counts.settle(policy, 0, 0.85)                     # 1.60: over both, the day named
        with pytest.raises(BudgetExhausted) as both:
            await counts.admit(policy, 1)
        assert "$1.60 of its daily budget" in both.value.message
    harness.run(scenario)


def test_the_month_budget_outlives_the_day(harness):
    policy = ClientPolicy("M", budget_month=2.0)
    harness.clock.now = NOON - 5 * 86400

    async def scenario(counts) -> None:
        await counts.settle(policy, 0, 1.5)                      # on 2026-12-26
        await harness.later(5 * 86400 - 3600)                    # 2026-12-31 11:00: another day, same month
        assert await counts.admit(policy, 1) is True
        await counts.settle(policy, 0, 0.75)
        with pytest.raises(BudgetExhausted) as month:
            await counts.admit(policy, 1)
        assert month.value.message == ("client M has spent $2.25 of its monthly budget of $2.00 "
                                       "(clients.M.budget_usd.month); it resets at 2027-01-01T00:00:00Z")
    harness.run(scenario)


def test_usage_names_each_client_and_its_scope(harness):
    a, b = ClientPolicy("A", rpm=100, tpm=10_000), ClientPolicy("B")

    async def scenario(counts) -> None:
        for estimate in (100, 200):
            await counts.admit(a, estimate)
        await counts.settle(a, 50, 0.125)
        await counts.admit(b, 7)
        use = await counts.usage([a, b])
        assert set(use) == {"A", "B"}
        # this process's counts or the fleet's: the only part of the answer that differs
        assert {name: u.pop("scope") for name, u in use.items()} == dict.fromkeys(
            "AB", "process" if harness.kind == "local" else "fleet")
        assert use["A"] == {"requests_last_minute": 2, "tokens_last_minute": 350,
                            "spent_usd": {"day": 0.125, "month": 0.125}}
        # B has no rpm or tpm: Redis keeps no window for it (nothing to enforce), a process does
        assert use["B"]["spent_usd"] == {"day": 0.0, "month": 0.0}
        assert use["B"]["requests_last_minute"] == (1 if harness.kind == "local" else 0)
    harness.run(scenario)


def test_without_limits_everything_is_admitted(harness):
    policy = ClientPolicy("FREE")

    async def scenario(counts) -> None:
        assert [await counts.admit(policy, 10**6) for _ in range(200)] == [True] * 200
    harness.run(scenario)


def test_an_unreachable_store_decides_nothing():
    """Only Redis can be unreachable: its counts answer None (the caller, clients.Limits, then
    decides on this process's counts) and count nothing."""
    policy = ClientPolicy("K", rpm=1)

    async def scenario() -> None:
        link = Link(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
        counts = RedisCounts(link, Clock(NOON))
        assert await counts.admit(policy, 10) is None
        assert await counts.admit(policy, 10) is None             # rpm 1, but nothing was counted
        await counts.settle(policy, 10, 1.0)
        assert await counts.usage([policy]) is None
        await link.close()
    asyncio.run(scenario())
