"""The shared path and a request's account, in process: flights.Flights.join and outcome.Outcome
against the real loopback fake upstream and a real disk store, without a daemon.  (The same
behaviour through a daemon: tests/test_cache.py, test_orphans.py, test_ledger.py.)"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import orjson
import pytest

from ccproxyd.config import table as config
from ccproxyd.observe import access as observe
from ccproxyd.flow.cache import Flight
from ccproxyd.state.answers import Store
from ccproxyd.flow.fleet import FleetCache
from ccproxyd.flow.flights import Flights
from ccproxyd.flow.outcome import Outcome
from ccproxyd.state.link import Link
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


def test_a_request_whose_client_leaves_while_the_fleet_is_asked_pays_for_the_call_it_started(table, fake, lines,
                                                                                             redis_server):
    """Team mode: the client leaves while Redis is asked who leads (Redis paused for the while).  The
    call its request started (the verdict: lead, here) runs on for the cache and is paid by that
    request, written when the call ends, with status 200."""
    fake.push(text_script("paid ", "all the same", use=usage(1000, 200, 400)))
    body = dict(BODY, messages=[{"role": "user", "content": f"asked of a paused Redis {time.time_ns()}"}])

    async def scenario():
        link = Link(redis_server.url, timeout=5.0)
        await link.start()
        fleet, upstreams = FleetCache(link), Upstreams(lambda: table.provider_keys)
        flights = Flights(upstreams, Guards(), None, fleet, set(), 5.0, 10.0)
        leader = outcome(table, 1)
        try:
            os.kill(redis_server.proc.pid, signal.SIGSTOP)
            try:
                joining = asyncio.ensure_future(flights.join(body, orjson.dumps(body), resolve(table, body["model"]),
                                                             None, leader))
                await asyncio.sleep(0.3)
                joining.cancel()                          # the client left: its handler is cancelled
                try:
                    await joining
                except asyncio.CancelledError:
                    leader.abandoned()                    # as handlers.messages does
            finally:
                os.kill(redis_server.proc.pid, signal.SIGCONT)
            assert lines == []                            # not before its call ended
            await asyncio.wait(list(flights.background), timeout=10)
            for _ in range(100):
                if lines:
                    break
                await asyncio.sleep(0.02)
            return leader
        finally:
            await fleet.close()
            await upstreams.close()
            await link.close()

    leader = asyncio.run(scenario())
    assert len(fake.requests) == 1 and [r.request_id for r in lines] == ["req_1"]
    cost = (600 * 2.0 + 400 * 0.5 + 200 * 8.0) / 1e6
    record = lines[0]
    assert (leader.pays, record.cache, record.status, record.provider) == (True, "miss", 200, "mock")
    assert record.cost_usd == pytest.approx(cost) and leader.cost() == pytest.approx(cost)


def test_a_follower_whose_redis_goes_away_calls_the_provider_itself_and_its_first_request_pays(table, fake, lines,
                                                                                              redis_server):
    """Team mode, two daemons in one process (each its own Flights, FleetCache and Redis link): B
    follows A's call, and Redis is killed before a byte of it came, so B calls the provider itself
    (flow.fleet).  The request that started following on B pays for that call, as a leader does; the
    other request on B follows it and pays nothing; A's leader pays for A's call."""
    fake.push(Script(events=text_script("from A").events, first_byte_delay=1.5),
              text_script("from B", use=usage(1000, 200, 400)))
    fake.scripts[0].events[-1] = chunk(choices=False, usage=usage(1000, 200, 400))
    body = dict(BODY, messages=[{"role": "user", "content": f"asked on two daemons {time.time_ns()}"}])
    raw, decision = orjson.dumps(body), resolve(table, body["model"])

    async def scenario():
        links = [Link(redis_server.url), Link(redis_server.url)]
        for link in links:
            await link.start()
        fleets, upstreams = [FleetCache(link) for link in links], Upstreams(lambda: table.provider_keys)
        a, b = (Flights(upstreams, Guards(), None, fleet, set(), 5.0, 10.0) for fleet in fleets)
        try:
            lead = outcome(table, 1)
            on_a = await a.join(body, raw, decision, None, lead)
            while not fake.requests:                      # A's call is at the provider, its answer 1.5 s away
                await asyncio.sleep(0.02)
            first, second = outcome(table, 2), outcome(table, 3)
            on_b = await b.join(body, raw, decision, None, first)
            assert await b.join(body, raw, decision, None, second) is on_b and not first.pays
            await asyncio.sleep(0.2)                      # B reads A's stream
            redis_server.kill()
            await on_b.started()
            shown = [first.settled(on_b), second.settled(on_b)]     # the x-ccproxyd-cache headers
            for flight, followers in ((on_b, (first, second)), (on_a, (lead,))):
                await flight.finished()
                for follower in followers:
                    follower.followed(flight)
            await asyncio.wait(list(a.background | b.background), timeout=10)
            return lead, first, second, shown
        finally:
            redis_server.start()
            for fleet in fleets:
                await fleet.close()
            await upstreams.close()
            for link in links:
                await link.close()

    lead, first, second, shown = asyncio.run(scenario())
    assert len(fake.requests) == 2 and shown == ["miss", "hit"]
    cost = (600 * 2.0 + 400 * 0.5 + 200 * 8.0) / 1e6
    claude = (600 * 3.0 + 400 * 0.3 + 200 * 15.0) / 1e6
    for paid in (lead, first):
        assert paid.record.cache == "miss" and paid.record.cost_usd == pytest.approx(cost) == paid.cost()
    assert second.record.cache == "hit" and second.record.cost_usd == 0 and second.cost() is None
    assert second.record.savings_usd == pytest.approx(claude)
    assert sorted(r.request_id for r in lines) == ["req_1", "req_2", "req_3"]
