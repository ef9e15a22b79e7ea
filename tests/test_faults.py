"""Never silently wrong: upstream garbage ends in an error (never cached), the provider key never
leaves, and failures are logged with who failed.  A real daemon with the cache on, in front of the
fake upstream."""

from __future__ import annotations

import base64
import json
import time

import httpx2
import pytest

from ccproxyd.observe import redact

from .conftest import CANARY, UPSTREAM_KINDS, Daemon, cached_routes
from .fake_upstream import Script, chunk, text_script, usage
from .grammar import check_stream, parse_sse



pytestmark = pytest.mark.upstreams(*UPSTREAM_KINDS)     # garbage and echoes over TLS and HTTP/2 too


@pytest.fixture(scope="module")
def proxy(upstream, upstream_kind, certificates, tmp_path_factory):
    tls = "" if upstream_kind == "http" else f", ca_file: {certificates.ca_file}" + (
        ", http2: true" if upstream_kind == "https-h2" else ", http2: false")
    path = cached_routes(tmp_path_factory.mktemp("faults"), upstream.url,
                         "retries: {attempts: 1}, breaker: {threshold: 1000}" + tls)
    cache_dir = path.parent / "cache"
    d = Daemon(path, extra_args=("--cache-dir", str(cache_dir)))
    yield d
    d.stop()                                            # asserts the key is not in the log
    for file in cache_dir.rglob("*"):
        if file.is_file():
            assert CANARY.encode() not in file.read_bytes(), f"the provider key leaked into {file}"


_n = [0]


def body(stream: bool) -> dict:
    _n[0] += 1                                          # a new question each time: no cache hit by accident
    return {"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": stream,
            "messages": [{"role": "user", "content": f"question {_n[0]} at {time.time()}"}]}


def post(proxy, payload: dict) -> httpx2.Response:
    return httpx2.post(proxy.url + "/v1/messages", json=payload, timeout=30)


def access_line(proxy, request_id: str) -> dict:
    for _ in range(50):
        for line in proxy.log_path.read_text().splitlines():
            if "ccproxyd.access: " in line:
                record = json.loads(line.split("ccproxyd.access: ", 1)[1])
                if record["request_id"] == request_id:
                    return record
        time.sleep(0.05)
    raise AssertionError(f"no access line for {request_id}")


GARBAGE = {
    "not json": [chunk({"content": "The answer is "}), b"data: {not json at all\n\n", chunk({"content": "42"}),
                 chunk(finish="stop"), chunk(choices=False, usage=usage())],
    "every line garbage": [b"data: <<<\n\n", b"data: >>>\n\n"],
    "a list, not an object": [chunk({"content": "x"}), b"data: [1, 2]\n\n", chunk(finish="stop")],
    "choices of the wrong shape": [chunk({"content": "x"}), {"choices": [1]}, chunk(finish="stop")],
    "usage of the wrong shape": [chunk({"content": "x"}), chunk(finish="stop"),
                                 chunk(choices=False, usage={"prompt_tokens": "many"})],
}


@pytest.mark.parametrize("case", sorted(GARBAGE))
def test_untranslatable_stream_ends_in_an_error_and_is_not_cached(proxy, fake, case):
    request = body(True)
    fake.push(Script(events=GARBAGE[case]))
    r = post(proxy, request)
    events = parse_sse(r.content)
    assert check_stream(events) == "error", f"{case}: {[n for n, _ in events]}"
    assert "message_stop" not in [n for n, _ in events]
    error = events[-1][1]["error"]
    assert error["type"] == "api_error" and "mock" in error["message"]
    line = access_line(proxy, r.headers["request-id"])
    assert (line["status"], line["error_type"], line["provider"], line["upstream_model"], line["attempts"]) == \
        (500, "api_error", "mock", "gpt-mock", 1)
    # logged once, at ERROR, with the request id and a traceback
    errors = [l for l in proxy.log_path.read_text().splitlines()
              if " ERROR " in l and r.headers["request-id"] in l]
    assert len(errors) == 1, errors
    # the same request again is a miss that reaches the upstream, not a replay of the hole
    fake.push(text_script("complete"))
    again = post(proxy, request)
    assert again.headers["x-ccproxyd-cache"] == "miss"
    assert check_stream(parse_sse(again.content)) == "complete"


@pytest.mark.parametrize("case", sorted(GARBAGE))
def test_untranslatable_non_streaming_answer_is_a_500(proxy, fake, case):
    fake.push(Script(events=GARBAGE[case]))
    r = post(proxy, body(False))
    assert r.status_code == 500, r.text
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "api_error"


def test_untranslatable_answers_are_counted(proxy, fake):
    fake.push(Script(events=GARBAGE["not json"]))
    post(proxy, body(True))
    metrics = httpx2.get(proxy.url + "/metrics").text
    count = [l for l in metrics.splitlines() if l.startswith('ccproxyd_untranslatable_total{provider="mock"}')]
    assert count and float(count[0].split()[-1]) >= 1


