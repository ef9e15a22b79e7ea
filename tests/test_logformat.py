"""--log-format json: every line the daemon writes is one JSON object; the access line's fields
are at its top level; a traceback is a field; provider secrets stay out."""

from __future__ import annotations

import json
import logging
import sys
import time

import httpx2
import pytest
from hypothesis import given, strategies as st

from ccproxyd.money import clock
from ccproxyd.observe import logformat, redact
from ccproxyd.observe.access import Scrubbing

from .conftest import CANARY, TEST_ROUTES, Daemon, free_port
from .fake_upstream import Script, chunk, text_script


def message(stream: bool, model: str = "claude-sonnet-4-5") -> dict:
    return {"model": model, "max_tokens": 50, "stream": stream,
            "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def json_daemon(tmp_path, fake):
    path = tmp_path / "routes.yaml"
    path.write_text(TEST_ROUTES.format(url=fake.url, dead_port=free_port()))
    d = Daemon(path, extra_args=("--no-cache", "--log-format", "json"))
    yield d
    if d.proc.poll() is None:
        d.stop()


def test_every_line_of_a_json_logging_daemon_is_one_json_object(json_daemon, fake):
    d = json_daemon
    fake.push(text_script("Hello", " there"))
    ok = httpx2.post(d.url + "/v1/messages", json=message(True), headers={"x-claude-code-session-id": "sess-42"},
                     timeout=30)
    assert ok.status_code == 200
    bad = httpx2.post(d.url + "/v1/messages", content=b'{"model": ', timeout=30)       # not JSON: 400
    assert bad.status_code == 400
    # a provider that echoes the key in its error, and one whose stream cannot be translated
    fake.push(Script(status=401, body={"error": {"message": "Incorrect API key: {authorization}"}}))
    echoed = httpx2.post(d.url + "/v1/messages", json=message(False), timeout=30)
    assert echoed.status_code >= 500                # the proxy's key was refused: not the client's fault
    fake.push(Script(events=[chunk({"content": "x"}), b"data: {not json\n\n"]))
    broken = httpx2.post(d.url + "/v1/messages", json=message(True), timeout=30)
    d.stop()                                    # also asserts the key is nowhere in the output
    lines = [line for line in d.log_path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]          # every line parses, or this fails
    assert all(isinstance(r, dict) and {"time", "level", "logger"} <= r.keys() for r in records), lines
    assert any(r["logger"].startswith("sanic") for r in records)          # Sanic's own lines too
    access = {r["request_id"]: r for r in records if r["logger"] == "ccproxyd.access"}
    line = access[ok.headers["request-id"]]
    assert "message" not in line                             # fields at the top level, not a string
    assert (line["status"], line["session_id"], line["provider"], line["stream"]) == (200, "sess-42", "mock", True)
    assert line["input_tokens"] == 10 and line["output_tokens"] == 5 and line["finish_reason"] == "stop"
    assert access[bad.headers["request-id"]]["status"] == 400
    assert access[echoed.headers["request-id"]]["status"] == echoed.status_code
    failed = [r for r in records if r["level"] == "ERROR" and broken.headers["request-id"] in r.get("message", "")]
    assert len(failed) == 1 and failed[0]["traceback"].startswith("Traceback"), failed
    assert "Untranslatable" in failed[0]["traceback"]


def test_the_traceback_field_is_scrubbed_of_secrets():
    secret = "sk-traceback-secret-0123456789"
    redact.register(secret)
    try:
        try:
            raise ValueError(f"upstream said: bad key {secret}")
        except ValueError:
            record = logging.LogRecord("ccproxyd.proxy", logging.ERROR, __file__, 1, "failed with %s", (secret,),
                                       sys.exc_info())
        line = Scrubbing(logformat.JsonFormatter()).format(record)
    finally:
        redact.clear()
    parsed = json.loads(line)
    assert secret not in line
    assert parsed["message"] == "failed with [redacted]"
    assert "ValueError: upstream said: bad key [redacted]" in parsed["traceback"]


@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))     # up to 2100
def test_the_text_format_writes_the_time_as_logging_does(created):
    """The text formatter makes a line's seconds once a second; what it writes is logging's own."""
    record = logging.LogRecord("ccproxyd.access", logging.INFO, __file__, 1, "line", None, None)
    record.created, record.msecs = created, (created - int(created)) * 1000
    assert logformat.TextFormatter().formatTime(record) == logging.Formatter().formatTime(record)
    assert logformat.TextFormatter().format(record) == logging.Formatter(logformat.TEXT).format(record)


@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
def test_the_access_line_time_is_the_utc_second(at):
    assert clock.stamp(at) == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
