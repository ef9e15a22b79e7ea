"""Client policy without Redis: each process counts its own (clients.LocalCounts, clients.Limits),
on an injected clock; and the `clients:` section of routes.yaml."""

from __future__ import annotations

import asyncio
import calendar

import pytest

from ccproxyd.config import table as config
from ccproxyd.state.clients import Limits, LocalCounts, resets_at
from ccproxyd.config.table import ClientPolicy
from ccproxyd.errors import BudgetExhausted, ClientLimited, ConfigError, ModelNotAllowed, to_anthropic
from .support import Clock


NOON = calendar.timegm((2026, 12, 31, 12, 0, 0))
run = asyncio.run


def test_rpm_slides_over_sixty_seconds():
    clock = Clock(NOON)
    counts = LocalCounts(clock)
    policy = ClientPolicy("K", rpm=3)
    for step in (0, 10, 20):
        clock.now = NOON + step
        run(counts.admit(policy, 10))
    clock.now = NOON + 59
    with pytest.raises(ClientLimited) as refused:
        run(counts.admit(policy, 10))
    assert refused.value.retry_after == pytest.approx(1.0)     # the first one leaves the window at +60
    status, body, headers = to_anthropic(refused.value)
    assert status == 429 and b"rate_limit_error" in body and b"clients.K.rpm" in body and headers["retry-after"] == "1"
    clock.now = NOON + 60.5
    run(counts.admit(policy, 10))                             # one slot free again, not three
    with pytest.raises(ClientLimited):
        run(counts.admit(policy, 10))


def test_tpm_counts_the_estimate_then_what_was_used():
    clock = Clock(NOON)
    counts = LocalCounts(clock)
    policy = ClientPolicy("K", tpm=1000)
    run(counts.admit(policy, 5000))                           # alone in its window: a big request passes
    run(counts.settle(policy, 600 - 5000, 0.0))               # it used 600
    run(counts.admit(policy, 300))
    with pytest.raises(ClientLimited) as refused:
        run(counts.admit(policy, 200))                        # 600 + 300 + 200 > 1000
    assert "1000 tokens per minute" in refused.value.message


def test_budgets_name_the_period_and_when_it_resets():
    clock = Clock(NOON)
    counts = LocalCounts(clock)
    policy = ClientPolicy("K", budget_day=1.0, budget_month=1.5)
    run(counts.admit(policy, 1))
    run(counts.settle(policy, 0, 1.25))
    with pytest.raises(BudgetExhausted) as day:
        run(counts.admit(policy, 1))
    assert to_anthropic(day.value)[0] == 402 and day.value.error_type == "billing_error"
    assert day.value.message == ("client K has spent $1.25 of its daily budget of $1.00 (clients.K.budget_usd.day); "
                                 "it resets at 2027-01-01T00:00:00Z")
    clock.now = NOON + 86400                                   # the next day (and month): both reset
    run(counts.admit(policy, 1))
    run(counts.settle(policy, 0, 0.5))
    run(counts.settle(policy, 0, 1.1))
    with pytest.raises(BudgetExhausted) as month:
        run(counts.admit(policy, 1))
    assert "daily budget" in month.value.message               # the day is checked first
    assert resets_at("month", calendar.timegm((2026, 2, 10, 0, 0, 0))) == "2026-03-01T00:00:00Z"


def test_limits_check_models_by_glob():
    limits = Limits()
    policy = ClientPolicy("K", models=("claude-haiku*", "claude-sonnet-4-5*"))
    asyncio.run(limits.admit(policy, "Claude-Haiku-4-5", 10))
    with pytest.raises(ModelNotAllowed) as refused:
        asyncio.run(limits.admit(policy, "claude-opus-4-1", 10))
    assert refused.value.status == 403 and "clients.K.models" in refused.value.message


ROUTES = """
providers: {p: {base_url: "http://127.0.0.1:9/v1"}}
models: {m: {provider: p, context_window: 1000, max_output_tokens: 100}}
routes: [{match: "*", model: m}]
client_keys: [PLAIN_KEY]
clients:
  ALICE_KEY: {models: ["claude-haiku*"], rpm: 60, tpm: 100000, budget_usd: {day: 5, month: 100}}
"""


def test_clients_are_accepted_keys_with_their_policy():
    table = config.load(ROUTES, env={"PLAIN_KEY": "k1", "ALICE_KEY": "k2"})
    assert table.client_keys == ("k1", "k2") and table.client_key_names == ("PLAIN_KEY", "ALICE_KEY")
    assert table.clients["ALICE_KEY"] == ClientPolicy("ALICE_KEY", ("claude-haiku*",), 60, 100000, 5, 100)
    with pytest.raises(ConfigError) as bad:
        config.load(ROUTES, env={"PLAIN_KEY": "k1"})
    assert "clients.ALICE_KEY: variable ALICE_KEY is not set" in str(bad.value)
    with pytest.raises(ConfigError) as bad:
        config.load(ROUTES.replace("rpm: 60", "rpm: 0"), env={"PLAIN_KEY": "k1", "ALICE_KEY": "k2"})
    assert "rpm" in str(bad.value)
