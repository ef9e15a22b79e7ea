"""The shared path and a request's account, in process: flights.Flights.join and outcome.Outcome
against the real loopback fake upstream and a real disk store, without a daemon.  (The same
behaviour through a daemon: tests/test_cache.py, test_orphans.py, test_ledger.py.)"""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from ccproxyd.config import table as config
from ccproxyd.observe import access as observe
from ccproxyd.flow.cache import Flight
from ccproxyd.state.answers import Store
from ccproxyd.flow.flights import Flights
from ccproxyd.flow.outcome import Outcome
from ccproxyd.upstream.resilience import Guards
from ccproxyd.config.routing import resolve
from ccproxyd.upstream.pool import Upstreams

from .fake_upstream import Script, chunk, text_script, usage

ROUTES = """
providers:
  mock: {{base_url: "{url}", api_key_env: MOCK_KEY}}
models:
  gpt-mock: {{provider: mock, context_window: 128000, max_output_tokens: 4096,
              prices: {{input: 2.0, output: 8.0, cached_input: 0.5}}}}
routes:
  - {{match: "*", model: gpt-mock, cache: {{ttl: 600}}}}
claude_prices:
  claude-sonnet-4-5: [{{input: 3.0, output: 15.0, cached_input: 0.3}}]
"""
BODY = {"model": "claude-sonnet-4-5", "max_tokens": 50, "stream": True,
        "messages": [{"role": "user", "content": "a question asked twice"}]}


@pytest.fixture
def table(fake):
    return config.load(ROUTES.format(url=fake.url), env={"MOCK_KEY": "sk-flow-test"})


@pytest.fixture
def lines():
    """Every record emitted while the test runs (the ledger's sink, as a list)."""
    seen: list[observe.Record] = []
    observe.SINKS.append(seen.append)
    yield seen
    observe.SINKS.remove(seen.append)


def outcome(table, n: int) -> Outcome:
    return Outcome(observe.Record(f"req_{n}", time.monotonic(), client_model=BODY["model"], stream=True), table)


async def run_flow(table, store, grace, steps):
    upstreams = Upstreams(lambda: table.provider_keys)
    flights = Flights(upstreams, Guards(), store, None, set(), grace, 10.0)
    try:
        return await steps(flights, resolve(table, BODY["model"]))
    finally:
        if flights.background:
            await asyncio.wait(list(flights.background), timeout=10)
        await upstreams.close()


def test_identical_requests_share_one_call_the_leader_pays_and_the_answer_is_stored(table, fake, tmp_path, lines):
    fake.push(text_script("shared ", "answer", use=usage(1000, 200, 400)))
    store = Store(str(tmp_path / "cache"), 1 << 20)

    async def steps(flights, decision):
        raw = orjson.dumps(BODY)
        a, b = outcome(table, 1), outcome(table, 2)
        first = await flights.join(BODY, raw, decision, None, a)
        second = await flights.join(BODY, raw, decision, None, b)
        assert isinstance(first, Flight) and second is first
        await first.finished()
        for o in (a, b):
            o.followed(first)
        c = outcome(table, 3)                             # the flight's message, then the disk's
        third = await flights.join(BODY, raw, decision, None, c)
        return a, b, c, third

    a, b, c, third = asyncio.run(run_flow(table, store, 5.0, steps))
    store.close()
    assert len(fake.requests) == 1
    assert (a.pays, b.pays, c.pays) == (True, False, False)
    assert isinstance(third, dict) and third["content"][0]["text"] == "shared answer"
    cost = (600 * 2.0 + 400 * 0.5 + 200 * 8.0) / 1e6          # 600 fresh, 400 cached, 200 out at gpt-mock's
    claude = (600 * 3.0 + 400 * 0.3 + 200 * 15.0) / 1e6
    assert a.record.cost_usd == pytest.approx(cost) and a.record.savings_usd == pytest.approx(claude - cost)
    assert b.record.cost_usd == 0 and b.record.savings_usd == pytest.approx(claude)
    assert c.record.cache == "hit" and c.record.cost_usd == 0
    assert [r.request_id for r in lines] == ["req_1", "req_2"]      # the hit is written when it goes out
    assert a.tokens_used() == 1200 and b.tokens_used() == 0


def test_a_call_every_client_left_is_cancelled_after_the_grace_and_its_leader_pays_what_it_used(table, fake, lines):
    events: list = [chunk({"role": "assistant", "content": ""})]
    for i in range(50):
        events += [chunk({"content": f"w{i} "}), 0.1]
    fake.push(Script(events=events + [chunk(finish="stop"), chunk(choices=False, usage=usage())]))

    async def steps(flights, decision):
        leader = outcome(table, 1)
        flight = await flights.join(BODY, orjson.dumps(BODY), decision, None, leader)
        flight.join()
        await flight.started()
        await asyncio.sleep(0.3)
        flight.leave()
        leader.followed(flight)                           # the client hung up mid-stream
        assert lines == [] and leader.waiting == 1        # written when the call ends, not before
        await flight.finished()
        await asyncio.sleep(0.5)                          # the cut call's usage is counted in a thread
        return leader, flight, flights

    leader, flight, flights = asyncio.run(run_flow(table, None, 0.2, steps))
    assert flight.error is not None and flights.running == {}
    assert [r.request_id for r in lines] == ["req_1"]
    record = lines[0]
    assert record.usage_estimated is True and record.output_tokens > 0 and record.cost_usd > 0
    assert record.claude_price_usd == 0 and record.savings_usd == pytest.approx(-record.cost_usd)


def test_a_whole_answer_is_written_once_when_it_goes_out_and_a_stream_at_its_end(table, lines):
    whole = Outcome(observe.Record("req_w", time.monotonic()), table)
    whole.responded(200)
    whole.responded(200)
    stream = Outcome(observe.Record("req_s", time.monotonic(), stream=True), table)
    stream.streaming = True
    stream.responded(200)                                 # the middleware runs before a stream's body
    assert [r.request_id for r in lines] == ["req_w"]
    finished = Flight()
    finished.finish(None)
    stream.followed(finished)
    assert [r.request_id for r in lines] == ["req_w", "req_s"]
