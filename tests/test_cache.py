"""Response cache and in-flight sharing, against a real daemon with a cache directory."""

from __future__ import annotations

import concurrent.futures
import os
import time

import anthropic
import diskcache
import httpx2
import pytest

from ccproxyd.flow.cache import cache_key
from ccproxyd.state.answers import Store

from .conftest import Daemon
from .fake_upstream import Script, chunk, text_script, usage
from .grammar import check_stream, parse_sse
from .support import parse_prometheus, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ROUTES = """
providers:
  mock: {{base_url: "{url}", api_key_env: MOCK_KEY}}
  dead: {{base_url: "http://127.0.0.1:9/v1", retries: {{attempts: 1}}}}
models:
  gpt-mock: {{provider: mock, context_window: 128000, max_output_tokens: 16384, prompt_cache_key: true}}
  dead-model: {{provider: dead, context_window: 128000, max_output_tokens: 16384}}
routes:
  - match: "claude-backup*"
    model: dead-model
    fallbacks: [gpt-mock]
  - match: "claude-nocache*"
    model: gpt-mock
    cache: false
  - match: "*"
    model: gpt-mock
    cache: {{ttl: 600}}
"""


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache") / "store"


@pytest.fixture(scope="module")
def cached(upstream, tmp_path_factory, cache_dir):
    path = tmp_path_factory.mktemp("cached") / "routes.yaml"
    path.write_text(ROUTES.format(url=upstream.url))
    d = Daemon(path, extra_args=("--cache-dir", str(cache_dir)))
    yield d
    d.stop()
    from .conftest import CANARY
    for file in cache_dir.rglob("*"):
        if file.is_file():
            assert CANARY.encode() not in file.read_bytes(), f"the provider key leaked into {file}"


_n = [0]


def body(stream: bool, **extra) -> dict:
    return {"model": "claude-sonnet-4-5", "max_tokens": 50, "stream": stream,
            "messages": [{"role": "user", "content": f"question {_n[0]}"}], **extra}


@pytest.fixture(autouse=True)
def fresh_question():
    _n[0] += 1


def post(daemon, b, headers=None):
    return httpx2.post(daemon.url + "/v1/messages", json=b, headers=headers, timeout=30)


def test_same_request_twice_non_streaming_then_streaming(cached, fake):
    fake.push(text_script("cached", " answer"))
    first = post(cached, body(False))
    second = post(cached, body(False))
    third = post(cached, body(True))
    assert first.headers["x-ccproxyd-cache"] == "miss" and second.headers["x-ccproxyd-cache"] == "hit"
    assert third.headers["x-ccproxyd-cache"] == "hit"
    assert second.json()["content"] == first.json()["content"] == [{"type": "text", "text": "cached answer"}]
    assert second.json()["id"] != first.json()["id"]
    events = parse_sse(third.content)
    assert check_stream(events) == "complete"
    assert len(fake.requests) == 1


def test_streaming_hit_through_the_sdk(cached, fake):
    fake.push(Script(events=[chunk({"reasoning_content": "hmm"}), chunk({"content": "x"}),
                             chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "Bash", "arguments": "{\"a\":1}"}}]}),
                             chunk(finish="tool_calls"), chunk(choices=False, usage=usage())]))
    client = anthropic.Anthropic(base_url=cached.url, api_key="k", max_retries=0)
    b = body(True)
    messages = []
    for _ in range(2):
        with client.messages.stream(model=b["model"], max_tokens=50, messages=b["messages"],
                                    thinking={"type": "adaptive"}) as s:
            messages.append(s.get_final_message())
    assert [blk.type for blk in messages[1].content] == ["thinking", "text", "tool_use"]
    assert messages[1].content == messages[0].content and messages[1].stop_reason == "tool_use"
    assert len(fake.requests) == 1


def test_eight_identical_concurrent_streams_share_one_call(cached, fake):
    fake.push(Script(events=[chunk({"content": "one "}), 0.3, chunk({"content": "two "}), 0.3,
                             chunk({"content": "three"}), chunk(finish="stop"), chunk(choices=False, usage=usage())]))
    b = body(True)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: post(cached, b), range(8)))
    texts = []
    for r in results:
        events = parse_sse(r.content)
        assert check_stream(events) == "complete"
        texts.append("".join(d["delta"]["text"] for n, d in events if n == "content_block_delta"))
    assert texts == ["one two three"] * 8
    assert len(fake.requests) == 1
    assert sorted(r.headers["x-ccproxyd-cache"] for r in results).count("miss") == 1


