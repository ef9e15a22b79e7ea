"""Upstreams that break the wire's rules, driven through a running ccproxyd: HTTP/1.1 framing
faults (a malformed chunk size, a body cut short, bytes past the body, transfer codings other than
a final chunked), a content coding that was not asked for (also on an error answer), HTTP/2 frames
out of order (GOAWAY with an error mid-body or followed by silence, a response head without a
valid :status, DATA after END_STREAM, a window overrun, a PING or SETTINGS flood answered or never read, a
huge header block), a provider key echoed where no error body is, and silence after the head.

What the client must get (README, Errors and Failure behaviour): an Anthropic-shaped error with
its status, or, once the stream is under way, an `event: error` and never `message_stop` over a
hole; no connection is used again after a framing fault; the provider key never reaches the
client, a log line, /metrics or the cache.

The upstreams are raw servers on loopback (tests/fake_wire.py): `RawHttp11` writes each answer's
bytes as scripted, `RawH2` (TLS, certificates made at test time) writes each answer's frames by
hand, so that frames h2's own state machine would refuse to send can be sent.
"""

from __future__ import annotations

import asyncio
import gzip
import ssl
import threading
import time
import zlib

import httpx2
import orjson
import pytest

from .conftest import CANARY, Daemon
from .fake_upstream import Gate
from .fake_wire import (CLOSE, CONTINUATION, DATA, DEAF, END_HEADERS, ENHANCE_YOUR_CALM, FLOW_CONTROL_ERROR, GOAWAY,
                        HEADERS, HOLD, INTERNAL_ERROR, PING, SETTINGS, SSE_HEAD, RawH2, RawHttp11, data, frame, h11,
                        h2_answer, head, opens, raw)
from .grammar import check_stream, parse_sse
from .support import wait_for


def sse(*events: dict, done: bool = True) -> bytes:
    body = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events)
    return body + (b"data: [DONE]\n\n" if done else b"")


