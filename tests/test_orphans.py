"""Nobody pays for an answer nobody waits for: with the cache on, an upstream call whose every
client has gone is cancelled after --orphan-grace, unless an identical request joins it first."""

from __future__ import annotations

import socket
import time

import httpx2
import pytest

from .conftest import Daemon, cached_routes
from .fake_upstream import Script, chunk, usage
from .grammar import check_stream, parse_sse

GRACE = 1.0


@pytest.fixture(scope="module")
def proxy(upstream, tmp_path_factory):
    path = cached_routes(tmp_path_factory.mktemp("orphans"), upstream.url)
    d = Daemon(path, extra_args=("--cache-dir", str(path.parent / "cache"), "--orphan-grace", str(GRACE)))
    yield d
    d.stop()


def slow_script(seconds: float) -> Script:
    """A word every 0.1 s for `seconds`."""
    events: list = [chunk({"role": "assistant", "content": ""})]
    for i in range(int(seconds / 0.1)):
        events += [chunk({"content": f"w{i} "}), 0.1]
    return Script(events=events + [chunk(finish="stop"), chunk(choices=False, usage=usage())])


def request_bytes(proxy: Daemon, question: str) -> bytes:
    body = ('{"model": "claude-sonnet-4-5", "max_tokens": 500, "stream": true, '
            '"messages": [{"role": "user", "content": "%s"}]}' % question).encode()
    return (b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % len(body)) + body


def start_and_leave(proxy: Daemon, question: str) -> float:
    """Send a streamed request, read its first bytes, hang up; return when it hung up."""
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.sendall(request_bytes(proxy, question))
        assert b"message_start" in sock.recv(65536)
        time.sleep(0.3)                                   # a few words have gone by
    return time.monotonic()


def counter(proxy: Daemon, name: str) -> float:
    for line in httpx2.get(proxy.url + "/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    return 0.0


def test_an_abandoned_answer_is_cancelled_after_the_grace(proxy, fake):
    fake.push(slow_script(10))
    before = counter(proxy, "ccproxyd_orphans_cancelled_total")
    left = start_and_leave(proxy, "abandoned")
    call = fake.requests[0]["connection"]             # the abandoned call's upstream connection
    deadline = left + GRACE + 3
    while call not in fake.hung_up and time.monotonic() < deadline:
        time.sleep(0.05)
    assert call in fake.hung_up, "the upstream call ran on after every client left"
    assert fake.hung_up[call] - left <= GRACE + 1.0
    assert fake.hung_up[call] - left >= GRACE - 0.2    # not before the grace: a retry may still come
    assert counter(proxy, "ccproxyd_orphans_cancelled_total") == before + 1
    assert counter(proxy, "ccproxyd_orphan_tokens_avoided_total") > 0
    # the cut answer was not stored: the same question goes upstream again
    fake.push(slow_script(0.2))
    r = httpx2.post(proxy.url + "/v1/messages", content=request_bytes(proxy, "abandoned").split(b"\r\n\r\n", 1)[1],
                    headers={"content-type": "application/json"}, timeout=30)
    assert r.headers["x-ccproxyd-cache"] == "miss" and check_stream(parse_sse(r.content)) == "complete"


def test_a_retry_within_the_grace_joins_the_running_answer(proxy, fake):
    fake.push(slow_script(2))
    start_and_leave(proxy, "retried")
    time.sleep(GRACE / 3)
    r = httpx2.post(proxy.url + "/v1/messages", content=request_bytes(proxy, "retried").split(b"\r\n\r\n", 1)[1],
                    headers={"content-type": "application/json"}, timeout=30)
    events = parse_sse(r.content)
    assert check_stream(events) == "complete"
    text = "".join(d["delta"].get("text", "") for n, d in events if n == "content_block_delta")
    assert text.startswith("w0 w1 ") and text.endswith("w19 ")   # the whole answer, from its start
    assert r.headers["x-ccproxyd-cache"] == "hit"
    # one upstream call, never cut (a hang-up on another connection of the session's shared fake,
    # such as a stopped daemon's pooled one, is not this call's)
    assert len(fake.requests) == 1 and fake.requests[0]["connection"] not in fake.hung_up


def test_without_the_cache_a_client_that_leaves_ends_the_upstream_call_at_once(daemon, fake):
    fake.push(slow_script(10))
    left = start_and_leave(daemon, "no cache")
    call = fake.requests[0]["connection"]
    deadline = left + 3
    while call not in fake.hung_up and time.monotonic() < deadline:
        time.sleep(0.05)
    assert call in fake.hung_up and fake.hung_up[call] - left <= 1.0