def test_followers_get_events_as_they_arrive(cached, fake):
    fake.push(Script(events=[chunk({"content": "early"}), 1.5, chunk({"content": " late"}), chunk(finish="stop")]))
    b = body(True)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        leader = pool.submit(post, cached, b)
        wait_for(lambda: len(fake.requests) == 1)     # the leader's call is upstream: this one follows it
        t0 = time.monotonic()                         # (after a fixed sleep it might have led instead)
        with httpx2.stream("POST", cached.url + "/v1/messages", json=b, timeout=10) as r:
            pieces = r.iter_raw()
            first = next(pieces)
            waited = time.monotonic() - t0
            during = shared(cached)                   # the call is still running (1.5 s to its end)
            rest = b"".join(pieces)
        leader.result()
    assert b"early" in first + rest and waited < 1.0
    assert len(fake.requests) == 1
    assert during == (1, 2)                           # one call, two requests on it
    wait_for(lambda: shared(cached) == (0, 0))        # gone once it is stored


def shared(daemon) -> tuple[float, float]:
    """/metrics: the shared calls running now, and the requests following them."""
    samples = parse_prometheus(httpx2.get(daemon.url + "/metrics", timeout=10).text)
    return samples["ccproxyd_shared_calls"], samples["ccproxyd_shared_call_requests"]


def test_errors_and_cut_streams_are_never_stored(cached, fake):
    b = body(True)
    fake.push(Script(events=[chunk({"content": "partial"})], cut=True), text_script("whole"))
    assert check_stream(parse_sse(post(cached, b).content)) == "error"
    assert check_stream(parse_sse(post(cached, b).content)) == "complete"
    b2 = dict(body(False), messages=[{"role": "user", "content": "another question"}])
    fake.push(Script(status=400, body={"error": {"message": "bad"}}), text_script("ok"))
    assert post(cached, b2).status_code == 400
    assert post(cached, b2).status_code == 200
    assert len(fake.requests) == 4


def test_bypass_and_route_off(cached, fake):
    b = body(False)
    post(cached, b)
    for headers in ({"cache-control": "no-cache"}, {"cache-control": "no-store"}):
        assert "x-ccproxyd-cache" not in post(cached, b, headers).headers
    off = dict(b, model="claude-nocache-1")
    post(cached, off)
    post(cached, off)
    assert len(fake.requests) == 5


def test_client_gone_call_that_ends_within_the_orphan_grace_is_stored(cached, fake):
    fake.push(Script(events=[chunk({"content": "a"}), 0.8, chunk({"content": "b"}), chunk(finish="stop")]))
    b = body(True)
    with httpx2.stream("POST", cached.url + "/v1/messages", json=b, timeout=10) as r:
        next(r.iter_raw())                     # the first bytes, then the client hangs up
    time.sleep(1.5)
    again = post(cached, b)
    assert again.headers["x-ccproxyd-cache"] == "hit"
    assert "ab" in "".join(d["delta"].get("text", "") for n, d in parse_sse(again.content) if n == "content_block_delta")
    assert len(fake.requests) == 1


def test_entry_survives_a_restart(upstream, fake, tmp_path, cache_dir):
    path = tmp_path / "routes.yaml"
    path.write_text(ROUTES.format(url=upstream.url))
    b = body(False)
    for expected in ("miss", "hit"):
        d = Daemon(path, extra_args=("--cache-dir", str(tmp_path / "c")), log_path=tmp_path / "d.log")
        try:
            assert post(d, b).headers["x-ccproxyd-cache"] == expected
        finally:
            d.stop()
    assert len(fake.requests) == 1
    assert oct(os.stat(tmp_path / "c").st_mode & 0o777) == "0o700"


# ---------------------------------------------------------------- key and store

BASE = {"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 100,
        "tools": [{"type": "function", "function": {"name": "a", "parameters": {}}}], "tool_choice": "auto",
        "temperature": 1, "reasoning_effort": "low", "stream": True}


@pytest.mark.parametrize("change", [
    {"model": "gpt-5-mini"}, {"messages": [{"role": "user", "content": "hi!"}]},
    {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]},
    {"tools": []}, {"tool_choice": "required"}, {"temperature": 0.5}, {"max_completion_tokens": 101},
    {"reasoning_effort": "high"}, {"stop": ["x"]},
])
def test_each_field_changes_the_key(change):
    assert cache_key(dict(BASE, **change), "p", "u") != cache_key(BASE, "p", "u")


