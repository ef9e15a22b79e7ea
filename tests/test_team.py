"""Team mode: three real daemons and one real redis-server (started here on a free loopback port),
sharing in-flight calls and the response cache (each request logged and recorded as it would be
on one daemon), provider holds, client limits and budgets, and message threads; and serving on
through a Redis killed and restarted mid-load."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx2
import orjson
import pytest

from .conftest import ROOT, Daemon, free_port
from .fake_upstream import FakeUpstream, Gate, Script, chunk, text_script, usage
from .support import access_lines, parse_prometheus

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not installed (make test installs it)")

KEYS = {"TEAM_OPEN_KEY": "team-open-0001", "TEAM_ALICE_KEY": "team-alice-0002", "TEAM_BOB_KEY": "team-bob-0003",
        "TEAM_CAROL_KEY": "team-carol-0004", "TEAM_DAVE_KEY": "team-dave-0005"}
ROUTES = """
providers:
  mock: {{base_url: "{url}", api_key_env: MOCK_KEY}}
  cool: {{base_url: "{url}", api_key_env: MOCK_KEY}}
  dead: {{base_url: "http://127.0.0.1:9/v1", retries: {{attempts: 1}}}}
models:
  gpt-mock:
    provider: mock
    context_window: 128000
    max_output_tokens: 16384
    prices: [{{input: 1000, output: 1000}}]
  cool-model: {{provider: cool, upstream: cool-up, context_window: 1000, max_output_tokens: 100}}
  dead-model: {{provider: dead, context_window: 128000, max_output_tokens: 16384}}
routes:
  - match: "claude-cool*"
    model: cool-model
  - match: "claude-backup*"
    model: dead-model
    fallbacks: [gpt-mock]
    cache: {{ttl: 600}}
  - match: "*"
    model: gpt-mock
    cache: {{ttl: 600}}
client_keys: [TEAM_OPEN_KEY]
clients:
  TEAM_ALICE_KEY: {{rpm: 60}}
  TEAM_BOB_KEY: {{budget_usd: {{day: 0.02, month: 10}}}}
  TEAM_CAROL_KEY: {{models: ["claude-haiku*"]}}
  TEAM_DAVE_KEY: {{budget_usd: {{day: 1000}}}}
claude_prices:
  claude-backup-1: [{{input: 3.0, output: 15.0, cached_input: 0.3}}]
"""

NOW = "2026-12-07T12:00:00Z"      # the daemons' clock (CCPROXYD_NOW): budgets' days do not depend on when tests run


def member(directory, name: str, redis_server) -> Daemon:
    """A daemon of the team (its routes.yaml in `directory`), with a cache and log of its own."""
    return Daemon(directory / "routes.yaml", env=dict(KEYS, CCPROXYD_NOW=NOW), log_path=directory / f"{name}.log",
                  extra_args=("--cache-dir", str(directory / f"cache-{name}"), "--redis", redis_server.url,
                              "--ping-interval", "5", "--orphan-grace", "0.2"))


@pytest.fixture(scope="module")
def team(redis_server, tmp_path_factory):
    """(fake upstream, [daemon A, B, C]) all pointed at one Redis."""
    fake = FakeUpstream().start()
    directory = tmp_path_factory.mktemp("team")
    path = directory / "routes.yaml"
    path.write_text(ROUTES.format(url=fake.url))
    daemons = []
    try:
        with ThreadPoolExecutor(3) as pool:                 # started side by side: a third of the wait
            for started in [pool.submit(member, directory, name, redis_server) for name in "abc"]:
                daemons.append(started.result())
        yield fake, daemons
    finally:
        for daemon in daemons:
            daemon.stop()
        fake.stop()


@pytest.fixture
def fake(team):
    upstream, _ = team
    upstream.reset()
    yield upstream
    upstream.reset()


def post(daemon, body: dict, key: str = "TEAM_OPEN_KEY", **headers) -> httpx2.Response:
    return httpx2.post(daemon.url + "/v1/messages", json=body, timeout=30,
                       headers={"x-api-key": KEYS[key], "anthropic-version": "2023-06-01", **headers})


def body(text: str, **extra) -> dict:
    return {"model": "claude-sonnet-4-5", "max_tokens": 50, "messages": [{"role": "user", "content": text}], **extra}


def health(daemon) -> dict:
    return httpx2.get(daemon.url + "/health", timeout=5).json()


def wait_for(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def blocked_readers(redis_server) -> int:
    """Clients blocked in XREAD on Redis right now: daemons following another daemon's flight."""
    return redis_server.cli("CLIENT", "LIST").count("cmd=xread")