def test_failed_request_log_line_names_the_provider_and_attempts(proxy, fake):
    fake.push(Script(status=500, body={"error": {"message": "boom"}}))
    r = post(proxy, body(False))
    assert r.status_code == 500
    line = access_line(proxy, r.headers["request-id"])
    assert (line["provider"], line["attempts"], line["status"], line["error_type"]) == ("mock", 1, 500, "api_error")


ECHO_STATUSES = (400, 401, 403, 404, 422, 429, 500, 503)
ECHOES = {
    "openai": b'{"error": {"message": "Incorrect API key provided: {authorization}", "type": "invalid_request_error"}}',
    "bare": b'{"detail": "key={authorization} is not valid"}',
    "html": b"<html><body><h1>502 Bad Gateway</h1><pre>{authorization}</pre></body></html>",
}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("status", ECHO_STATUSES)
@pytest.mark.parametrize("shape", sorted(ECHOES))
def test_an_upstream_that_echoes_the_key_never_leaks_it(proxy, fake, status, shape, stream):
    fake.push(Script(status=status, body=ECHOES[shape], headers={"retry-after": "0"}))
    r = post(proxy, body(stream))
    assert r.status_code >= 400
    assert CANARY not in r.text
    assert r.json()["type"] == "error" and "[redacted]" in r.json()["error"]["message"]
    assert fake.requests[-1]["headers"]["authorization"] == f"Bearer {CANARY}"   # it really was echoed
    if status == 429:
        time.sleep(1.1)                                    # the provider's cool-down after a 429


def test_an_in_stream_error_that_echoes_the_key_never_leaks_it(proxy, fake):
    for code in (401, 500):
        event = b'data: {"error": {"code": %d, "message": "upstream rejected {authorization}"}}\n\n' % code
        fake.push(Script(events=[chunk({"content": "partial"}), event]))
        r = post(proxy, body(True))
        events = parse_sse(r.content)
        assert check_stream(events) == "error"
        assert CANARY not in r.text and "[redacted]" in events[-1][1]["error"]["message"]
    fake.push(Script(events=[b"data: not json {authorization}\n\n"]))
    r = post(proxy, body(True))
    assert CANARY not in r.text and "[redacted]" in r.text


def test_no_key_in_metrics_or_health_after_echoes(proxy, fake):
    fake.push(Script(status=500, body=ECHOES["openai"]))
    post(proxy, body(False))
    assert CANARY not in httpx2.get(proxy.url + "/metrics").text
    assert CANARY not in httpx2.get(proxy.url + "/health").text


@pytest.mark.parametrize("form", ["bare", "bearer", "url", "basic", "json-slash"])
def test_scrub_masks_every_form_of_a_registered_secret(form):
    secret = "sk-proj/ab+c=d_0123456789"
    redact.register(secret)
    try:
        text = {"bare": secret, "bearer": f"Bearer {secret}",
                "url": "sk-proj%2Fab%2Bc%3Dd_0123456789",
                "basic": "Basic " + base64.b64encode(f"user:{secret}".encode()).decode(),
                "json-slash": secret.replace("/", "\\/")}[form]
        cleaned = redact.scrub(f"the key {text} was refused")
        assert "0123456789" not in cleaned and "[redacted]" in cleaned
    finally:
        redact.clear()


def test_scrub_leaves_text_alone_without_secrets_and_ignores_short_values():
    redact.register("abc")                                 # too short to be a key: never masks words
    assert redact.scrub("abc def") == "abc def"
    redact.clear()


def test_a_streamed_answer_through_the_cache_has_a_time_to_first_token(proxy, fake):
    fake.push(text_script("first", " token"))
    r = post(proxy, body(True))
    line = access_line(proxy, r.headers["request-id"])
    assert line["cache"] == "miss" and isinstance(line["ttft_ms"], float) and 0 < line["ttft_ms"] <= line["latency_ms"]


def test_a_key_echoed_where_the_message_is_cut_leaves_no_prefix(proxy, fake):
    """The message is trimmed to 300 characters: the key is masked before the cut, so no part of it
    survives (the cut used to fall inside it)."""
    padding = "x" * 280
    fake.push(Script(status=400, body=b'{"error": {"message": "' + padding.encode() + b' {authorization} rejected"}}'))
    r = post(proxy, body(False))
    assert r.status_code == 400 and CANARY[:8] not in r.text


def test_a_tool_call_cut_by_max_tokens_through_the_cache_answers_without_it(proxy, fake):
    """The leader streams tool arguments live; a call cut by max_tokens is left out of the whole
    message a non-streaming client gets (as without the cache), and the answer is not stored."""
    events = [chunk({"content": "Writing it."}),
              chunk({"tool_calls": [{"index": 0, "id": "c1", "type": "function",
                                     "function": {"name": "Write", "arguments": '{"content": "half'}}]}),
              chunk(finish="length"), chunk(choices=False, usage=usage())]
    request = body(False)
    request["tools"] = [{"name": "Write", "input_schema": {"type": "object"}}]
    fake.push(Script(events=events))
    r = post(proxy, request)
    assert r.status_code == 200, r.text
    assert r.json()["stop_reason"] == "max_tokens" and r.json()["content"] == [{"type": "text", "text": "Writing it."}]
    fake.push(Script(events=events))
    assert post(proxy, request).headers["x-ccproxyd-cache"] == "miss"