def test_key_ignores_json_order_and_includes_target_and_client():
    reordered = dict(reversed(list(BASE.items())))
    assert cache_key(reordered, "p", "u") == cache_key(BASE, "p", "u")
    assert cache_key(BASE, "q", "u") != cache_key(BASE, "p", "u")
    assert cache_key(BASE, "p", "v") != cache_key(BASE, "p", "u")
    assert cache_key(BASE, "p", "u", client="a") != cache_key(BASE, "p", "u", client="b")
    assert cache_key(BASE, "p", "u", requested="claude-a") != cache_key(BASE, "p", "u", requested="claude-b")
    assert cache_key(BASE, "p", "u", thinking="none") != cache_key(BASE, "p", "u", thinking="summarized")


class Boom:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('CCPX_PWNED', '/tmp/ccpx-pwned')}",))


def test_planted_pickle_is_never_loaded(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("CCPX_PWNED", str(marker))
    directory = str(tmp_path / "c")
    store = Store(directory)
    store.close()
    with diskcache.Cache(directory) as raw:           # an attacker with write access, default Disk
        raw.set("k", Boom())
    store = Store(directory)
    assert store.get("k") is None
    assert not marker.exists()
    store.close()


def test_size_limit_holds(tmp_path):
    store = Store(str(tmp_path / "c"), size_limit=1_000_000)
    entry = {"content": [{"type": "text", "text": "x" * 100_000}]}
    for i in range(30):                                # 3x the limit
        store.put(f"k{i}", entry, ttl=600)
    assert store.cache.volume() <= 1_000_000
    assert store.get("k29") is not None and store.get("k0") is None
    assert store.evictions == 30 - len(store.cache)
    store.close()


def test_writer_thread_commits_every_queued_answer(tmp_path):
    store = Store(str(tmp_path / "c"), size_limit=1_000_000)
    finished = []
    entry = {"content": [{"type": "text", "text": "x" * 100_000}]}
    for i in range(30):                                # 3x the limit, queued faster than one window
        store.put_later(f"k{i}", entry, 600, lambda i=i: finished.append(i))
    store.close()                                      # waits for the queue
    assert sorted(finished) == list(range(30))
    assert store.evictions == 30 - len(store.cache) > 0
    store = Store(str(tmp_path / "c"), size_limit=1_000_000)
    assert store.get("k29") is not None and store.cache.volume() <= 1_000_000
    store.close()


def test_a_write_that_fails_still_reports_done(tmp_path, caplog):
    store = Store(str(tmp_path / "c"))
    finished = []
    store.put_later("k", {"not": object()}, 600, lambda: finished.append(True))   # cannot serialise
    store.close()
    assert finished == [True]
    assert "cannot store an answer, it cannot be written as JSON" in caplog.text


def test_a_write_after_close_is_refused_not_lost_in_a_thread(tmp_path, caplog):
    store = Store(str(tmp_path / "c"))
    store.close()
    finished = []
    store.put_later("k", {"content": []}, 600, lambda: finished.append(True))
    assert finished == [True] and not store._writer.started
    assert "is closed" in caplog.text


def test_resolving_a_cancelled_wait_is_harmless():
    import asyncio

    from ccproxyd.flow.proxy import _resolve

    async def scenario() -> bool:
        future = asyncio.get_running_loop().create_future()
        future.cancel()
        _resolve(future)                                # the writer's callback after a cancel
        return future.cancelled()

    assert asyncio.run(scenario())


def test_a_fallback_answer_is_served_but_not_stored(cached, fake):
    """The primary is down; the fallback answers.  The next identical request tries the primary
    again instead of replaying the fallback's answer for the whole TTL."""
    fake.push(text_script("from the fallback"), text_script("again from the fallback"))
    b = body(False, model="claude-backup")
    first = post(cached, b)
    assert first.status_code == 200 and first.json()["content"][0]["text"] == "from the fallback"
    time.sleep(0.3)                                      # past the writer's 50 ms window
    second = post(cached, b)
    assert second.headers["x-ccproxyd-cache"] == "miss"
    assert second.json()["content"][0]["text"] == "again from the fallback"
    assert len(fake.requests) == 2


def test_two_claude_code_sessions_share_an_answer(cached, fake):
    """Each session's hashed id goes upstream as `user`, and a hash of the shared prefix as
    `prompt_cache_key` (translate/prompt_cache), but neither is part of the response cache key."""
    fake.push(text_script("shared"))
    sessions = [{"user_id": f'{{"device_id":"d","account_uuid":"","session_id":"s-{n}"}}'} for n in (1, 2)]
    first, second = (post(cached, body(False, metadata=m, system="You are terse.")) for m in sessions)
    assert first.headers["x-ccproxyd-cache"] == "miss" and second.headers["x-ccproxyd-cache"] == "hit"
    assert len(fake.requests) == 1
    sent = fake.requests[0]["body"]
    assert sent["prompt_cache_key"].startswith("ccpx-") and sent["prompt_cache_key"] != sent["user"]