def delta(text: str | None = None, finish: str | None = None) -> dict:
    return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "up",
            "choices": [{"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}]}


USAGE = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "up", "choices": [],
         "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}}
ANSWER = sse(delta("Hello"), delta(" there"), delta(finish="stop"), USAGE)          # "Hello there", whole
WHOLE = orjson.dumps({"id": "c1", "object": "chat.completion", "created": 1, "model": "up",
                      "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there"},
                                   "finish_reason": "stop"}],
                      "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}})


# ---------------------------------------------------------------- the daemon

ROUTES = """
providers:
  h1: {{base_url: "{h1}", api_key_env: MOCK_KEY, read_timeout: 1, retries: {{attempts: 1}}, breaker: {{threshold: 1000}}}}
  h2: {{base_url: "{h2}", api_key_env: MOCK_KEY, read_timeout: 1, retries: {{attempts: 1}}, breaker: {{threshold: 1000}},
        ca_file: "{ca}", http2: true}}
  h2slow: {{base_url: "{h2}", api_key_env: MOCK_KEY, read_timeout: 30, retries: {{attempts: 1}},
            breaker: {{threshold: 1000}}, ca_file: "{ca}", http2: true}}
models:
  m-h1: {{provider: h1, upstream: up, context_window: 200000, max_output_tokens: 1000}}
  m-h2: {{provider: h2, upstream: up, context_window: 200000, max_output_tokens: 1000}}
  m-h2slow: {{provider: h2slow, upstream: up, context_window: 200000, max_output_tokens: 1000}}
routes:
  - {{match: claude-h1, model: m-h1, cache: {{ttl: 600}}}}
  - {{match: claude-h2, model: m-h2, cache: {{ttl: 600}}}}
  - {{match: claude-h2slow, model: m-h2slow, cache: {{ttl: 600}}}}
"""


@pytest.fixture(scope="module")
def servers(certificates):
    h1, h2_ = RawHttp11([h11(ANSWER)]).start(), RawH2(certificates, h2_answer(ANSWER)).start()
    yield h1, h2_
    h1.stop()
    h2_.stop()


@pytest.fixture(scope="module")
def daemon(servers, certificates, tmp_path_factory):
    h1, h2_ = servers
    path = tmp_path_factory.mktemp("wire") / "routes.yaml"
    path.write_text(ROUTES.format(h1=h1.url, h2=h2_.url, ca=certificates.ca_file))
    cache = path.parent / "cache"
    d = Daemon(path, extra_args=("--cache-dir", str(cache), "--ping-interval", "0.2"))
    yield d
    d.stop()                                                    # asserts the key is not in the log
    log = d.log_path.read_text()
    assert CANARY[:8] not in log, "a part of the provider key is in the log"
    for file in cache.rglob("*"):
        if file.is_file():
            assert CANARY[:8].encode() not in file.read_bytes(), f"the provider key leaked into {file}"


@pytest.fixture
def h1(servers):
    servers[0].reset()
    yield servers[0]
    servers[0].reset()


@pytest.fixture
def h2s(servers):
    servers[1].reset()
    yield servers[1]
    servers[1].reset()


_n = [0]


def ask(daemon: Daemon, provider: str, stream: bool = True) -> httpx2.Response:
    _n[0] += 1                                  # a new question each time: never a cache hit
    body = {"model": f"claude-{provider}", "max_tokens": 100, "stream": stream,
            "messages": [{"role": "user", "content": f"question {_n[0]} at {time.time()}"}]}
    return httpx2.post(daemon.url + "/v1/messages", json=body, timeout=30)


def text_of(events: list[tuple[str, dict]]) -> str:
    return "".join(d["delta"].get("text", "") for n, d in events if n == "content_block_delta")


def broken(response: httpx2.Response, error_type: str = "api_error") -> list[tuple[str, dict]]:
    """A stream that began and ended in an error event of `error_type`, without message_stop."""
    assert response.status_code == 200, response.text
    events = parse_sse(response.content)
    assert check_stream(events) == "error", [n for n, _ in events]
    assert "message_stop" not in [n for n, _ in events]
    assert events[-1][1]["error"]["type"] == error_type, events[-1]
    return events


def complete(response: httpx2.Response) -> str:
    """The text of a stream that ended cleanly."""
    assert response.status_code == 200, response.text
    events = parse_sse(response.content)
    assert check_stream(events) == "complete", events[-1]
    return text_of(events)


def failed(response: httpx2.Response, status: int, error_type: str) -> dict:
    """A non-streaming answer that is an Anthropic error of this status and type."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == error_type, body
    return body


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
FIRST = sse(delta("Hello"), done=False)                 # a first event that reaches the client


# ---------------------------------------------------------------- HTTP/1.1 framing

BROKEN_BODIES = {
    # a chunk-size line that is not hex digits (h11's chunk-size = 1*HEXDIG)
    "malformed chunk size": [CHUNKED_HEAD + b"%x\r\n%s\r\n" % (len(FIRST), FIRST) + b"zz\r\nab\r\n0\r\n\r\n"],
    # a chunk announced longer than what comes before the server closes
    "chunk shorter than announced": [CHUNKED_HEAD + b"%x\r\n" % (len(ANSWER) + 50) + ANSWER[:len(FIRST)], CLOSE],
    # content-length promises more than the body before the close, for a stream and a whole answer
    "content-length larger, stream": [
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n" % (len(ANSWER) + 50)
        + ANSWER[:len(FIRST)], CLOSE],
    "content-length larger, whole": [
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % (len(WHOLE) + 50)
        + WHOLE, CLOSE],
}


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("case", sorted(BROKEN_BODIES))
def test_a_body_that_breaks_its_framing_ends_in_an_error_and_its_connection(daemon, h1, case, stream):
    """After the head, the body breaks HTTP/1.1's framing: a streaming client's answer ends in an
    error event (whatever arrived before it went out), a whole one is a 500; never retried, never
    cached, and the connection is never used again."""
    request_body = {"model": "claude-h1", "max_tokens": 100, "stream": stream,
                    "messages": [{"role": "user", "content": f"{case} {stream} {time.time()}"}]}
    h1.answers.append(BROKEN_BODIES[case])
    r = httpx2.post(daemon.url + "/v1/messages", json=request_body, timeout=30)
    if stream:
        events = broken(r)
        assert text_of(events) in ("", "Hello")             # only what came before the break
    else:
        body = failed(r, 500, "api_error")
        assert "'h1'" in body["error"]["message"]
    assert len(h1.requests) == 1                            # not tried again after the head
    h1.answers.append([h11(ANSWER)])
    again = httpx2.post(daemon.url + "/v1/messages", json=request_body, timeout=30)
    assert again.headers["x-ccproxyd-cache"] == "miss"      # the broken answer was not stored
    assert again.status_code == 200
    assert h1.requests[1]["connection"] != h1.requests[0]["connection"]


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_bytes_that_arrive_after_the_body_are_never_read_as_the_next_answer(daemon, h1, framing):
    """The answer's body ends where its framing says; bytes the server sends later, on the idle
    connection, are not the answer to the next request on it (a response nobody asked for, or a
    body longer than its content-length): that connection is not used again."""
    stray = h11(sse(delta("stray"), delta(finish="stop"), USAGE), framing="content-length")
    h1.answers.append([h11(ANSWER, framing=framing), 0.1, stray])
    assert complete(ask(daemon, "h1")) == "Hello there"
    wait_for(lambda: h1.requests[0].get("played"))
    time.sleep(0.1)                                         # the stray bytes are in ccproxyd's buffer
    h1.answers.append([h11(sse(delta("second"), delta(finish="stop"), USAGE))])
    assert complete(ask(daemon, "h1")) == "second"
    assert h1.requests[1]["connection"] != h1.requests[0]["connection"]


# ---------------------------------------------------------------- transfer codings (RFC 9112 section 6.1)

def coded(codings: str, body: bytes, kind: str, chunked: bool, *headers: str) -> bytes:
    """An answer whose transfer-encoding is `codings`, its body in one chunk or as it is."""
    head_ = (f"HTTP/1.1 200 OK\r\ncontent-type: {kind}\r\ntransfer-encoding: {codings}\r\n"
             + "".join(h + "\r\n" for h in headers) + "\r\n").encode()
    return head_ + (b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if chunked else body)


# codings -> (chunked body?, headers, the server closes after the body?): read as the RFC says
TRANSFER_CODINGS_READ = {
    "identity, Chunked": (True, (), False),             # a list, names case-insensitive, chunked last
    ", chunked ,": (True, (), False),                   # empty list elements are ignored
    "chunked, identity": (True, (), False),             # identity is no coding at all
    "identity": (False, ("content-length: {length}",), False),    # so its body is framed by its length
    "Identity": (False, (), True),                      # and without one, it ends at the close
}
# codings -> (body made of the answer, chunked body?, what the error says)
TRANSFER_CODINGS_REFUSED = {
    "xchunkedx": (lambda b: b, True, "the coding b'xchunkedx'"),     # not chunked, though it contains it
    "gzip, chunked": (gzip.compress, True, "the coding b'gzip'"),    # a coding before chunked
    "gzip": (gzip.compress, False, "the coding b'gzip'"),            # a final coding that is not chunked
    "chunked, chunked": (lambda b: b, True, "chunked is not the final coding"),
}


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("codings", sorted(TRANSFER_CODINGS_READ))
def test_transfer_encoding_is_a_list_of_codings_with_chunked_last(daemon, h1, codings, stream):
    """Transfer-Encoding is a comma-separated list of codings in the order applied (RFC 9112
    section 6.1): chunked frames the body when it is the final coding; identity is no coding, so a
    list of it alone frames the body as no Transfer-Encoding would: by its content-length, else by
    the close (section 6.3)."""
    chunked, headers, closes = TRANSFER_CODINGS_READ[codings]
    body, kind = (ANSWER, "text/event-stream") if stream else (WHOLE, "application/json")
    headers = [header.format(length=len(body)) for header in headers]
    h1.answers.append([coded(codings, body, kind, chunked, *headers)] + ([CLOSE] if closes else []))
    r = ask(daemon, "h1", stream)
    if stream:
        assert complete(r) == "Hello there"
    else:
        assert r.status_code == 200 and r.json()["content"][0]["text"] == "Hello there", r.text


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("codings", sorted(TRANSFER_CODINGS_REFUSED))
def test_a_transfer_coding_ccproxyd_cannot_undo_is_a_protocol_error(daemon, h1, codings, stream):
    """A coding other than identity before chunked, chunked anywhere but last, or a final coding
    that ccproxyd does not decode (it sends no TE, so it asked for none but chunked): a protocol
    error naming the field, met like the other framing faults (a 500, the connection dropped),
    never a body passed on still coded, nor one framed by a name that merely contains "chunked"."""
    code, chunked, said = TRANSFER_CODINGS_REFUSED[codings]
    body, kind = (ANSWER, "text/event-stream") if stream else (WHOLE, "application/json")
    bad = [coded(codings, code(body), kind, chunked)]
    h1.answers.extend([bad, bad])
    message = failed(ask(daemon, "h1", stream), 500, "api_error")["error"]["message"]
    assert f"transfer-encoding b'{codings}'" in message and said in message and "'h1'" in message, message
    h1.answers.append([h11(ANSWER)])
    assert complete(ask(daemon, "h1")) == "Hello there"
    assert len({r["connection"] for r in h1.requests}) == len(h1.requests)     # none was used again


# ---------------------------------------------------------------- content codings not asked for

@pytest.mark.parametrize("provider", ["h1", "h2"])
@pytest.mark.parametrize("shape", ["stream", "whole"])
def test_a_gzip_answer_is_decoded_although_identity_was_asked(daemon, h1, h2s, provider, shape):
    """ccproxyd asks for `accept-encoding: identity`; a server that gzips anyway (a CDN in front of
    it) is understood, for a stream as for a whole answer."""
    body, kind = (ANSWER, "text/event-stream") if shape == "stream" else (WHOLE, "application/json")
    packed = gzip.compress(body)
    if provider == "h1":
        h1.answers.append([h11(packed, "content-encoding: gzip", kind=kind)])
    else:
        h2s.answers.append([head((b":status", b"200"), (b"content-type", kind.encode()),
                                 (b"content-encoding", b"gzip")), data(packed, end=True)])
    assert complete(ask(daemon, provider)) == "Hello there"


@pytest.mark.parametrize("provider", ["h1", "h2"])
@pytest.mark.parametrize("stream", [True, False])
def test_a_content_coding_ccproxyd_cannot_decode_is_a_clear_500(daemon, h1, h2s, provider, stream):
    """Brotli (not installed) is named, before any stream begins: a 500 whatever the client asked."""
    if provider == "h1":
        h1.answers.append([h11(b"\x1b\x00\x00\x00 not really brotli", "content-encoding: br")])
    else:
        h2s.answers.append(h2_answer(b"\x1b\x00\x00\x00 not really brotli", (b"content-encoding", b"br")))
    body = failed(ask(daemon, provider, stream), 500, "api_error")
    assert "content-encoding 'br'" in body["error"]["message"] and f"'{provider}'" in body["error"]["message"]


# ---------------------------------------------------------------- compressed error answers

ERROR_BODY = orjson.dumps({"error": {"message": f"The model is asleep (key Bearer {CANARY})", "type": "invalid"}})
READ = "The model is asleep (key Bearer [redacted])"
# case -> (content-encoding, the body as sent, what the client's error message must hold)
COMPRESSED_ERRORS = {
    "gzip": ("gzip", gzip.compress(ERROR_BODY), READ),
    "deflate": ("deflate", zlib.compress(ERROR_BODY), READ),
    "deflate then gzip": ("deflate, gzip", gzip.compress(zlib.compress(ERROR_BODY)), READ),
    # brotli is not a dependency (br is decoded only where a brotli module is installed); this body
    # is not brotli at all, so it cannot be read either way
    "br": ("br", b"\x1b\x00\x00\x00 not really brotli " + CANARY.encode(), "compressed (content-encoding 'br')"),
    "unknown coding": ("x-squash", b"\x00\x01 squashed " + CANARY.encode(), "compressed (content-encoding 'x-squash')"),
    # cut inside the key: a part of a decoded body would show the key's start, which no scrub knows
    "gzip cut short": ("gzip", gzip.compress(ERROR_BODY)[:-30], "compressed (content-encoding 'gzip') and does not"),
}


@pytest.mark.parametrize("provider", ["h1", "h2"])
@pytest.mark.parametrize("case", sorted(COMPRESSED_ERRORS))
def test_a_compressed_error_answer_is_read_or_said_to_be_unreadable(daemon, h1, h2s, provider, case):
    """An error answer (here a 400, which is not retried) compressed although ccproxyd asked for
    identity: gzip and deflate are decoded, and the client reads the provider's own words (the key
    in them masked); a coding ccproxyd cannot read, or a body that does not decode whole, is said
    to be so, never shown as the compressed bytes or as the part that decoded."""
    coding, packed, said = COMPRESSED_ERRORS[case]
    if provider == "h1":
        server, steps = h1, [h11(packed, f"content-encoding: {coding}", status=400, kind="application/json",
                                 framing="content-length")]
    else:
        server, steps = h2s, [head((b":status", b"400"), (b"content-type", b"application/json"),
                                   (b"content-encoding", coding.encode())), data(packed, end=True)]
    for stream in (True, False):
        server.answers.append(steps)
        r = ask(daemon, provider, stream)
        message = failed(r, 400, "invalid_request_error")["error"]["message"]
        assert said in message and f"(provider '{provider}', HTTP 400)" in message, message
        assert CANARY[:6] not in r.text and "\ufffd" not in message and "\x00" not in message, message


# ---------------------------------------------------------------- HTTP/2 frames out of order

def goaway(last: int | None, code: int):
    """A step: GOAWAY naming `last` (None: this stream) as the last stream processed, with `code`."""
    return raw(lambda s: frame(GOAWAY, 0, 0, (s if last is None else last).to_bytes(4, "big") + code.to_bytes(4, "big")))


@pytest.mark.parametrize("last", [None, 0], ids=["stream-included", "stream-excluded"])
def test_goaway_with_an_error_mid_body_ends_the_stream_in_an_error(daemon, h2s, last):
    """An error GOAWAY after some events: whether it names this stream as processed (then the
    server closes, as RFC 9113 section 5.4.1 requires) or not, the answer ends in an error event,
    the request is not sent again after its head, and the next request opens a new connection."""
    h2s.answers.append([head(*SSE_HEAD), data(FIRST), 0.05, goaway(last, INTERNAL_ERROR), 0.05, CLOSE])
    assert text_of(broken(ask(daemon, "h2"))) == "Hello"
    assert len(h2s.requests) == 1
    assert complete(ask(daemon, "h2")) == "Hello there"
    assert h2s.requests[1]["connection"] != h2s.requests[0]["connection"]


# case -> (the answer, what becomes of the request)
GOAWAY_THEN_SILENCE = {
    # the stream named as processed, mid-body: it ends in an error once the grace is over
    "mid-body, stream included": ([head(*SSE_HEAD), data(FIRST), 0.05, goaway(None, INTERNAL_ERROR), HOLD], "error"),
    # named as processed, before its head: after the grace, a dropped connection, tried again at once
    "before the head, stream included": ([goaway(None, INTERNAL_ERROR), HOLD], "sent again after the grace"),
    # above last_stream_id: never processed, sent again at once on another connection
    "before the head, stream excluded": ([goaway(0, INTERNAL_ERROR), HOLD], "sent again at once"),
}


@pytest.mark.parametrize("case", sorted(GOAWAY_THEN_SILENCE))
def test_an_error_goaway_then_silence_ends_the_streams_within_a_grace(daemon, h2s, case):
    """A server that sends GOAWAY for an error must close the connection next (RFC 9113 section
    5.4.1).  One that keeps it open and silent instead does not hold the streams in flight for the
    provider's read_timeout (30 s here): those above last_stream_id fail at once and are sent
    again; the others fail GOAWAY_GRACE seconds later, as a dropped connection."""
    from ccproxyd.upstream.h2connection import GOAWAY_GRACE

    steps, outcome = GOAWAY_THEN_SILENCE[case]
    h2s.answers.extend([steps, h2_answer(ANSWER)])
    started = time.monotonic()
    r = ask(daemon, "h2slow")
    took = time.monotonic() - started
    if outcome == "error":
        events = broken(r)
        assert text_of(events) == "Hello" and len(h2s.requests) == 1
        message = events[-1][1]["error"]["message"]
        assert f"GOAWAY (INTERNAL_ERROR) and then neither closed the connection nor ended the stream within " \
               f"{GOAWAY_GRACE:g} s" in message and "'h2slow'" in message, message
    else:
        assert complete(r) == "Hello there"
        assert [q["connection"] for q in h2s.requests][0] != h2s.requests[1]["connection"]
    if outcome == "sent again at once":
        assert took < GOAWAY_GRACE - 0.5, took
    else:
        assert GOAWAY_GRACE - 0.2 < took < GOAWAY_GRACE + 3, took


@pytest.mark.parametrize("status", [None, b"abc", b"2000", b"20", b"+200", b" 200"])
def test_a_head_without_a_valid_status_is_a_protocol_error(daemon, h2s, status):
    """`:status` is three digits (RFC 9110 section 15, h11's status-code = 3DIGIT, as the HTTP/1.1
    transport checks): a head without it is a malformed response (RFC 9113 section 8.1.1), met like
    a connection closed without an answer: tried again at once, once, then a 500."""
    fields = ((b":status", status),) if status is not None else ()
    bad = [head(*fields, (b"content-type", b"text/event-stream")), data(ANSWER, end=True)]
    for stream in (True, False):
        h2s.answers.extend([bad, bad])
        body = failed(ask(daemon, "h2", stream), 500, "api_error")
        assert "the connection was closed" in body["error"]["message"], body
    assert len(h2s.requests) == 4                       # each request: its try and the free redial
    h2s.answers.extend([bad, h2_answer(ANSWER)])
    assert complete(ask(daemon, "h2")) == "Hello there"


def test_data_after_end_stream_fails_the_connection(daemon, h2s):
    """A server that sends DATA on a stream it ended has lost track of its streams: that DATA may be
    another stream's (here the middle of a concurrent answer).  The stream still in flight on the
    connection must end in an error, never complete over the missing piece; the stream that ended
    before stays whole; the connection is not used again."""
    first, second = Gate(), Gate()
    # the answer that stays in flight: "Hello", then (after the other one's stray DATA) the end
    in_flight = [head(*SSE_HEAD), data(FIRST), opens(first), second,
                 data(sse(delta(finish="stop"), USAGE), end=True)]
    # the answer that ends, then sends the in-flight answer's middle on its own, ended stream
    ended = [first, head(*SSE_HEAD), data(ANSWER, end=True), 0.2,
             data(sse(delta(" there"), done=False)), opens(second)]
    h2s.answers.extend([in_flight, ended])
    results: list[httpx2.Response] = []
    threads = [threading.Thread(target=lambda: results.append(ask(daemon, "h2"))) for _ in range(2)]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    for thread in threads:
        thread.join(30)
    assert len({r["connection"] for r in h2s.requests}) == 1
    outcomes = sorted(check_stream(parse_sse(r.content)) for r in results)
    assert outcomes == ["complete", "error"], [r.text for r in results]
    whole = next(r for r in results if check_stream(parse_sse(r.content)) == "complete")
    assert text_of(parse_sse(whole.content)) == "Hello there"
    assert text_of(broken(next(r for r in results if r is not whole))) == "Hello"
    assert complete(ask(daemon, "h2")) == "Hello there"
    assert h2s.requests[-1]["connection"] != h2s.requests[0]["connection"]


def test_a_huge_header_block_is_refused_and_the_connection_dropped(daemon, h2s):
    """A head over h2's 64 KB header list limit (CONTINUATION frames of 16 KB): a protocol error of
    the connection, which is closed; the free redial on a new connection gets the answer."""
    big = b"x" * 16000

    def huge(conn, stream_id, authorization):
        block = conn.encoder.encode([(b":status", b"200"), (b"x-big", big)])
        return (frame(HEADERS, 0, stream_id, block) + b"".join(frame(CONTINUATION, 0, stream_id, big) for _ in range(5))
                + frame(CONTINUATION, END_HEADERS, stream_id, big))
    h2s.answers.extend([[huge, data(ANSWER, end=True)], h2_answer(ANSWER)])
    assert complete(ask(daemon, "h2")) == "Hello there"
    assert h2s.requests[0]["connection"] != h2s.requests[1]["connection"]
    dropped = h2s.connections[h2s.requests[0]["connection"] - 1]
    wait_for(lambda: dropped["closed"])
    assert dropped["goaway"] == [ENHANCE_YOUR_CALM]


def test_a_ping_flood_mid_stream_is_answered_and_the_answer_arrives_whole(daemon, h2s):
    """20,000 PINGs between two DATA frames: each is acknowledged (h2 does it), the answer is whole
    and the connection stays up."""
    flood = raw(lambda s: b"".join(frame(PING, 0, 0, i.to_bytes(8, "big")) for i in range(20000)))
    h2s.answers.append([head(*SSE_HEAD), data(FIRST), flood, data(ANSWER[len(FIRST):], end=True)])
    assert complete(ask(daemon, "h2")) == "Hello there"
    record = h2s.connections[h2s.requests[0]["connection"] - 1]
    wait_for(lambda: record["ping_acks"] == 20000)
    assert not record["goaway"]


FLOOD = 600_000      # control frames: more ACKs than the kernel's socket buffers take (tcp_wmem: 4 MB)


@pytest.mark.parametrize("flood", [frame(PING, 0, 0, b"ccproxyd") * FLOOD, frame(SETTINGS, 0, 0, b"") * FLOOD * 2],
                         ids=["ping", "settings"])
def test_a_control_frame_flood_whose_acks_are_never_read_is_a_connection_error(daemon, h2s, flood):
    """A server that stops reading and sends PINGs (CVE-2019-9512) or SETTINGS (CVE-2019-9515):
    each would queue an ACK that nobody reads, without bound.  Past MAX_QUEUED_ACKS of them
    queued, the connection is dropped (a protocol error, as a flood of other frames is): the
    stream ends in an error event after what arrived before, and the next request opens a new
    connection."""
    from ccproxyd.upstream.h2connection import MAX_QUEUED_ACKS

    h2s.answers.append([head(*SSE_HEAD), data(FIRST), DEAF, raw(lambda s: flood), data(ANSWER[len(FIRST):], end=True)])
    events = broken(ask(daemon, "h2slow"))                  # (a 30 s read_timeout: pings are not data)
    assert text_of(events) == "Hello"
    assert f"control frame flood: the server sent more than {MAX_QUEUED_ACKS} PINGs and SETTINGS" in \
        events[-1][1]["error"]["message"]
    assert h2s.connections[h2s.requests[0]["connection"] - 1]["deaf"]
    assert complete(ask(daemon, "h2slow")) == "Hello there"
    assert h2s.requests[1]["connection"] != h2s.requests[0]["connection"]


def test_a_window_overrun_is_a_connection_error(certificates, h2s):
    """The transport on its own (a relay that reads keeps the window open): a server that sends
    more than the stream's 4 MiB window without a WINDOW_UPDATE breaks flow control (RFC 9113
    section 6.9.1); the body ends in a protocol error, mapped to ConnectionDropped, and the
    connection is closed with FLOW_CONTROL_ERROR."""
    from ccproxyd.errors import ConnectionDropped
    from ccproxyd.upstream.h2connection import STREAM_WINDOW
    from ccproxyd.upstream.http2 import Http2Transport
    from ccproxyd.upstream.pool import map_transport_error

    frames = STREAM_WINDOW // 16384 + 1
    h2s.answers.append([head(*SSE_HEAD), raw(lambda s: b"".join(frame(DATA, 0, s, b"x" * 16384) for _ in range(frames))),
                        HOLD])

    async def run():
        context = ssl.create_default_context(cafile=str(certificates.ca_file))
        context.set_alpn_protocols(["h2"])
        transport = Http2Transport(httpx2.Limits(), context)
        url = httpx2.URL(h2s.url + "/chat/completions")
        try:
            response = await transport.send("POST", url, [(b"host", url.netloc), (b"content-length", b"2")], b"{}",
                                            {"connect": 10, "read": 10, "write": 10, "pool": 10})
            await asyncio.to_thread(wait_for, lambda: h2s.connections[-1]["closed"])    # nothing read meanwhile
            with pytest.raises(httpx2.RemoteProtocolError) as caught:
                async for _ in response.stream:
                    pass
            return caught.value
        finally:
            await transport.aclose()

    error = asyncio.run(run())
    assert isinstance(map_transport_error(error, "h2"), ConnectionDropped)
    assert h2s.connections[-1]["goaway"] == [FLOW_CONTROL_ERROR]


# ---------------------------------------------------------------- silence

@pytest.mark.parametrize("provider", ["h1", "h2"])
@pytest.mark.parametrize("after", ["head", "events"])
def test_silence_after_the_head_is_a_timeout(daemon, h1, h2s, provider, after):
    """The provider's read_timeout (1 s here) bounds the silence after the head, or after some
    events: a stream ends in a timeout_error event (pings kept it alive meanwhile), a whole answer
    is a 504; the request is not sent again."""
    for stream in (True, False):
        if provider == "h1":
            h1.answers.append([CHUNKED_HEAD + (b"%x\r\n%s\r\n" % (len(FIRST), FIRST) if after == "events" else b""), HOLD])
        else:
            h2s.answers.append([head(*SSE_HEAD)] + ([data(FIRST)] if after == "events" else []) + [HOLD])
        started = time.monotonic()
        r = ask(daemon, provider, stream)
        assert time.monotonic() - started < 5
        if stream:
            events = broken(r, "timeout_error")
            assert text_of(events) == ("Hello" if after == "events" else "")
            assert "ping" in [n for n, _ in events]
        else:
            failed(r, 504, "timeout_error")
    assert len((h1 if provider == "h1" else h2s).requests) == 2
    if provider == "h1":                                  # a body cut by a timeout: its connection goes
        h1.answers.append([h11(ANSWER)])
        assert complete(ask(daemon, "h1")) == "Hello there"
        assert len({r["connection"] for r in h1.requests}) == 3


# ---------------------------------------------------------------- the provider key echoed outside an error body

ECHOES = {
    # a header line without a colon, the key where the message's cut falls (80 characters)
    "malformed header line": ("h1", [b"HTTP/1.1 200 OK\r\n" + b"x" * 55 + b" echo {authorization}\r\n\r\n"]),
    # a body that says chunked but is not, the key where the chunk-size line is cut (40 characters)
    "not chunked after all": ("h1", [CHUNKED_HEAD + b'data: {"error":"bad key {authorization}"}\r\n\r\n']),
    # a second content-length made of the key (each value is quoted, scrubbed, then cut)
    "conflicting content-length": ("h1", [b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: "
                                          b"{authorization}" + b"x" * 100 + b"\r\n\r\nhello"]),
    # a content coding made of the key
    "content-encoding": ("h1", [h11(ANSWER, "content-encoding: x-{authorization}")]),
    # a header value h2 refuses (surrounding whitespace), which its error quotes
    "h2 header value": ("h2", [head(*SSE_HEAD, (b"x-echo", b" {authorization} ")), data(ANSWER, end=True)]),
    # a header that ccproxyd does not read: nothing to say about it, nothing leaks
    "well-formed header": ("h1", [h11(ANSWER, "x-echo-authorization: {authorization}")]),
}


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("case", sorted(ECHOES))
def test_a_key_echoed_in_the_head_or_framing_never_leaks(daemon, h1, h2s, case, stream):
    """No part of the key (its first 8 characters) reaches the client, /metrics or the log; the
    module's fixture checks the log and the cache once more at the end."""
    provider, steps = ECHOES[case]
    (h1 if provider == "h1" else h2s).answers.extend([steps, steps])
    logged = len(daemon.log_path.read_text())
    r = ask(daemon, provider, stream)
    assert CANARY[:8] not in r.text, r.text
    assert (h1 if provider == "h1" else h2s).requests[0]["authorization"] == f"Bearer {CANARY}"
    if case == "well-formed header":
        assert r.status_code == 200
    elif stream and r.status_code == 200:
        assert "[redact" in broken(r)[-1][1]["error"]["message"]      # masked, then cut
    else:
        assert "[redact" in failed(r, 500, "api_error")["error"]["message"]
    metrics = httpx2.get(daemon.url + "/metrics", timeout=10).text
    assert CANARY[:8] not in metrics
    time.sleep(0.1)                                         # the request's log lines are written
    assert CANARY[:8] not in daemon.log_path.read_text()[logged:]