def test_identical_requests_on_three_daemons_reach_the_upstream_once(team, fake, redis_server):
    _, (a, b, c) = team
    gate = Gate()
    fake.push(Script(events=[chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}), gate,
                             chunk({"content": "lo fleet"}), chunk(finish="stop"), chunk(choices=False, usage=usage())]))
    request = body("the same question, asked on three daemons", stream=True)
    results: dict = {}
    leader = threading.Thread(target=lambda: results.update(a=post(a, request)))
    leader.start()
    assert gate.reached.wait(10)                        # A's upstream call is mid-answer
    follower = threading.Thread(target=lambda: results.update(c=post(c, dict(request, stream=False))))
    follower.start()
    seen = ""
    with httpx2.stream("POST", b.url + "/v1/messages", json=request, timeout=30,
                       headers={"x-api-key": KEYS["TEAM_OPEN_KEY"]}) as streamed:
        assert streamed.status_code == 200 and streamed.headers["x-ccproxyd-cache"] == "hit"
        lines = streamed.iter_lines()
        for line in lines:                              # B streams what A has, while A's call still waits
            seen += line + "\n"
            if '"Hel"' in line:
                break
        assert not gate._open.is_set()
        try:
            wait_for(lambda: blocked_readers(redis_server) >= 2, what="B and C following A's flight")
        except AssertionError:
            raise AssertionError("B and C did not follow A's flight; Redis as the daemons saw it: "
                                 + repr([health(d)["redis"] for d in (a, b, c)])) from None
        gate.open()
        for line in lines:
            seen += line + "\n"
    leader.join(30)
    follower.join(30)
    assert len(fake.requests) == 1
    assert '"lo fleet"' in seen and "event: message_stop" in seen
    assert '"Hel"' in results["a"].text and '"lo fleet"' in results["a"].text
    assert results["c"].status_code == 200 and results["c"].json()["content"][0]["text"] == "Hello fleet"
    assert results["c"].headers["x-ccproxyd-cache"] == "hit"
    again = post(b, dict(request, stream=False))        # stored in Redis: a hit on any daemon
    assert again.headers["x-ccproxyd-cache"] == "hit" and again.json()["content"][0]["text"] == "Hello fleet"
    assert len(fake.requests) == 1


def test_a_call_another_daemon_follows_goes_on_when_its_own_clients_leave(team, fake, redis_server):
    """A's only client leaves mid-answer; B's follows it: past A's orphan grace the call goes on for B."""
    _, (a, b, _) = team
    gate = Gate()
    fake.push(Script(events=[chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}), gate,
                             chunk({"content": "lo B"}), chunk(finish="stop"), chunk(choices=False, usage=usage())]))
    request = body("asked on A, which then leaves", stream=True)
    headers = {"x-api-key": KEYS["TEAM_OPEN_KEY"]}
    with httpx2.stream("POST", a.url + "/v1/messages", json=request, timeout=30, headers=headers) as leaving:
        for line in leaving.iter_lines():
            if '"Hel"' in line:
                break
    seen = ""
    with httpx2.stream("POST", b.url + "/v1/messages", json=request, timeout=30, headers=headers) as streamed:
        lines = streamed.iter_lines()
        for line in lines:
            seen += line + "\n"
            if '"Hel"' in line:
                break
        time.sleep(0.6)                                  # past A's orphan grace (0.2 s), its client gone
        gate.open()
        for line in lines:
            seen += line + "\n"
    assert '"lo B"' in seen and "event: message_stop" in seen and "event: error" not in seen
    assert len(fake.requests) == 1
    assert "cancelled it" not in a.log_path.read_text()


# usage the provider reports: 1000 input (400 of them read from its prompt cache), 200 output (50 of them reasoning)
REASONED = {"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200,
            "prompt_tokens_details": {"cached_tokens": 400}, "completion_tokens_details": {"reasoning_tokens": 50}}
LEAD_COST = (600 * 1000 + 400 * 1000 + 200 * 1000) / 1e6      # gpt-mock's $1000 per Mtok, in and out
CLAUDE = (600 * 3.0 + 400 * 0.3 + 200 * 15.0) / 1e6           # Claude Sonnet 4.5's list price (and claude-backup-1's)
ACCOUNT = ("status", "error_type", "provider", "upstream_model", "cache", "attempts", "fallback_used", "finish_reason",
           "input_tokens", "cached_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens",
           "usage_estimated", "web_searches", "cost_usd", "claude_price_usd", "savings_usd", "rate", "claude_rate",
           "miss_cost_usd")


