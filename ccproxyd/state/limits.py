"""Client limits and spend across the fleet (clients.Limits uses it while Redis is up).

One Lua script per admission reads and changes a client's counters atomically, on Redis's own
clock (TIME), so two daemons never both take the last slot: budgets first, then the rpm window (a
sorted set of admission times), then the tpm window (a hash of tokens per second); the window's
length is an argument of the script (clients.WINDOW, its one source).  Spend is
INCRBYFLOAT on one key per client per UTC day and per UTC month; the keys expire after their
period.  Every method returns None while Redis is down: the caller then counts locally.
"""

from __future__ import annotations

import secrets
import time
from typing import Callable

from ..money import clock as wallclock
from .clients import PERIODS, WINDOW, over_budget, over_limit, period_keys
from ..config.table import ClientPolicy
from .link import PREFIX, Link

ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local sec = tonumber(t[1])
local rpm, tpm, estimate = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local window = tonumber(ARGV[7])
local budgets = {tonumber(ARGV[4]), tonumber(ARGV[5])}
for i = 1, 2 do
  if budgets[i] > 0 then
    local spent = tonumber(redis.call('GET', KEYS[2 + i]) or '0')
    if spent >= budgets[i] then return {'budget' .. i, tostring(spent), tostring(now)} end
  end
end
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  if redis.call('ZCARD', KEYS[1]) >= rpm then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {'rpm', tostring(tonumber(oldest[2]) + window - now), tostring(now)}
  end
end
if tpm > 0 then
  local fields = redis.call('HGETALL', KEYS[2])
  local used, oldest = 0, nil
  for i = 1, #fields, 2 do
    local s = tonumber(fields[i])
    if s <= sec - window then
      redis.call('HDEL', KEYS[2], fields[i])
    else
      used = used + tonumber(fields[i + 1])
      if oldest == nil or s < oldest then oldest = s end
    end
  end
  if used > 0 and used + estimate > tpm then
    return {'tpm', tostring(oldest + window + 1 - now), tostring(now)}
  end
  redis.call('HINCRBY', KEYS[2], sec, estimate)
  redis.call('EXPIRE', KEYS[2], math.ceil(window) + 2)
end
if rpm > 0 then
  redis.call('ZADD', KEYS[1], now, ARGV[6])
  redis.call('EXPIRE', KEYS[1], math.ceil(window) + 1)
end
return {'ok', '0', tostring(now)}
"""

PERIOD_SECONDS = {"day": 2 * 86400, "month": 32 * 86400}    # how long a spend key outlives its period start


def _key(kind: str, name: str, suffix: str = "") -> str:
    return f"{PREFIX}client:{name}:{kind}{':' + suffix if suffix else ''}"


class RedisCounts:
    """The fleet's counts (a clients.Counts).  The windows run on Redis's clock; `clock` names the
    UTC day and month the spend keys are for (the CCPROXYD_NOW clock, as the ledger's days)."""

    def __init__(self, link: Link, clock: Callable[[], float] = wallclock.now) -> None:
        self.link = link
        self.clock = clock
        self.script = link.client.register_script(ADMIT)

    def _spend_keys(self, name: str, now: float) -> list[str]:
        keys = period_keys(now)
        return [_key("spend", name, f"{p}:{keys[p]}") for p, _ in PERIODS]

    async def admit(self, policy: ClientPolicy, estimate: int):
        """True (admitted by the fleet's counts), None (Redis down: the caller decides alone), or
        raises the client's error (over a limit or a budget).  The window length goes to the script
        as an argument: clients.WINDOW is its one source."""
        keys = [_key("rpm", policy.name), _key("tpm", policy.name), *self._spend_keys(policy.name, self.clock())]
        args = [policy.rpm or 0, policy.tpm or 0, estimate, policy.budget_day or 0, policy.budget_month or 0,
                secrets.token_hex(8), WINDOW]
        result = await self.link.run(lambda r: self.script(keys=keys, args=args, client=r), None)
        if result is None:
            return None
        verdict, value, now = (x.decode() if isinstance(x, bytes) else x for x in result)
        if verdict == "ok":
            return True
        if verdict.startswith("budget"):
            period = PERIODS[int(verdict[-1]) - 1][0]
            raise over_budget(policy, period, float(value), self.clock())    # the day the spend keys name
        raise over_limit(policy, verdict, float(value))

    async def settle(self, policy: ClientPolicy, correction: int, cost: float) -> None:
        if not correction and not cost:
            return
        now = time.time()

        async def write(r) -> None:
            async with r.pipeline(transaction=True) as pipe:
                if correction:
                    pipe.hincrby(_key("tpm", policy.name), str(int(now)), correction)
                if cost:
                    for (period, _), key in zip(PERIODS, self._spend_keys(policy.name, self.clock())):
                        pipe.incrbyfloat(key, cost)
                        pipe.expire(key, PERIOD_SECONDS[period])
                await pipe.execute()
        await self.link.run(write, None)

    async def usage(self, policies: list[ClientPolicy]) -> dict[str, dict] | None:
        """Every client's use, in one pipeline (health checks call this often)."""
        now = time.time()

        async def read(r) -> dict[str, dict]:
            async with r.pipeline(transaction=False) as pipe:
                for policy in policies:
                    pipe.zcount(_key("rpm", policy.name), now - WINDOW, "+inf")
                    pipe.hgetall(_key("tpm", policy.name))
                    for key in self._spend_keys(policy.name, self.clock()):
                        pipe.get(key)
                replies = await pipe.execute()
            out = {}
            for i, policy in enumerate(policies):
                requests, tokens, *spent = replies[i * (2 + len(PERIODS)):(i + 1) * (2 + len(PERIODS))]
                recent = sum(int(v) for s, v in tokens.items() if int(s) > now - WINDOW)
                out[policy.name] = {"scope": "fleet", "requests_last_minute": requests, "tokens_last_minute": recent,
                                    "spent_usd": {p: round(float(s or 0), 6) for (p, _), s in zip(PERIODS, spent)}}
            return out
        return await self.link.run(read, None) if policies else {}
