"""Retry schedule, budget and breaker with an injected clock; fallbacks against a sick upstream."""

from __future__ import annotations

import anthropic
import pytest

from ccproxyd.upstream.resilience import (CLOSED,
                                          HALF_OPEN,
                                          OPEN,
                                          Breaker,
                                          BreakerPolicy,
                                          Guards,
                                          RetryBudget,
                                          RetryPolicy)

from .conftest import TEST_ROUTES, Daemon, free_port
from .fake_upstream import Script, text_script
from .support import Clock, wait_for


def test_retry_delays_full_jitter_and_retry_after_cap():
    policy = RetryPolicy(attempts=4, backoff_base=0.5, backoff_cap=1.5, retry_after_cap=10)
    assert [policy.delay(n, None, rand=lambda: 1.0) for n in (1, 2, 3, 4)] == [0.5, 1.0, 1.5, None]
    assert policy.delay(1, None, rand=lambda: 0.0) == 0.0
    assert policy.delay(1, 7.0) == 7.0
    assert policy.delay(1, 11.0) is None


def test_retry_budget_limits_retries_to_a_share_of_requests():
    budget = RetryBudget(ratio=0.2, reserve=3)
    assert [budget.take() for _ in range(4)] == [True, True, True, False]
    for _ in range(5):
        budget.on_request()
    assert budget.take() and not budget.take()


def test_breaker_opens_after_threshold_probes_half_open_and_grows_cooldown():
    clock = Clock()
    b = Breaker(BreakerPolicy(threshold=3, cooldown=10, cooldown_cap=25), clock, rand=lambda: 0.5)
    for _ in range(2):
        assert b.allow()
        b.failure()
    assert b.state == CLOSED
    b.failure()
    assert b.state == OPEN and not b.allow() and b.retry_after() == 10
    clock.now += 10
    assert b.allow() and b.state == HALF_OPEN
    assert not b.allow()                       # exactly one probe
    b.failure()                                # the probe failed: open again, twice as long
    assert b.state == OPEN and b.retry_after() == 20
    clock.now += 20
    assert b.allow()
    b.failure()
    assert b.retry_after() == 25               # capped
    clock.now += 25
    assert b.allow()
    b.success()
    assert b.state == CLOSED and b.trips == 0 and b.allow()


def test_breaker_jitter_and_429_cooldown():
    clock = Clock()
    b = Breaker(BreakerPolicy(threshold=1, cooldown=10), clock, rand=lambda: 0.0)
    b.failure()
    assert b.retry_after() == 8                # -20 %
    b = Breaker(BreakerPolicy(threshold=1, cooldown=10), clock, rand=lambda: 0.99)
    b.cool_down(3)
    assert b.state == CLOSED and not b.allow() and b.failures == 0
    clock.now += 3
    assert b.allow()


def test_guards_concurrency_and_policy_change():
    guards = Guards(clock=Clock())
    assert guards.acquire("p", 2) and guards.acquire("p", 2) and not guards.acquire("p", 2)
    guards.release("p")
    assert guards.acquire("p", 2)
    first = guards.breaker("p", BreakerPolicy())
    assert guards.breaker("p", BreakerPolicy()) is first
    assert guards.breaker("p", BreakerPolicy(threshold=9)) is not first


# ---------------------------------------------------------------- against the daemon

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def daemon(upstream, tmp_path_factory):
    """This module's own daemon: the retry budget is process-wide, and what other modules' retries
    spent on the shared daemon (in whatever order the test processes run them) would cut the
    retries these tests count."""
    path = tmp_path_factory.mktemp("resilience") / "routes.yaml"
    path.write_text(TEST_ROUTES.format(url=upstream.url, dead_port=free_port()))
    d = Daemon(path, extra_args=("--ping-interval", "0.3", "--no-cache"))
    yield d
    d.stop()


@pytest.fixture
def client(daemon):
    return anthropic.Anthropic(base_url=daemon.url, api_key="k", max_retries=0)


@pytest.mark.parametrize("status,upstream_attempts", [(500, 3), (502, 3), (503, 3), (529, 3), (408, 3), (400, 1),
                                                      (401, 1), (404, 1), (422, 1)])