def account(line: dict) -> dict:
    """What an access line says of a request's answer and its money (not its id, time or latency)."""
    return {name: line[name] for name in ACCOUNT}


def logged(daemon, request_id: str) -> dict:
    wait_for(lambda: request_id in access_lines(daemon), what=f"the access line of {request_id}")
    return access_lines(daemon)[request_id]


def ledger_row(daemon, session: str) -> dict:
    """The daemon's /spend row of one session (client keys are on: the open key may read it)."""
    answer = httpx2.get(daemon.url + "/spend", params={"by": "session"}, timeout=10,
                        headers={"x-api-key": KEYS["TEAM_OPEN_KEY"]})
    assert answer.status_code == 200, answer.text
    return next(row for row in answer.json()["rows"] if row["key"] == session)


FOLLOWING = """
local n = 0
for _, key in ipairs(redis.call('KEYS', 'ccproxyd:flight:*')) do
  n = n + tonumber(redis.call('GET', 'ccproxyd:followers:' .. redis.call('GET', key)) or '0')
end
return n
"""


def following(redis_server) -> int:
    """How many daemons follow a running flight now, as Redis counts them (blocked_readers also
    counts a reader that is idle since its last XREAD)."""
    return int(redis_server.cli("EVAL", FOLLOWING, "0") or 0)


def stored_keys(redis_server) -> set[str]:
    return set(redis_server.cli("KEYS", "ccproxyd:cache:*").split())


def test_a_fleet_hit_is_recorded_as_a_local_hit_is(team, fake, redis_server):
    """A's answer, stored in Redis, answers B and C: their lines and ledger rows say what a hit on
    A's own store says: the answer's tokens, cost 0, the whole Claude price saved."""
    _, (a, b, c) = team
    fake.push(text_script("stored ", "once", use=REASONED))
    request = body("a question the fleet answers once")
    tag = f"fleet-hit-{time.time_ns()}"
    before = stored_keys(redis_server)
    led = post(a, request, **{"x-claude-code-session-id": f"{tag}-a"})
    wait_for(lambda: len(stored_keys(redis_server) - before) == 1, what="the answer stored in Redis")
    local = post(a, request, **{"x-claude-code-session-id": f"{tag}-a-again"})
    fleet = [post(b, request, **{"x-claude-code-session-id": f"{tag}-b"}),
             post(c, dict(request, stream=True), **{"x-claude-code-session-id": f"{tag}-c"})]
    assert [r.headers["x-ccproxyd-cache"] for r in (led, local, *fleet)] == ["miss", "hit", "hit", "hit"]
    assert fleet[0].json()["content"][0]["text"] == "stored once" and "stored once" in fleet[1].text
    assert len(fake.requests) == 1
    lead = logged(a, led.headers["request-id"])
    assert lead["cost_usd"] == pytest.approx(LEAD_COST) and lead["reasoning_tokens"] == 50
    hits = [logged(d, r.headers["request-id"]) for d, r in ((a, local), (b, fleet[0]), (c, fleet[1]))]
    for line in hits:
        assert (line["cache"], line["provider"], line["upstream_model"], line["status"]) == ("hit", "mock", "gpt-mock", 200)
        assert (line["input_tokens"], line["cached_tokens"], line["output_tokens"]) == (600, 400, 200)
        assert line["cost_usd"] == 0 and line["miss_cost_usd"] == 0
        assert line["claude_price_usd"] == pytest.approx(CLAUDE) and line["savings_usd"] == pytest.approx(CLAUDE)
    assert account(hits[1]) == account(hits[0]) and account(hits[2]) == account(hits[0])
    for daemon, session in ((b, f"{tag}-b"), (c, f"{tag}-c")):
        row = ledger_row(daemon, session)
        assert (row["requests"], row["cache_hits"], row["cost_usd"]) == (1, 1, 0)
        assert row["savings_usd"] == pytest.approx(CLAUDE) and row["claude_price_usd"] == pytest.approx(CLAUDE)
        assert (row["input_tokens"], row["cached_input_tokens"], row["output_tokens"]) == (600, 400, 200)


def reading(daemon, request: dict, session: str):
    """A streamed request read until its first text came: (context, response, the rest of its lines)."""
    context = httpx2.stream("POST", daemon.url + "/v1/messages", json=request, timeout=30,
                            headers={"x-api-key": KEYS["TEAM_OPEN_KEY"], "x-claude-code-session-id": session})
    response = context.__enter__()
    lines = response.iter_lines()
    for line in lines:
        if '"Hel"' in line:
            break
    return context, response, lines


