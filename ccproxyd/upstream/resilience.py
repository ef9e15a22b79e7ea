"""Retry schedule, retry budget and circuit breaker.  Pure: time and randomness are injected.

Breaker states (resilience4j's): CLOSED lets everything through and counts consecutive failures;
after `threshold` of them it goes OPEN for a cooldown that doubles on each repeated trip (up to a
cap, with ±20 % jitter); once the cooldown has passed it is HALF_OPEN and lets exactly one probe
through; the probe's success closes it, its failure opens it again for a longer cooldown.
A 429 does not count as a failure: it only keeps the provider cool for its Retry-After.

`Breaker.listener`, when set, hears every hold this process decides (a 429's cool-down, a trip),
in seconds from now; `hold` applies one decided elsewhere (another daemon, through Redis) without
telling the listener again.  Either way the provider is held back until the later of the two.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3                 # tries per target, the first one included
    backoff_base: float = 0.25        # seconds
    backoff_cap: float = 4.0
    retry_after_cap: float = 10.0     # longer Retry-After: no retry here, the client gets the 429

    def delay(self, retry: int, retry_after: float | None, rand: Callable[[], float] = random.random) -> float | None:
        """Seconds to wait before retry number `retry` (1-based); None = do not retry."""
        if retry >= self.attempts:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.retry_after_cap else None
        return rand() * min(self.backoff_cap, self.backoff_base * 2 ** (retry - 1))   # full jitter


class RetryBudget:
    """Process-wide: retries may add at most `ratio` of the request rate (plus a small reserve),
    so a dead provider cannot multiply traffic (Envoy's retry budget, as a token bucket)."""

    def __init__(self, ratio: float = 0.2, reserve: float = 10.0) -> None:
        self.ratio = ratio
        self.reserve = reserve
        self.tokens = reserve

    def on_request(self) -> None:
        self.tokens = min(self.reserve, self.tokens + self.ratio)

    def take(self) -> bool:
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(frozen=True)
class BreakerPolicy:
    threshold: int = 5                # consecutive failures that open the breaker
    cooldown: float = 5.0             # seconds open after the first trip
    cooldown_cap: float = 60.0


class Breaker:
    def __init__(self, policy: BreakerPolicy, clock: Callable[[], float] = time.monotonic,
                 rand: Callable[[], float] = random.random) -> None:
        self.policy = policy
        self.clock = clock
        self.rand = rand
        self.state = CLOSED
        self.failures = 0             # consecutive, while closed
        self.trips = 0                # consecutive trips without a success in between
        self.open_until = 0.0
        self.probing = False
        self.listener: Callable[[float], None] | None = None

    def allow(self) -> bool:
        now = self.clock()
        if self.state == OPEN and now >= self.open_until:
            self.state, self.probing = HALF_OPEN, False
        if self.state == CLOSED:
            return now >= self.open_until          # a 429 cool-down also holds requests back
        if self.state == HALF_OPEN and not self.probing:
            self.probing = True
            return True
        return False

    def retry_after(self) -> float:
        return max(0.0, self.open_until - self.clock())

    def success(self) -> None:
        self.state, self.failures, self.trips, self.probing = CLOSED, 0, 0, False

    def failure(self) -> None:
        if self.state == HALF_OPEN:
            self._trip()
            return
        self.failures += 1
        if self.failures >= self.policy.threshold:
            self._trip()

    def abandon(self) -> None:
        """The attempt ended without telling anything about the provider (cancelled, no key):
        a half-open breaker lets the next request probe instead."""
        if self.state == HALF_OPEN:
            self.probing = False

    def cool_down(self, seconds: float) -> None:
        """A 429 with Retry-After: hold requests back without counting a failure."""
        self.hold(seconds)
        if self.listener is not None:
            self.listener(seconds)

    def hold(self, seconds: float) -> None:
        """Hold requests back for `seconds` (a peer's 429 or open breaker), counting no failure."""
        self.open_until = max(self.open_until, self.clock() + seconds)
        if self.state == HALF_OPEN:
            self.probing = False

    def _trip(self) -> None:
        self.trips += 1
        base = min(self.policy.cooldown_cap, self.policy.cooldown * 2 ** min(self.trips - 1, 40))
        self.open_until = self.clock() + base * (0.8 + 0.4 * self.rand())
        self.state, self.failures, self.probing = OPEN, 0, False
        if self.listener is not None:
            self.listener(self.open_until - self.clock())

    def snapshot(self) -> dict:
        return {"state": self.state, "consecutive_failures": self.failures, "trips": self.trips,
                "retry_after": round(self.retry_after(), 3)}


class Guards:
    """Per-provider breakers and in-flight counts, and the process-wide retry budget.

    Keyed by provider name so that a reload which keeps a provider keeps its state; a reload
    that changes the breaker policy starts a fresh breaker.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, rand: Callable[[], float] = random.random,
                 budget: RetryBudget | None = None) -> None:
        self.clock = clock
        self.rand = rand
        self.budget = budget or RetryBudget()
        self.breakers: dict[str, Breaker] = {}
        self.active: dict[str, int] = {}
        self.on_hold: Callable[[str, float], None] | None = None     # (provider, seconds): tell the fleet
        self.peer_holds: dict[str, float] = {}          # provider -> clock() until which a peer holds it

    def breaker(self, name: str, policy: BreakerPolicy) -> Breaker:
        breaker = self.breakers.get(name)
        if breaker is None or breaker.policy != policy:
            breaker = self.breakers[name] = Breaker(policy, self.clock, self.rand)
            if self.on_hold is not None:
                breaker.listener = lambda seconds: self.on_hold(name, seconds)
            until = self.peer_holds.pop(name, 0.0)
            if until > self.clock():
                breaker.hold(until - self.clock())
        return breaker

    def peer_hold(self, name: str, seconds: float) -> None:
        """Another daemon holds provider `name` back for `seconds`: so does this one."""
        if seconds <= 0:
            return
        breaker = self.breakers.get(name)
        if breaker is not None:
            breaker.hold(seconds)
        else:                                           # applied when the breaker is first needed
            self.peer_holds[name] = max(self.peer_holds.get(name, 0.0), self.clock() + seconds)

    def acquire(self, name: str, limit: int | None) -> bool:
        count = self.active.get(name, 0)
        if limit is not None and count >= limit:
            return False
        self.active[name] = count + 1
        return True

    def release(self, name: str) -> None:
        self.active[name] = max(0, self.active.get(name, 0) - 1)

    def snapshot(self) -> dict:
        out = {name: dict(b.snapshot(), in_flight=self.active.get(name, 0)) for name, b in self.breakers.items()}
        now = self.clock()
        for name, until in self.peer_holds.items():
            if until > now and name not in out:
                out[name] = {"state": CLOSED, "consecutive_failures": 0, "trips": 0,
                             "retry_after": round(until - now, 3), "in_flight": 0}
        return out
