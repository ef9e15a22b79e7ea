"""Message threads (beta message-threads-2026-08-12) with the official SDKs' tool runners, which thread by
default: the upstream must see the same conversation as without threads, a restart that loses the
thread store must still end in the right answer (the SDK replays), and each refusal has the API's shape."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import anthropic
import httpx2
import orjson
import pytest

from .conftest import CANARY, TEST_ROUTES, Daemon, cached_routes, free_port
from .fake_upstream import chunk, text_script, tool_script

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
ROOT = Path(__file__).resolve().parent.parent
SYSTEM = "You are a weather assistant. Answer in one line."
QUESTION = "What is the weather in Paris, and then in Rome?"
CITIES = ("Paris", "Rome")
WEATHER = {"Paris": "sunny in Paris", "Rome": "rain in Rome"}
FINAL = "Paris is sunny; Rome has rain."
BETA = "message-threads-2026-08-12"


def weather_responder(body: dict):
    """The fake model (reasoning first, on the reasoner route) asks for each city in turn, then answers from
    the tool results it was sent.  A request that lost the question or the tools gets an answer that says so."""
    script = weather_answer(body)
    if body["model"] == "reasoner-up":
        turn = sum(m["role"] == "tool" for m in body["messages"])
        script.events.insert(0, chunk({"reasoning_content": f"Turn {turn}: which city is next?"}))
    return script


def weather_answer(body: dict):
    messages = body["messages"]
    results = [m["content"] for m in messages if m["role"] == "tool"]
    asked = any(m["role"] == "user" and QUESTION in json.dumps(m["content"]) for m in messages)
    has_tool = any(t["function"]["name"] == "get_weather" for t in body.get("tools") or [])
    if not asked or not has_tool:
        return text_script("I do not know what you mean.")
    if len(results) < len(CITIES):
        city = CITIES[len(results)]
        return tool_script("get_weather", json.dumps({"city": city}), call_id=f"call_{city.lower()}")
    if results != [WEATHER[c] for c in CITIES]:
        return text_script("The tool results are wrong.")
    return text_script(FINAL)


class Recorder:
    """What the SDK sent to ccproxyd: (path, anthropic-beta header, body) per request."""

    def __init__(self) -> None:
        self.sent: list[dict] = []

    def __call__(self, request) -> None:
        if request.url.path.endswith("/messages"):
            self.sent.append({"beta": request.headers.get("anthropic-beta", ""),
                              "body": json.loads(request.content)})


def sdk_client(url: str, recorder: Recorder) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key="sk-client", max_retries=0,
                               http_client=httpx2.Client(event_hooks={"request": [recorder]}))


def run_python_runner(client: anthropic.Anthropic, *, stream: bool, thread: bool, between=None, **params) -> str:
    @anthropic.beta_tool
    def get_weather(city: str) -> str:
        """The current weather in a city.

        Args:
            city: the city's name
        """
        if between is not None:
            between(city)
        return WEATHER[city]

    extra = dict(params) if thread else dict(params, thread=False)
    extra.setdefault("model", "claude-sonnet-4-5")
    runner = client.beta.messages.tool_runner(max_tokens=2000, system=SYSTEM,
                                              messages=[{"role": "user", "content": QUESTION}], tools=[get_weather],
                                              stream=stream, **extra)
    if stream:
        last = None
        for message_stream in runner:
            last = message_stream.get_final_message()
    else:
        last = runner.until_done()
    return "".join(block.text for block in last.content if block.type == "text")


def upstream_bodies(fake) -> list[dict]:
    return [request["body"] for request in fake.requests]


THINKING = {"model": "claude-reasoner-1", "thinking": {"type": "enabled", "budget_tokens": 1024}}


@pytest.mark.parametrize("stream, params", [(False, {}), (True, {}), (True, THINKING)],
                         ids=["create", "stream", "thinking"])
def test_python_tool_runner_threaded_sends_the_same_conversation_upstream(daemon, fake, stream, params):
    fake.responder = weather_responder
    plain = Recorder()
    assert run_python_runner(sdk_client(daemon.url, plain), stream=stream, thread=False, **params) == FINAL
    unthreaded = upstream_bodies(fake)
    fake.requests.clear()
    threaded = Recorder()
    assert run_python_runner(sdk_client(daemon.url, threaded), stream=stream, thread=True, **params) == FINAL
    assert upstream_bodies(fake) == unthreaded
    assert len(unthreaded) == 3
    if params:                                  # each turn's reasoning went back to the model with its tool call
        assert [m.get("reasoning_content") for m in unthreaded[-1]["messages"] if m["role"] == "assistant"] == [
            "Turn 0: which city is next?", "Turn 1: which city is next?"]
    # the SDK really threaded: a create with everything, then continues with only the tool result
    first, *rest = threaded.sent
    assert BETA in first["beta"] and first["body"]["thread"] == {"type": "create"}
    assert first["body"]["system"] == SYSTEM and first["body"]["tools"]
    for turn in rest:
        body = turn["body"]
        assert BETA in turn["beta"] and body["thread"]["type"] == "continue"
        assert body["thread"]["previous_message_id"].startswith("msg_")
        assert "system" not in body and "tools" not in body
        assert [m["content"][0]["type"] for m in body["messages"]] == ["tool_result"]
    assert len(rest) == 2
    assert all("thread" not in turn["body"] for turn in plain.sent)


def test_restart_that_loses_the_threads_ends_right_through_the_replay(upstream, fake, tmp_path):
    fake.responder = weather_responder
    routes = tmp_path / "routes.yaml"
    routes.write_text(TEST_ROUTES.format(url=upstream.url, dead_port=free_port()))
    port = free_port()
    daemons = [Daemon(routes, port=port)]

    def restart(city: str) -> None:
        if city == "Paris":                  # between the first reply and the first continue
            daemons[0].stop()
            daemons.append(Daemon(routes, port=port))
    try:
        recorder = Recorder()
        client = sdk_client(daemons[0].url, recorder)
        assert run_python_runner(client, stream=True, thread=True, between=restart) == FINAL
    finally:
        daemons[-1].stop()
    kinds = [turn["body"].get("thread", {}).get("type") for turn in recorder.sent]
    # create; continue -> thread_not_found; the whole history again under a new thread; continue
    assert kinds == ["create", "continue", "create", "continue"]
    assert len(recorder.sent[2]["body"]["messages"]) == 3
    assert [len(b["messages"]) for b in upstream_bodies(fake)] == [2, 4, 6]


def test_python_thread_api_streams_and_continues(daemon, fake):
    """`client.beta.messages.thread()` itself (unsupported_request_behavior "error"): a stream, then a send."""
    fake.push(text_script("Bonjour"), text_script("Au revoir"))
    recorder = Recorder()
    thread = sdk_client(daemon.url, recorder).beta.messages.thread(model="claude-x", max_tokens=50, system="be French")
    with thread.stream({"role": "user", "content": "hello"}) as s:
        assert "".join(s.text_stream) == "Bonjour"
    first_id = thread.previous_message_id
    assert thread.send({"role": "user", "content": "bye"}).content[0].text == "Au revoir"
    assert recorder.sent[1]["body"]["thread"] == {"type": "continue", "previous_message_id": first_id}
    assert fake.requests[1]["body"]["messages"] == [
        {"role": "system", "content": "be French"}, {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "Bonjour"}, {"role": "user", "content": "bye"}]


def test_threaded_turns_bypass_the_response_cache(upstream, fake, tmp_path):
    """Two identical creates on a cached route each reach the upstream and get a thread point of their own."""
    d = Daemon(cached_routes(tmp_path, upstream.url), extra_args=("--cache-dir", str(tmp_path / "cache")))
    try:
        body = {"model": "claude-x", "max_tokens": 10, "thread": {"type": "create"},
                "messages": [{"role": "user", "content": "same question"}]}
        fake.push(text_script("one"), text_script("two"), text_script("three"), text_script("four"))
        answers = [post(d, body) for _ in range(2)]
        assert [a.json()["content"][0]["text"] for a in answers] == ["one", "two"]
        assert all("x-ccproxyd-cache" not in a.headers for a in answers)
        for a in answers:
            assert cont(d, a.json()["id"]).status_code == 200
        assert len(fake.requests) == 4
    finally:
        d.stop()


# ------------------------------------------------------------ the TypeScript SDK, through node

NODE_SDK = os.environ.get("CCPROXYD_NODE_SDK", str(ROOT / ".node-sdk"))
TS_RUNNER = Path(__file__).with_name("ts_tool_runner.cjs")
# the Makefile's NODE_SDK_VERSION (make test passes it; the newest on npm when it was last pinned)
TS_SDK_VERSION = os.environ.get("CCPROXYD_NODE_SDK_VERSION", "1.17.0")


def run_ts_runner(url: str, *, stream: bool, thread: bool) -> dict:
    """Never skipped: `make test` installs the SDK in .node-sdk (`make node-sdk`)."""
    package = Path(NODE_SDK) / "node_modules" / "@anthropic-ai" / "sdk" / "package.json"
    assert package.exists() and shutil.which("node"), f"@anthropic-ai/sdk is not installed under {NODE_SDK}: run `make node-sdk`"
    assert json.loads(package.read_text())["version"] == TS_SDK_VERSION
    env = {**os.environ, "NODE_PATH": str(Path(NODE_SDK) / "node_modules"), "ANTHROPIC_BASE_URL": url,
           "ANTHROPIC_API_KEY": "sk-client"}
    args = ["node", str(TS_RUNNER), "--stream" if stream else "--no-stream", "--thread" if thread else "--no-thread"]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, cwd=NODE_SDK)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_typescript_tool_runner_threaded_sends_the_same_conversation_upstream(daemon, fake, stream):
    fake.responder = weather_responder
    plain = run_ts_runner(daemon.url, stream=stream, thread=False)
    assert plain["text"] == FINAL, plain
    unthreaded = upstream_bodies(fake)
    fake.requests.clear()
    threaded = run_ts_runner(daemon.url, stream=stream, thread=True)
    assert threaded["text"] == FINAL, threaded
    assert upstream_bodies(fake) == unthreaded and len(unthreaded) == 3
    assert [t.get("type") for t in threaded["threads"]] == ["create", "continue", "continue"]
    assert all(BETA in beta for beta in threaded["betas"])
    assert plain["threads"] == [None, None, None]


# ------------------------------------------------------------ refusals, in the API's shape

def post(daemon, body: dict, **headers) -> httpx2.Response:
    return httpx2.post(daemon.url + "/v1/messages?beta=true", json=body, timeout=30,
                       headers={"anthropic-beta": BETA, **headers})


def create(daemon, fake, text: str = "first answer", **extra) -> dict:
    fake.push(text_script(text))
    body = {"model": "claude-sonnet-4-5", "max_tokens": 100, "system": "sys", "thread": {"type": "create"},
            "messages": [{"role": "user", "content": "hello"}], **extra}
    r = post(daemon, body)
    assert r.status_code == 200, r.text
    return r.json()


def cont(daemon, previous: str, content: str = "and then?", **extra) -> httpx2.Response:
    return post(daemon, {"model": "claude-sonnet-4-5", "max_tokens": 100, **extra,
                         "thread": {"type": "continue", "previous_message_id": previous},
                         "messages": [{"role": "user", "content": content}]})


def assert_thread_error(r: httpx2.Response, status: int, etype: str, code: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == etype
    assert body["error"]["details"]["error_code"] == code
    assert body["error"]["message"] and body["request_id"] == r.headers["request-id"]
    return body


def test_continue_rebuilds_the_whole_request(daemon, fake):
    before = httpx2.get(daemon.url + "/health").json()["threads"]
    first = create(daemon, fake)
    after = httpx2.get(daemon.url + "/health").json()["threads"]
    assert after["state"] == "on" and after["backend"] == "memory" and after["entries"] == before["entries"] + 1
    fake.push(text_script("second answer"))
    r = cont(daemon, first["id"], temperature=0.5)
    assert r.status_code == 200 and r.json()["content"][0]["text"] == "second answer"
    sent = fake.requests[-1]["body"]
    assert sent["messages"] == [{"role": "system", "content": "sys"}, {"role": "user", "content": "hello"},
                                {"role": "assistant", "content": "first answer"},
                                {"role": "user", "content": "and then?"}]
    assert sent["temperature"] == 0.5            # the turn's own fields


def test_unknown_thread_is_thread_not_found(daemon, fake):
    r = cont(daemon, "msg_0123456789abcdef01234567")
    assert_thread_error(r, 404, "not_found_error", "thread_not_found")
    with pytest.raises(anthropic.NotFoundError) as caught:          # the SDK's own class for it
        anthropic.Anthropic(base_url=daemon.url, api_key="k", max_retries=0).beta.messages.create(
            model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "x"}], betas=[BETA],
            thread={"type": "continue", "previous_message_id": "msg_gone"})
    assert type(caught.value).__name__ == "ThreadNotFoundError"
    assert caught.value.error_code == "thread_not_found"
    assert not fake.requests


def test_second_continue_of_one_reply_is_thread_already_continued(daemon, fake):
    first = create(daemon, fake)
    fake.push(text_script("second"))
    assert cont(daemon, first["id"]).status_code == 200
    assert_thread_error(cont(daemon, first["id"]), 400, "invalid_request_error", "thread_already_continued")


def test_continue_while_another_runs_is_thread_continue_in_flight(daemon, fake):
    first = create(daemon, fake)
    slow = text_script("slow answer")
    slow.first_byte_delay = 1.0
    fake.push(slow)
    import threading
    results = {}
    racing = threading.Thread(target=lambda: results.setdefault("first", cont(daemon, first["id"])))
    racing.start()
    deadline = 50
    while len(fake.requests) < 2 and deadline:                     # the first continue reached the upstream
        deadline -= 1
        threading.Event().wait(0.05)
    assert_thread_error(cont(daemon, first["id"]), 400, "invalid_request_error", "thread_continue_in_flight")
    racing.join(10)
    assert results["first"].status_code == 200


def test_failed_continue_can_be_retried(daemon, fake):
    first = create(daemon, fake)
    from .fake_upstream import Script
    fake.push(Script(status=400, body={"error": {"message": "bad request upstream"}}))
    assert cont(daemon, first["id"]).status_code == 400
    fake.push(text_script("retried"))
    r = cont(daemon, first["id"])
    assert r.status_code == 200 and r.json()["content"][0]["text"] == "retried"


def test_threads_off_is_thread_unsupported_request(upstream, fake, tmp_path):
    routes = tmp_path / "routes.yaml"
    routes.write_text(TEST_ROUTES.format(url=upstream.url, dead_port=free_port()))
    d = Daemon(routes, extra_args=("--no-cache", "--thread-ttl", "0"))
    try:
        r = post(d, {"model": "claude-x", "max_tokens": 10, "thread": {"type": "create"},
                     "messages": [{"role": "user", "content": "hi"}]})
        body = assert_thread_error(r, 400, "invalid_request_error", "thread_unsupported_request")
        assert httpx2.get(d.url + "/health").json()["threads"] == {"state": "off"}
        assert "unsupported" not in body["error"]["details"]
        # a tool runner then goes on without threads, and still gets the right answer
        fake.responder = weather_responder
        recorder = Recorder()
        assert run_python_runner(sdk_client(d.url, recorder), stream=False, thread=True) == FINAL
        kinds = [turn["body"].get("thread", {}).get("type") for turn in recorder.sent]
        assert kinds == ["create", None, None, None]
    finally:
        d.stop()


@pytest.mark.parametrize("thread, needle", [
    ("create", "thread: must be an object, got a string"),
    ({"type": "fork"}, "thread.type: must be 'create' or 'continue', got 'fork'"),
    ({}, "thread.type: must be 'create' or 'continue', got None"),
    ({"type": "continue"}, "thread.previous_message_id: field required"),
    ({"type": "continue", "previous_message_id": 7}, "thread.previous_message_id: must be a non-empty string"),
    ({"type": "continue", "previous_message_id": ""}, "thread.previous_message_id: must be a non-empty string"),
    ({"type": "create", "previous_message_id": "msg_1"}, "thread.previous_message_id: not a field of a thread"),
])
def test_wrong_thread_shapes_are_400_naming_the_field(daemon, fake, thread, needle):
    r = post(daemon, {"model": "claude-x", "max_tokens": 10, "thread": thread,
                      "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert needle in r.json()["error"]["message"], r.text
    assert "details" not in r.json()["error"]


@pytest.mark.parametrize("field, value", [("system", "again"), ("tools", [{"name": "t", "input_schema": {}}])])
def test_continue_carrying_a_kept_field_is_400(daemon, fake, field, value):
    r = cont(daemon, "msg_whatever", **{field: value})
    assert r.status_code == 400 and f"{field}: must not be sent with thread.type 'continue'" in r.json()["error"]["message"]


def test_thread_state_holds_no_secret(daemon, fake):
    """The state a continue rebuilds from is what the client sent: the provider key never reaches it.
    Here: the rebuilt request the upstream sees carries the key only in its Authorization header."""
    first = create(daemon, fake)
    fake.push(text_script("ok"))
    assert cont(daemon, first["id"], metadata={"user_id": "u1"}).status_code == 200
    assert CANARY not in orjson.dumps(fake.requests[-1]["body"]).decode()


def test_threads_are_bound_to_the_client_key(upstream, fake, tmp_path):
    """With client_keys, a thread point is its client's: another key's continue finds nothing."""
    routes = tmp_path / "routes.yaml"
    routes.write_text(TEST_ROUTES.format(url=upstream.url, dead_port=free_port()) + "client_keys: [KEY_A, KEY_B]\n")
    d = Daemon(routes, env={"KEY_A": "client-a-secret", "KEY_B": "client-b-secret"})
    try:
        fake.push(text_script("for a"))
        body = {"model": "claude-x", "max_tokens": 10, "thread": {"type": "create"},
                "messages": [{"role": "user", "content": "hi"}]}
        first = post(d, body, **{"x-api-key": "client-a-secret"}).json()
        again = {"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "more"}],
                 "thread": {"type": "continue", "previous_message_id": first["id"]}}
        assert_thread_error(post(d, again, **{"x-api-key": "client-b-secret"}), 404, "not_found_error",
                            "thread_not_found")
        fake.push(text_script("for a again"))
        assert post(d, again, **{"x-api-key": "client-a-secret"}).status_code == 200
    finally:
        d.stop()


# ------------------------------------------------------------ the store itself (no daemon)

from ccproxyd.flow import threads as threads_module
from ccproxyd.state import thread_store  # noqa: E402
from ccproxyd.errors import ThreadUnsupported, to_anthropic  # noqa: E402
from .support import Clock


def run(coro):
    import asyncio
    return asyncio.run(coro)


def test_memory_backend_ttl_claims_and_tombstones():
    clock = Clock()
    store = thread_store.MemoryBackend(10_000, clock)
    run(store.put("msg_a", b"x" * 100, None, ttl=60))
    assert run(store.claim("msg_a", "someone")) == (thread_store.MISSING, None)     # not this owner's
    assert run(store.claim("msg_a", None)) == (thread_store.FOUND, b"x" * 100)
    assert run(store.claim("msg_a", None))[0] == thread_store.IN_FLIGHT
    run(store.release("msg_a", continued=False))                                      # the turn failed
    assert run(store.claim("msg_a", None))[0] == thread_store.FOUND
    run(store.release("msg_a", continued=True))
    assert run(store.claim("msg_a", None))[0] == thread_store.CONTINUED
    assert store.bytes == len("msg_a") + thread_store.TOMBSTONE_BYTES               # the record is gone
    clock.now += 61
    assert run(store.claim("msg_a", None))[0] == thread_store.MISSING
    assert store.bytes == 0 and store.stats()["entries"] == 0


def test_memory_backend_stays_within_its_bytes_oldest_first():
    clock = Clock()
    store = thread_store.MemoryBackend(1000, clock)
    for i in range(10):
        run(store.put(f"msg_{i}", b"y" * 300, None, ttl=60))
        clock.now += 1
        assert store.bytes <= 1000
    assert store.evictions == 7
    assert [run(store.claim(f"msg_{i}", None))[0] for i in range(10)] == ["missing"] * 7 + ["found"] * 3
    clock.now += 120                                                       # expired entries go on the next put
    run(store.put("msg_new", b"z", None, ttl=60))
    assert store.stats()["entries"] == 1


def test_a_kept_turn_holds_only_the_conversation():
    store = thread_store.MemoryBackend(1 << 20)
    threads = threads_module.Threads(store, ttl=60, max_record_bytes=1 << 20)
    body = {"model": "claude-x", "max_tokens": 10, "system": "sys", "tools": [{"name": "t"}], "stream": True,
            "metadata": {"user_id": "u"}, "temperature": 0.2, "thread": {"type": "create"},
            "messages": [{"role": "user", "content": "hi"}]}
    turn = run(threads.open(body, "owner-hash"))
    assert "thread" not in turn.body and orjson.loads(turn.raw) == turn.body
    run(turn.keep({"id": "msg_1", "content": [{"type": "text", "text": "hello"}]}))
    state, record = run(store.claim("msg_1", "owner-hash"))
    assert state == "found"
    assert orjson.loads(record) == {"system": "sys", "tools": [{"name": "t"}], "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": [{"type": "text", "text": "hello"}]}]}


def test_a_conversation_over_the_limit_cannot_be_threaded():
    store = thread_store.MemoryBackend(1 << 20)
    threads = threads_module.Threads(store, ttl=60, max_record_bytes=300)
    run(store.put("msg_1", orjson.dumps({"messages": [{"role": "user", "content": "x" * 200}]}), None, 60))
    body = {"model": "m", "max_tokens": 1, "thread": {"type": "continue", "previous_message_id": "msg_1"},
            "messages": [{"role": "user", "content": "y" * 200}]}
    with pytest.raises(ThreadUnsupported) as caught:
        run(threads.open(body, None))
    assert run(store.claim("msg_1", None))[0] == "found"                   # the claim was given back
    status, raw, _ = to_anthropic(caught.value, "req_1")
    assert status == 400 and orjson.loads(raw)["error"]["details"] == {"error_code": "thread_unsupported_request"}


def test_disk_backend_claims_tombstones_and_ttl(tmp_path):
    import time
    store = thread_store.DiskBackend(str(tmp_path / "threads"), 1 << 20)
    try:
        run(store.put("msg_a", b"x" * 100_000, "o", ttl=60))                # past diskcache's file threshold
        assert run(store.claim("msg_a", None)) == (thread_store.MISSING, None)
        assert run(store.claim("msg_a", "o")) == (thread_store.FOUND, b"x" * 100_000)
        assert run(store.claim("msg_a", "o"))[0] == thread_store.IN_FLIGHT
        run(store.release("msg_a", continued=False))
        assert run(store.claim("msg_a", "o"))[0] == thread_store.FOUND
        run(store.release("msg_a", continued=True))
        assert run(store.claim("msg_a", "o"))[0] == thread_store.CONTINUED
        assert store.cache.get("r:msg_a") is None                             # the record is gone
        run(store.put("msg_b", b"y", None, ttl=0.3))
        time.sleep(0.4)
        assert run(store.claim("msg_b", None))[0] == thread_store.MISSING
        assert (tmp_path / "threads").stat().st_mode & 0o777 == 0o700
    finally:
        store.close()


def test_disk_threads_outlive_a_restart(upstream, fake, tmp_path):
    fake.responder = weather_responder
    routes = tmp_path / "routes.yaml"
    routes.write_text(TEST_ROUTES.format(url=upstream.url, dead_port=free_port()))
    port = free_port()
    args = ("--no-cache", "--thread-dir", str(tmp_path / "threads"))
    daemons = [Daemon(routes, port=port, extra_args=args)]

    def restart(city: str) -> None:
        if city == "Paris":
            daemons[0].stop()
            daemons.append(Daemon(routes, port=port, extra_args=args))
    try:
        recorder = Recorder()
        assert run_python_runner(sdk_client(daemons[0].url, recorder), stream=True, thread=True,
                                 between=restart) == FINAL
        assert httpx2.get(daemons[-1].url + "/health").json()["threads"]["backend"] == "disk"
    finally:
        daemons[-1].stop()
    assert [turn["body"]["thread"]["type"] for turn in recorder.sent] == ["create", "continue", "continue"]
    stored = b"".join(p.read_bytes() for p in (tmp_path / "threads").rglob("*") if p.is_file())
    assert QUESTION.encode() in stored                          # the conversation is there...
    assert CANARY.encode() not in stored and b"sk-client" not in stored      # ...and no key, ours or the client's


def test_disk_threads_are_shared_by_the_workers(upstream, fake, tmp_path):
    """Two workers, a new connection for every request: every continue finds its thread, whichever
    worker answered the turn before."""
    fake.responder = weather_responder
    routes = tmp_path / "routes.yaml"
    routes.write_text(TEST_ROUTES.format(url=upstream.url, dead_port=free_port()))
    d = Daemon(routes, extra_args=("--no-cache", "--workers", "2", "--thread-dir", str(tmp_path / "threads")))
    try:
        for _ in range(3):
            recorder = Recorder()
            client = anthropic.Anthropic(base_url=d.url, api_key="k", max_retries=0, http_client=httpx2.Client(
                event_hooks={"request": [recorder]}, limits=httpx2.Limits(max_keepalive_connections=0)))
            assert run_python_runner(client, stream=False, thread=True) == FINAL
            assert [turn["body"]["thread"]["type"] for turn in recorder.sent] == ["create", "continue", "continue"]
    finally:
        d.stop()


def test_the_end_of_a_stream_waits_for_the_reply_to_be_kept():
    """A slow store: the final bytes go out only once the thread point is kept, and a ping sent
    meanwhile goes by without keeping it twice."""
    import asyncio

    class SlowBackend(thread_store.MemoryBackend):
        async def put(self, *args, **kwargs):
            await asyncio.sleep(0.05)
            self.puts = getattr(self, "puts", 0) + 1
            await super().put(*args, **kwargs)

    async def scenario():
        store = SlowBackend(1 << 20)
        threads = threads_module.Threads(store, ttl=60, max_record_bytes=1 << 20)
        turn = await threads.open({"model": "m", "max_tokens": 5, "thread": {"type": "create"},
                                   "messages": [{"role": "user", "content": "hi"}]}, None)
        sent = []

        async def send(data):
            sent.append((data, store.stats()["entries"]))
        send_kept = turn.sender(send)
        start = {"type": "message_start", "message": {"id": "msg_s", "type": "message", "role": "assistant",
                                                       "content": [], "model": "m", "usage": {"input_tokens": 1}}}
        turn.watch([("message_start", start)])
        await send_kept(b"start")
        turn.watch([("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}}),
                    ("message_stop", {"type": "message_stop"})])
        await asyncio.gather(send_kept(b"end"), send_kept(b"ping"))
        return sent, store
    sent, store = run(scenario())
    assert sent[0] == (b"start", 0) and (b"end", 1) in sent and store.puts == 1


def test_a_reply_too_deep_to_keep_still_ends_whole(daemon, fake):
    """A model's tool input deeper than orjson writes cannot be kept as a thread point: the
    stream still ends with message_stop (it ended in an exception before), and a continue of it
    is thread_not_found."""
    arguments = json.dumps({"x": json.loads("[" * 300 + "]" * 300)})
    fake.push(tool_script("Read", arguments))
    body = {"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": True, "thread": {"type": "create"},
            "tools": [{"name": "Read", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": "hello"}]}
    r = httpx2.post(daemon.url + "/v1/messages", json=body, timeout=20)
    assert r.status_code == 200 and r.text.rstrip().endswith('data: {"type":"message_stop"}'), r.text[-300:]
    reply_id = next(json.loads(line[6:]) for line in r.text.splitlines()
                    if line.startswith("data: ") and '"message_start"' in line)["message"]["id"]
    assert_thread_error(cont(daemon, reply_id), 404, "not_found_error", "thread_not_found")