def test_followers_on_other_daemons_are_recorded_as_a_local_follower_is(team, fake, redis_server):
    """A leads a call (its primary is down: the fallback answers); a second request on A follows it
    here, B and C follow it from Redis.  B's and C's lines and rows say what A's follower's says:
    who answered (the fallback), the answer's tokens, cost 0, the whole Claude price saved."""
    _, (a, b, c) = team
    gate = Gate()
    fake.push(Script(events=[chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}), gate,
                             chunk({"content": "lo all"}), chunk(finish="stop"), chunk(choices=False, usage=REASONED)]))
    request = body("one call, followed here and on two other daemons", model="claude-backup-1", stream=True)
    tag = f"followed-{time.time_ns()}"
    streams = [reading(a, request, f"{tag}-lead")]
    streams += [reading(a, request, f"{tag}-a"), reading(b, request, f"{tag}-b")]
    whole: dict = {}
    follower = threading.Thread(target=lambda: whole.update(c=post(c, dict(request, stream=False),
                                                                   **{"x-claude-code-session-id": f"{tag}-c"})))
    follower.start()
    wait_for(lambda: following(redis_server) == 2, what="B and C following A's flight")
    gate.open()
    for context, _, rest in streams:
        assert "event: message_stop" in "\n".join(rest)
        context.__exit__(None, None, None)
    follower.join(30)
    assert whole["c"].status_code == 200 and whole["c"].json()["content"][0]["text"] == "Hello all"
    assert len(fake.requests) == 1 and [r.headers["x-ccproxyd-cache"] for _, r, _ in streams] == ["miss", "hit", "hit"]
    lead, here, on_b = (logged(d, r.headers["request-id"]) for d, (_, r, _) in zip((a, a, b), streams))
    on_c = logged(c, whole["c"].headers["request-id"])
    assert lead["cost_usd"] == pytest.approx(LEAD_COST) and lead["fallback_used"] is True
    for line in (here, on_b, on_c):
        assert (line["cache"], line["provider"], line["upstream_model"], line["fallback_used"]) == ("hit", "mock",
                                                                                                     "gpt-mock", True)
        assert (line["input_tokens"], line["cached_tokens"], line["output_tokens"], line["reasoning_tokens"]) == (
            600, 400, 200, 50)
        assert (line["attempts"], line["finish_reason"], line["status"]) == (1, "stop", 200)
        assert line["cost_usd"] == 0 and line["claude_price_usd"] == pytest.approx(CLAUDE)
        assert line["savings_usd"] == pytest.approx(CLAUDE)
    assert account(on_b) == account(here) and account(on_c) == account(here)
    for daemon, session in ((b, f"{tag}-b"), (c, f"{tag}-c")):
        row = ledger_row(daemon, session)
        assert (row["requests"], row["cache_hits"], row["cost_usd"]) == (1, 1, 0)
        assert row["savings_usd"] == pytest.approx(CLAUDE)
        assert (row["input_tokens"], row["cached_input_tokens"], row["output_tokens"]) == (600, 400, 200)


def hang_up_after(daemon, request: dict, session: str, key: str = "TEAM_OPEN_KEY") -> socket.socket:
    """A request sent on a raw connection (closed by the caller: the client leaves)."""
    content = orjson.dumps(request)
    sock = socket.create_connection(("127.0.0.1", daemon.port))
    sock.sendall(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                 b"x-api-key: %s\r\nx-claude-code-session-id: %s\r\ncontent-length: %d\r\n\r\n"
                 % (KEYS[key].encode(), session.encode(), len(content)) + content)
    return sock


def lines_of(daemon, session: str) -> list[dict]:
    """The access lines of a session's requests."""
    return [line for line in access_lines(daemon).values() if line["session_id"] == session]


def sharing(daemon) -> float:
    """How many requests on `daemon` follow a shared call now (its /metrics gauge)."""
    return parse_prometheus(httpx2.get(daemon.url + "/metrics", timeout=10).text)["ccproxyd_shared_call_requests"]


