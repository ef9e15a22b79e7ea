"""Client policy (routes.yaml `clients:`): which models a client key may ask for, its requests and
tokens a minute, and its spend a UTC day and month.

`Limits.admit` runs before a request is routed and raises the client's error; `Limits.settle`
runs when it has ended, with the tokens and cost it used.  Windows slide: `rpm: 60` admits at
most 60 requests in any 60 seconds.  tpm counts the request's estimated input when it is
admitted and corrects it to the real input + output when it ends.  A budget is checked on
admission against what was spent before: requests already running when it runs out finish (and
are counted), so the spend can pass the budget by what those cost.

Without Redis every process counts its own; with `--redis` the counts are the fleet's, in Redis,
changed by one Lua script per admission (shared.limits), and each process keeps counting its own
too, which is what it goes by while Redis is down.
"""

from __future__ import annotations

import calendar
import collections
import fnmatch
import time
from datetime import datetime, timezone
from typing import Callable, Protocol, runtime_checkable

from ..money import clock as wallclock
from ..config.table import ClientPolicy
from ..errors import BudgetExhausted, ClientLimited, ModelNotAllowed

WINDOW = 60.0                        # seconds, for rpm and tpm (shared.limits passes it to its Lua script)
PERIODS = (("day", "daily"), ("month", "monthly"))


def period_keys(now: float) -> dict[str, str]:
    """The UTC day and month `now` falls in, as they name spend counters."""
    t = time.gmtime(now)
    return {"day": time.strftime("%Y-%m-%d", t), "month": time.strftime("%Y-%m", t)}