def test_status_codes_retry_or_not(client, fake, status, upstream_attempts):
    """Model `claude-limited` has the default policy: 3 tries for retryable statuses, 1 otherwise;
    its breaker (threshold 5) does not trip within one request."""
    fake.responder = lambda body: Script(status=status, body={"error": {"message": "nope"}})
    with pytest.raises(anthropic.APIStatusError):
        client.messages.create(model="claude-limited", max_tokens=5, messages=MESSAGES)
    assert len(fake.requests) == upstream_attempts
    fake.responder = None
    fake.push(text_script("recovered"))                # a success resets the breaker's count
    assert client.messages.create(model="claude-limited", max_tokens=5, messages=MESSAGES).content[0].text == "recovered"


def test_primary_failing_forever_is_bounded_and_fallback_answers(daemon, client, fake):
    import httpx2

    fake.responder = lambda body: (Script(status=500, body={"error": {"message": "down"}})
                                   if body["model"] == "sick-up" else text_script("fallback ok"))
    for _ in range(30):
        message = client.messages.create(model="claude-sick", max_tokens=5, messages=MESSAGES)
        assert message.content[0].text == "fallback ok" and message.model == "claude-sick"
    sick_attempts = sum(1 for r in fake.requests if r["body"]["model"] == "sick-up")
    assert sick_attempts == 5                          # the breaker's threshold, then it stays open
    state = httpx2.get(daemon.url + "/health").json()["providers"]["sick"]
    assert state["state"] == "open" and state["trips"] == 1
    # a 400 never retries and never trips anything
    fake.responder = None
    fake.push(Script(status=400, body={"error": {"message": "bad"}}))
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model="claude-flaky", max_tokens=5, messages=MESSAGES)
    assert httpx2.get(daemon.url + "/health").json()["providers"]["flaky"]["consecutive_failures"] == 0


def test_slow_first_byte_is_retried_then_504(client, fake):
    fake.responder = lambda body: Script(events=[], first_byte_delay=1.0)
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(model="claude-slow", max_tokens=5, messages=MESSAGES)
    assert info.value.status_code == 504 and info.value.body["error"]["type"] == "timeout_error"
    assert len(fake.requests) == 2


def test_silence_mid_stream_ends_with_error_event(daemon, fake):
    import httpx2
    import time

    from .fake_upstream import chunk
    from .grammar import check_stream, parse_sse

    fake.push(Script(events=[chunk({"content": "started"}), 2.0, chunk({"content": "late"})]))
    t0 = time.monotonic()
    r = httpx2.post(daemon.url + "/v1/messages", json={"model": "claude-slow", "max_tokens": 5, "stream": True,
                                                     "messages": MESSAGES}, timeout=10)
    events = parse_sse(r.content)
    assert check_stream(events) == "error"
    assert events[-1][1]["error"]["type"] == "timeout_error"
    assert time.monotonic() - t0 < 2.5
    assert len(fake.requests) == 1                      # never retried after the first byte


def test_concurrency_cap_sheds_load_fast(daemon, fake):
    import threading
    import time

    import httpx2

    fake.push(Script(events=[1.0] + text_script("slow").events))
    body = {"model": "claude-narrow", "max_tokens": 5, "messages": MESSAGES}
    first = threading.Thread(target=lambda: httpx2.post(daemon.url + "/v1/messages", json=body, timeout=10))
    first.start()
    wait_for(lambda: len(fake.requests) == 1)           # the first is upstream, holding the slot and the slow
    t0 = time.monotonic()                               # script (after a fixed sleep the second could overtake it)
    r = httpx2.post(daemon.url + "/v1/messages", json=body, timeout=10)
    assert r.status_code == 529 and r.json()["error"]["type"] == "overloaded_error"
    assert "concurrency limit" in r.json()["error"]["message"]
    assert time.monotonic() - t0 < 0.5
    first.join()
    assert httpx2.post(daemon.url + "/v1/messages", json=body, timeout=10).status_code == 200


def test_body_over_the_limit_is_413(daemon, fake):
    import httpx2

    r = httpx2.post(daemon.url + "/v1/messages", content=b"x" * (33 * 1024 * 1024),
                   headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 413 and r.json()["error"]["type"] == "request_too_large"
    assert fake.requests == []


def test_half_open_probe_answered_with_a_4xx_closes_the_breaker(client, fake):
    import time

    fake.push(Script(status=500, body={"error": {"message": "down"}}))
    with pytest.raises(anthropic.InternalServerError):
        client.messages.create(model="claude-probe", max_tokens=5, messages=MESSAGES)
    time.sleep(0.45)                                   # past the cooldown: the next request probes
    fake.push(Script(status=400, body={"error": {"message": "context_length_exceeded"}}))
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model="claude-probe", max_tokens=5, messages=MESSAGES)
    fake.push(text_script("healthy"))
    assert client.messages.create(model="claude-probe", max_tokens=5, messages=MESSAGES).content[0].text == "healthy"