def test_followers_that_leave_before_their_first_byte_are_written_once(team, fake, redis_server):
    """The provider takes 3 s to answer; a follower on A and one on B hang up before any byte came:
    each still gets its one access line (it got nothing and paid nothing: no ledger row)."""
    _, (a, b, _) = team
    fake.push(Script(events=[chunk({"role": "assistant", "content": ""}), chunk({"content": "late"}),
                             chunk(finish="stop"), chunk(choices=False, usage=usage())], first_byte_delay=3.0))
    request = body("asked, then left before the answer began", stream=True)
    tag = f"left-{time.time_ns()}"
    results: dict = {}
    leader = threading.Thread(target=lambda: results.update(a=post(a, request)))
    leader.start()
    wait_for(lambda: len(fake.requests) == 1, what="A's call to reach the provider")
    here, there = hang_up_after(a, request, f"{tag}-a"), hang_up_after(b, request, f"{tag}-b")
    wait_for(lambda: following(redis_server) == 1, what="B following A's flight")
    wait_for(lambda: sharing(a) == 2, what="A's own follower joining its flight")
    here.close()
    there.close()
    leader.join(30)
    assert results["a"].status_code == 200 and '"late"' in results["a"].text and len(fake.requests) == 1
    for daemon, session in ((a, f"{tag}-a"), (b, f"{tag}-b")):
        wait_for(lambda: lines_of(daemon, session), what=f"the access line of {session}")
        time.sleep(0.2)                                 # and no second one
        (line,) = lines_of(daemon, session)
        assert (line["status"], line["cache"], line["error_type"]) == (200, "hit", None)
        assert (line["input_tokens"], line["output_tokens"], line["cost_usd"], line["savings_usd"]) == (0, 0, None, None)
        rows = httpx2.get(daemon.url + "/spend", params={"by": "session"}, timeout=10,
                          headers={"x-api-key": KEYS["TEAM_OPEN_KEY"]}).json()["rows"]
        assert session not in {row["key"] for row in rows}


class Asking:
    """Requests sent from threads, each answer (or the transport's error) kept by name."""

    def __init__(self, tag: str, key: str = "TEAM_OPEN_KEY") -> None:
        self.tag, self.key = tag, key
        self.answers: dict[str, httpx2.Response | httpx2.HTTPError] = {}
        self.threads: list[threading.Thread] = []

    def send(self, name: str, daemon, request: dict) -> None:
        def one() -> None:
            try:
                self.answers[name] = post(daemon, request, key=self.key,
                                          **{"x-claude-code-session-id": f"{self.tag}-{name}"})
            except httpx2.HTTPError as exc:             # a daemon the test killed
                self.answers[name] = exc
        thread = threading.Thread(target=one)
        thread.start()
        self.threads.append(thread)

    def wait(self, timeout: float = 60) -> None:
        for thread in self.threads:
            thread.join(timeout)
        assert not any(thread.is_alive() for thread in self.threads), "a request did not end"


def test_a_follower_that_calls_the_provider_itself_when_its_leader_dies_pays_for_that_call(team, fake, redis_server):
    """D leads a call and is killed before its answer began (its lease lapses after 15 s); B and C,
    which followed it, then call the provider themselves.  On each, the request that started following
    there pays for that call, as a leader does (its line, its ledger row, the client's budget); the
    other request there follows it and pays nothing.  C's first request hung up before the takeover:
    it pays all the same, written when C's call ends, with the status it had (200)."""
    _, (a, b, c) = team
    doomed = member(a.log_path.parent, f"d{time.time_ns()}", redis_server)
    fake.push(Script(status=400, body={"error": {"message": "never read"}}, first_byte_delay=5.0),
              text_script("taken ", "over", use=REASONED), text_script("taken ", "over", use=REASONED))
    request = body("asked of a daemon that is then killed", stream=True)
    asking = Asking(f"takeover-{time.time_ns()}", key="TEAM_DAVE_KEY")
    spent = health(b)["clients"]["TEAM_DAVE_KEY"]["spent_usd"]["day"]
    try:
        asking.send("d", doomed, request)
        wait_for(lambda: len(fake.requests) == 1, what="D's call to reach the provider")
        asking.send("b-first", b, request)
        wait_for(lambda: following(redis_server) == 1, what="B following D's flight")
        gone = hang_up_after(c, request, f"{asking.tag}-c-first", key="TEAM_DAVE_KEY")
        wait_for(lambda: following(redis_server) == 2, what="C following D's flight")
        asking.send("b-second", b, dict(request, stream=False))
        asking.send("c-second", c, request)
        wait_for(lambda: sharing(b) == sharing(c) == 2, what="both joining their daemon's flight")
        gone.close()
        doomed.proc.kill()                              # before its answer began, and before it renewed its lease
        asking.wait()
    finally:
        doomed.stop()
    assert len(fake.requests) == 3                      # D's, then B's and C's own
    answers = asking.answers
    assert [answers[n].status_code for n in ("b-first", "b-second", "c-second")] == [200, 200, 200]
    assert '"text":"taken over"' in answers["b-first"].text and "event: message_stop" in answers["b-first"].text
    assert answers["b-second"].json()["content"][0]["text"] == "taken over"
    assert [answers[n].headers["x-ccproxyd-cache"] for n in ("b-first", "b-second", "c-second")] == [
        "miss", "hit", "hit"]
    wait_for(lambda: lines_of(c, f"{asking.tag}-c-first"), what="the line of C's first request")
    time.sleep(0.2)                                     # and no second one
    (gone_line,) = lines_of(c, f"{asking.tag}-c-first")
    first = [logged(b, answers["b-first"].headers["request-id"]), gone_line]
    second = [logged(d, answers[n].headers["request-id"]) for d, n in ((b, "b-second"), (c, "c-second"))]
    for line in first:                                  # each paid its daemon's call
        assert (line["cache"], line["provider"], line["upstream_model"], line["status"], line["error_type"]) == (
            "miss", "mock", "gpt-mock", 200, None)
        assert (line["input_tokens"], line["cached_tokens"], line["output_tokens"]) == (600, 400, 200)
        assert line["cost_usd"] == pytest.approx(LEAD_COST) and line["claude_price_usd"] == pytest.approx(CLAUDE)
        assert line["savings_usd"] == pytest.approx(CLAUDE - LEAD_COST)
    for line in second:                                 # and the other follower there did not
        assert (line["cache"], line["provider"], line["status"]) == ("hit", "mock", 200)
        assert line["cost_usd"] == 0 and line["savings_usd"] == pytest.approx(CLAUDE)
    for daemon, name, cost, hits in ((b, "b-first", LEAD_COST, 0), (c, "c-first", LEAD_COST, 0),
                                     (b, "b-second", 0, 1), (c, "c-second", 0, 1)):
        row = ledger_row(daemon, f"{asking.tag}-{name}")
        assert (row["requests"], row["cache_hits"]) == (1, hits) and row["cost_usd"] == pytest.approx(cost)
    wait_for(lambda: health(b)["clients"]["TEAM_DAVE_KEY"]["spent_usd"]["day"] == pytest.approx(spent + 2 * LEAD_COST),
             what="the client's budget charged for both calls")