def resets_at(period: str, now: float) -> str:
    """When the budget period holding `now` ends (UTC midnight, or the first of next month)."""
    t = time.gmtime(now)
    if period == "day":
        end = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0)) + 86400
    else:
        year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
        end = calendar.timegm((year, month, 1, 0, 0, 0))
    return datetime.fromtimestamp(end, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def budget_of(policy: ClientPolicy, period: str) -> float | None:
    return policy.budget_day if period == "day" else policy.budget_month


def check_model(policy: ClientPolicy, model: str) -> None:
    if policy.models and not any(fnmatch.fnmatchcase(model.lower(), glob) for glob in policy.models):
        raise ModelNotAllowed(f"client {policy.name} may not use model '{model[:100]}' "
                              f"(clients.{policy.name}.models allows {', '.join(policy.models)})")


def over_budget(policy: ClientPolicy, period: str, spent: float, now: float) -> BudgetExhausted:
    label = dict(PERIODS)[period]
    return BudgetExhausted(f"client {policy.name} has spent ${spent:.2f} of its {label} budget of "
                           f"${budget_of(policy, period):.2f} (clients.{policy.name}.budget_usd.{period}); "
                           f"it resets at {resets_at(period, now)}")


def over_limit(policy: ClientPolicy, which: str, retry_after: float) -> ClientLimited:
    limit, unit = (policy.rpm, "requests") if which == "rpm" else (policy.tpm, "tokens")
    wait = max(1.0, retry_after)
    return ClientLimited(f"client {policy.name} is over its limit of {limit} {unit} per minute "
                         f"(clients.{policy.name}.{which}); retry in {wait:.0f} s", retry_after=wait)


@runtime_checkable
class Counts(Protocol):
    """A store of clients' counts: this process's (LocalCounts) or the fleet's (shared.limits.
    RedisCounts).  Coroutines, so that a networked store fits; tests/test_backends_limits.py is the
    contract both keep."""

    async def admit(self, policy: ClientPolicy, estimate: int) -> bool | None:
        """Raise the client's error (over_budget, over_limit: budgets first, then rpm, then tpm), or
        count the request in and return True; None when the store cannot be reached (nothing
        counted: the caller decides alone).  Atomic: of two admissions for the last slot, one wins."""

    async def settle(self, policy: ClientPolicy, correction: int, cost: float) -> None:
        """An admitted request has ended: its tokens differ from the estimate by `correction`, and
        it cost `cost` USD (counted in the UTC day and month)."""

    async def usage(self, policies: list[ClientPolicy]) -> dict[str, dict] | None:
        """Each client's requests and tokens in the window, and spend in the current periods, by
        name, with its scope ("process" or "fleet"); None when the store cannot be reached."""


class LocalCounts:
    """One process's counts (a Counts): sliding windows of request times and token amounts, and
    spend per (client, period key).  Never shrinks past what the windows and current periods hold.
    No method awaits anything, so each runs whole on the event loop."""

    def __init__(self, clock: Callable[[], float] = wallclock.now) -> None:
        self.clock = clock
        self.requests: dict[str, collections.deque] = {}
        self.tokens: dict[str, collections.deque] = {}      # (time, tokens), corrections included
        self.spend: dict[tuple[str, str], float] = {}        # (client, "day:2026-12-01") -> USD

    def _window(self, queue: collections.deque, now: float) -> None:
        while queue and queue[0][0] <= now - WINDOW:
            queue.popleft()

    async def admit(self, policy: ClientPolicy, estimate: int) -> bool:
        """Raise the client's error, or count the request in (atomic: no await inside)."""
        now = self.clock()
        keys = period_keys(now)
        for period, _ in PERIODS:
            budget = budget_of(policy, period)
            spent = self.spend.get((policy.name, f"{period}:{keys[period]}"), 0.0)
            if budget is not None and spent >= budget:
                raise over_budget(policy, period, spent, now)
        requests = self.requests.setdefault(policy.name, collections.deque())
        tokens = self.tokens.setdefault(policy.name, collections.deque())
        self._window(requests, now)
        self._window(tokens, now)
        if policy.rpm is not None and len(requests) >= policy.rpm:
            raise over_limit(policy, "rpm", requests[0][0] + WINDOW - now)
        used = sum(n for _, n in tokens)
        if policy.tpm is not None and used > 0 and used + estimate > policy.tpm:
            raise over_limit(policy, "tpm", tokens[0][0] + WINDOW - now)
        self.count(policy, estimate, now)
        return True

    def count(self, policy: ClientPolicy, estimate: int, now: float) -> None:
        """Count an admitted request without checking (what Redis admitted, seen here too)."""
        self.requests.setdefault(policy.name, collections.deque()).append((now, 1))
        self.tokens.setdefault(policy.name, collections.deque()).append((now, estimate))

    async def settle(self, policy: ClientPolicy, correction: int, cost: float) -> None:
        now = self.clock()
        if correction:
            self.tokens.setdefault(policy.name, collections.deque()).append((now, correction))
        if cost:
            for period, key in period_keys(now).items():
                slot = (policy.name, f"{period}:{key}")
                self.spend[slot] = self.spend.get(slot, 0.0) + cost
            self._forget_old_periods(now)

    def _forget_old_periods(self, now: float) -> None:
        current = {f"{p}:{k}" for p, k in period_keys(now).items()}
        for slot in [s for s in self.spend if s[1] not in current]:
            del self.spend[slot]

    async def usage(self, policies: list[ClientPolicy]) -> dict[str, dict]:
        now = self.clock()
        keys = period_keys(now)
        out = {}
        for policy in policies:
            requests = self.requests.get(policy.name, collections.deque())
            tokens = self.tokens.get(policy.name, collections.deque())
            self._window(requests, now)
            self._window(tokens, now)
            out[policy.name] = {
                "requests_last_minute": len(requests), "tokens_last_minute": sum(n for _, n in tokens),
                "spent_usd": {p: round(self.spend.get((policy.name, f"{p}:{keys[p]}"), 0.0), 6) for p, _ in PERIODS},
                "scope": "process"}
        return out


class Limits:
    """Client policy enforcement: through Redis (shared.limits.RedisCounts) while it is up, else
    this process's LocalCounts, which count every admitted request either way."""

    def __init__(self, shared: Counts | None = None, clock: Callable[[], float] = wallclock.now) -> None:
        self.local = LocalCounts(clock)
        self.shared = shared
        self.clock = clock

    async def admit(self, policy: ClientPolicy, model: str, estimate: int) -> None:
        check_model(policy, model)
        if self.shared is not None:
            if await self.shared.admit(policy, estimate):   # the fleet's decision (it raises a refusal)
                self.local.count(policy, estimate, self.clock())
                return
        await self.local.admit(policy, estimate)

    async def settle(self, policy: ClientPolicy, estimate: int, tokens: int, cost: float | None) -> None:
        await self.local.settle(policy, tokens - estimate, cost or 0.0)
        if self.shared is not None:
            await self.shared.settle(policy, tokens - estimate, cost or 0.0)

    async def usage(self, clients) -> dict:
        """Use against limits, for /health: the fleet's while Redis is up, else this process's."""
        out = {}
        fleet = await self.shared.usage(list(clients.values())) if self.shared is not None and clients else None
        local = await self.local.usage(list(clients.values()))
        for name, policy in clients.items():
            use = (fleet or {}).get(name) or local[name]
            now = self.clock()
            use["limits"] = {"rpm": policy.rpm, "tpm": policy.tpm,
                             "budget_usd": {p: budget_of(policy, p) for p, _ in PERIODS}}
            use["resets_at"] = {p: resets_at(p, now) for p, _ in PERIODS}
            out[name] = use
        return out

    async def gauges(self, clients, link, worker: tuple) -> list[tuple[str, tuple, float, str]]:
        """For /metrics: Redis up or down (team mode), and each client's spend against its budgets
        (the fleet's while Redis is up; else this process's, labelled with `worker`)."""
        gauges = []
        if link is not None:
            gauges.append(("ccproxyd_redis_up", (), int(link.up), "1 while Redis (team mode) answers, 0 while it is down"))
        for name, use in (await self.usage(clients)).items():
            for period, spent in use["spent_usd"].items():
                labels = (("client", name), ("period", period), *(worker if use["scope"] == "process" else ()))
                gauges.append(("ccproxyd_client_spend_usd", labels, spent, "Client spend in the current UTC day or month"))
                budget = use["limits"]["budget_usd"][period]
                if budget is not None:
                    gauges.append(("ccproxyd_client_budget_usd", labels, budget, "Client budget for the UTC day or month"))
        return gauges