def test_client_gone_before_the_first_byte_releases_the_slot_and_the_probe(daemon, fake):
    import time

    import httpx2

    body = {"model": "claude-narrow", "max_tokens": 5, "messages": MESSAGES}
    fake.push(Script(events=text_script("late").events, first_byte_delay=1.0))
    with pytest.raises(httpx2.ReadTimeout):
        httpx2.post(daemon.url + "/v1/messages", json=body, timeout=0.3)
    time.sleep(1.2)
    assert httpx2.post(daemon.url + "/v1/messages", json=body, timeout=10).status_code == 200
    assert httpx2.get(daemon.url + "/health").json()["providers"]["narrow"]["in_flight"] == 0


def test_breaker_survives_thousands_of_trips():
    clock = Clock()
    b = Breaker(BreakerPolicy(threshold=1, cooldown=5, cooldown_cap=60), clock, rand=lambda: 1.0)
    for _ in range(3000):
        assert b.allow()
        b.failure()
        clock.now += b.retry_after()
    assert b.retry_after() == 0 and b.allow() and b.state == HALF_OPEN


def test_abandoned_probe_lets_the_next_request_probe():
    clock = Clock()
    b = Breaker(BreakerPolicy(threshold=1, cooldown=1), clock, rand=lambda: 0.5)
    b.failure()
    clock.now += 1
    assert b.allow() and not b.allow()
    b.abandon()
    assert b.allow()


def test_upstream_that_lingers_after_done_still_completes(daemon, fake):
    import time

    import httpx2

    from .grammar import check_stream, parse_sse

    fake.push(Script(events=text_script("done").events, linger=2.0))
    t0 = time.monotonic()
    r = httpx2.post(daemon.url + "/v1/messages", json={"model": "claude-slow", "max_tokens": 5, "stream": True,
                                                     "messages": MESSAGES}, timeout=10)
    assert check_stream(parse_sse(r.content)) == "complete"
    assert time.monotonic() - t0 < 1.5


def test_a_fallback_that_cannot_take_the_request_is_skipped_cleanly():
    """The fallback's translation fails (an image source its vision model rejects): its slot and
    breaker are untouched, and the client sees the primary's real error, not a 400."""
    import asyncio

    import orjson

    from ccproxyd.config import table as config
    from ccproxyd.flow import proxy
    from ccproxyd.errors import Overloaded
    from ccproxyd.config.routing import resolve

    table = config.load("""
providers:
  a: {base_url: "http://127.0.0.1:9/v1", retries: {attempts: 1}}
  b: {base_url: "http://127.0.0.1:9/v1", max_concurrency: 1}
models:
  blind: {provider: a, context_window: 1000, max_output_tokens: 100, vision: false}
  seeing: {provider: b, context_window: 1000, max_output_tokens: 100}
routes:
  - {match: "*", model: blind, fallbacks: [seeing]}
""", env={})

    class DownUpstreams:
        async def open(self, provider, content, path):
            raise Overloaded("primary is down", retryable=True)

    body = {"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "file", "file_id": "f_1"}}]}]}
    decision = resolve(table, "claude-x")
    guards = Guards()
    with pytest.raises(Overloaded, match="primary is down"):
        asyncio.run(proxy.open_answer(DownUpstreams(), guards, decision, orjson.dumps(body),
                                      proxy.payload(body, decision.primary)))
    assert guards.active.get("a", 0) == 0 and guards.active.get("b", 0) == 0
    assert "b" not in guards.breakers


def test_a_connection_closed_without_an_answer_is_tried_again_at_once(daemon, client, fake):
    """Model `claude-flaky` gets one try per request: only the free redial can save this one, and
    it does not count against the provider's breaker."""
    import httpx2

    fake.push(Script(drop=True), text_script("after", " redial"))
    message = client.messages.create(model="claude-flaky", max_tokens=5, messages=MESSAGES)
    assert message.content[0].text == "after redial"
    assert len(fake.requests) == 2
    assert httpx2.get(daemon.url + "/health").json()["providers"]["flaky"]["consecutive_failures"] == 0
    fake.push(Script(drop=True), Script(drop=True))     # a second drop is a real failure
    with pytest.raises(anthropic.InternalServerError):
        client.messages.create(model="claude-flaky", max_tokens=5, messages=MESSAGES)
    assert len(fake.requests) == 4