@pytest.mark.parametrize("failure", ["before its answer", "mid-answer"])
def test_followers_on_other_daemons_of_a_failed_call_are_recorded_as_a_local_follower_is(team, fake, redis_server,
                                                                                         failure):
    """A's call fails, before its answer began (the provider's 400) or mid-answer (the connection
    cut).  A follower on B records what a follower on A records: the status and type it got, which
    provider and model failed after how many attempts, and for the cut call, who answered (its usage
    estimated) and nothing of what it used."""
    _, (a, b, _) = team
    gate = Gate()
    if failure == "before its answer":
        fake.push(Script(status=400, body={"error": {"message": "no such parameter", "type": "invalid_request_error"}},
                         first_byte_delay=1.5))
        expected = (400, "invalid_request_error", "mock", "gpt-mock", 1, False)
    else:
        fake.push(Script(events=[chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}), gate,
                                 chunk({"content": "lo"})], cut=True))
        expected = (500, "api_error", "mock", "gpt-mock", 1, True)
    request = body(f"a call that fails {failure}", stream=True)
    asking = Asking(f"failed-{time.time_ns()}")
    asking.send("lead", a, request)
    wait_for(lambda: len(fake.requests) == 1, what="A's call to reach the provider")
    asking.send("a", a, request)
    asking.send("b", b, request)
    wait_for(lambda: following(redis_server) == 1, what="B following A's flight")
    wait_for(lambda: sharing(a) == 2, what="A's own follower joining its flight")
    gate.open()
    asking.wait()
    assert len(fake.requests) == 1
    here, there = (logged(d, asking.answers[n].headers["request-id"]) for d, n in ((a, "a"), (b, "b")))
    for line in (here, there):
        assert (line["status"], line["error_type"], line["provider"], line["upstream_model"], line["attempts"],
                line["usage_estimated"]) == expected
        assert (line["cache"], line["input_tokens"], line["output_tokens"], line["cost_usd"]) == ("hit", 0, 0, None)
    assert account(there) == account(here)


def test_a_429_on_one_daemon_holds_the_provider_back_on_the_others(team, fake):
    _, (a, b, c) = team
    fake.push(Script(status=429, headers={"retry-after": "30"},
                     body={"error": {"message": "slow down", "type": "rate_limit_exceeded"}}))
    first = post(a, body("hi", model="claude-cool-1"))
    assert first.status_code == 429 and first.headers["retry-after"] == "30"
    assert len(fake.requests) == 1
    for daemon in (b, c):
        wait_for(lambda: health(daemon)["providers"].get("cool", {}).get("retry_after", 0) > 20,
                 what="the hold to reach the other daemons")
        held = post(daemon, body("hi again", model="claude-cool-1"))
        assert held.status_code == 529, held.text
        assert held.json()["error"]["type"] == "overloaded_error" and "cooling down" in held.json()["error"]["message"]
        assert 20 < int(held.headers["retry-after"]) <= 30
    assert len(fake.requests) == 1


def test_an_rpm_limit_counts_across_the_fleet(team, fake):
    _, daemons = team
    started = time.monotonic()

    def one(i: int) -> httpx2.Response:
        return post(daemons[i % 3], body(f"request {i}"), key="TEAM_ALICE_KEY", **{"cache-control": "no-cache"})
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(one, range(66)))
    assert time.monotonic() - started < 60                 # all 66 inside one window
    admitted = [r for r in answers if r.status_code == 200]
    limited = [r for r in answers if r.status_code == 429]
    assert len(admitted) == 60 and len(limited) == 6 and len(fake.requests) == 60
    for r in limited:
        assert r.json()["error"]["type"] == "rate_limit_error"
        assert "TEAM_ALICE_KEY" in r.json()["error"]["message"] and "rpm" in r.json()["error"]["message"]
        assert 1 <= int(r.headers["retry-after"]) <= 60
    use = health(daemons[1])["clients"]["TEAM_ALICE_KEY"]
    assert use["scope"] == "fleet" and use["requests_last_minute"] == 60


def test_a_daily_budget_stops_a_client_across_the_fleet(team, fake):
    _, (a, b, c) = team
    # 10 prompt + 5 completion tokens at $1000 per million each: $0.015 a request; the budget is $0.02
    assert post(a, body("budget 1"), key="TEAM_BOB_KEY").status_code == 200
    assert post(b, body("budget 2"), key="TEAM_BOB_KEY").status_code == 200      # $0.015 spent: still under
    for daemon in (c, a):
        refused = post(daemon, body("budget 3"), key="TEAM_BOB_KEY")
        assert refused.status_code == 402, refused.text
        error = refused.json()["error"]
        assert error["type"] == "billing_error"
        assert "daily budget of $0.02" in error["message"] and "budget_usd.day" in error["message"]
        assert "resets at 2026-12-08T00:00:00Z" in error["message"]              # the day after NOW
    assert len(fake.requests) == 2
    use = health(b)["clients"]["TEAM_BOB_KEY"]
    assert use["spent_usd"]["day"] == pytest.approx(0.03) and use["limits"]["budget_usd"]["day"] == 0.02
    metrics = httpx2.get(c.url + "/metrics").text
    assert 'ccproxyd_client_spend_usd{client="TEAM_BOB_KEY",period="day"} 0.03' in metrics
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CCPROXYD_"))}
    shown = subprocess.run([sys.executable, "-m", "ccproxyd", "costs", "--by", "client", "--url", c.url],
                           env=dict(env, CCPROXYD_CLIENT_KEY=KEYS["TEAM_OPEN_KEY"]), capture_output=True, text=True,
                           timeout=60)
    assert shown.returncode == 0, shown.stderr
    bob = next(line for line in shown.stdout.splitlines() if line.startswith("TEAM_BOB_KEY: "))
    assert "day $0.0300 of $0.02 (150%), resets 2026-12-08T00:00:00Z" in bob and "month $0.0300 of $10 (0%)" in bob
    assert bob.endswith("[fleet]")


def test_a_model_outside_the_clients_globs_is_refused(team, fake):
    _, (a, _, _) = team
    refused = post(a, body("hi"), key="TEAM_CAROL_KEY")
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "permission_error"
    assert "claude-haiku*" in refused.json()["error"]["message"]
    assert post(a, body("hi", model="claude-haiku-4-5"), key="TEAM_CAROL_KEY").status_code == 200


def test_a_thread_started_on_one_daemon_continues_on_another(team, fake):
    _, (a, b, _) = team
    beta = {"anthropic-beta": "message-threads-2026-08-12"}
    fake.push(text_script("first answer"), text_script("second answer"))
    first = post(a, body("hello", system="sys", thread={"type": "create"}), **beta)
    assert first.status_code == 200, first.text
    then = post(b, {"model": "claude-sonnet-4-5", "max_tokens": 50, "messages": [{"role": "user", "content": "and?"}],
                    "thread": {"type": "continue", "previous_message_id": first.json()["id"]}}, **beta)
    assert then.status_code == 200, then.text
    assert then.json()["content"][0]["text"] == "second answer"
    sent = fake.requests[-1]["body"]["messages"]
    assert [m["content"] for m in sent] == ["sys", "hello", "first answer", "and?"]
    again = post(a, {"model": "claude-sonnet-4-5", "max_tokens": 50, "messages": [{"role": "user", "content": "x"}],
                     "thread": {"type": "continue", "previous_message_id": first.json()["id"]}}, **beta)
    assert again.status_code == 400 and again.json()["error"]["details"]["error_code"] == "thread_already_continued"


def test_redis_killed_mid_load_loses_no_request_and_sharing_resumes(team, fake, redis_server):
    _, daemons = team
    fake.default = Script(events=[chunk({"role": "assistant", "content": ""}), 0.02, chunk({"content": "steady"}),
                                  chunk(finish="stop"), chunk(choices=False, usage=usage())])
    killed = threading.Event()

    def one(i: int) -> httpx2.Response:
        if i == 12:
            redis_server.kill()
            killed.set()
        if i == 27:
            wait_for(lambda: any(health(d)["redis"]["state"] == "down" for d in daemons), what="an outage seen")
            redis_server.start()
        return post(daemons[i % 3], body(f"load {i}", stream=i % 2 == 0))
    try:
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(one, range(42)))
    finally:
        fake.default = text_script("Hello", " from", " fake")
    assert killed.is_set()
    for i, r in enumerate(answers):
        assert r.status_code == 200, r.text
        if i % 2 == 0:
            assert "steady" in r.text and "event: message_stop" in r.text and "event: error" not in r.text
        else:
            assert r.json()["content"][0]["text"] == "steady"
    assert len(fake.requests) == 42
    for daemon in daemons:
        wait_for(lambda: health(daemon)["redis"]["state"] == "up", what="the daemons to reconnect")
    counts = [d.log_path.read_text().count("is unreachable") for d in daemons]
    assert max(counts) == 1 and sum(counts) >= 1, counts  # once per daemon that saw the outage, not per request
    metrics = httpx2.get(daemons[0].url + "/metrics").text
    assert "ccproxyd_redis_up 1" in metrics
    # shared again: an answer stored through one daemon is a hit on the others
    fake.reset()
    first = post(daemons[0], body("after the outage"))
    assert first.headers["x-ccproxyd-cache"] == "miss"
    for daemon in daemons[1:]:
        assert post(daemon, body("after the outage")).headers["x-ccproxyd-cache"] == "hit"
    assert len(fake.requests) == 1


def test_haproxy_keeps_a_session_on_one_daemon_and_drops_a_stopped_one(team, fake, tmp_path):
    """config/haproxy.cfg as shipped, with this test's ports and a 0.1 s check interval.  Runs last:
    it stops daemon holding the first session."""
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed (make test installs it)")
    _, daemons = team
    port = free_port()
    text = (ROOT / "config" / "haproxy.cfg").read_text().replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    for daemon, default in zip(daemons, (8082, 8083, 8084)):
        text = text.replace(f"127.0.0.1:{default}", f"127.0.0.1:{daemon.port}")
    (tmp_path / "haproxy.cfg").write_text(text.replace("inter 1s", "inter 100ms"))
    proxy = subprocess.Popen(["haproxy", "-db", "-f", str(tmp_path / "haproxy.cfg")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    balancer = type("Balancer", (), {"url": f"http://127.0.0.1:{port}"})()
    try:
        wait_for(lambda: _answers(balancer), what="haproxy to listen")

        def served_by(session: str) -> list[int]:
            return [i for i, d in enumerate(daemons) if f'"session_id":"{session}"' in d.log_path.read_text()]
        sessions = [f"team-session-{n}" for n in range(9)]
        for session in sessions:
            for turn in range(3):
                r = post(balancer, body(f"{session} turn {turn}"), **{"x-claude-code-session-id": session})
                assert r.status_code == 200, r.text
        homes = {session: served_by(session) for session in sessions}
        assert all(len(home) == 1 for home in homes.values()), homes      # each session on one daemon
        assert len({home[0] for home in homes.values()}) >= 2              # and the sessions spread
        stopped = homes[sessions[0]][0]
        daemons[stopped].stop()                                            # drains, closes its listener
        for session in sessions:
            r = post(balancer, body(f"{session} after the stop"), **{"x-claude-code-session-id": session})
            assert r.status_code == 200, r.text
            now = served_by(session)
            if homes[session][0] == stopped:
                assert len(now) == 2 and stopped in now                    # moved to one other daemon
            else:
                assert now == homes[session]                               # the others did not move
    finally:
        proxy.terminate()
        proxy.wait(5)


def _answers(balancer) -> bool:
    try:
        return httpx2.get(balancer.url + "/health", timeout=1).status_code == 200
    except httpx2.HTTPError:
        return False
