"""OpenTelemetry export against a real OTLP/HTTP receiver on loopback (tests/otlp_receiver.py):
the spans and metrics that arrive are decoded with opentelemetry-proto and checked against the
GenAI semantic conventions; the client's traceparent is continued; no key is in any of it."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx2
import pytest

from ccproxyd.observe import otel

from .conftest import CANARY, ROOT, TEST_ROUTES, Daemon, free_port
from .fake_upstream import text_script, usage
from .otlp_receiver import OtlpReceiver

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
CLIENT = 3                                       # SpanKind.SPAN_KIND_CLIENT in OTLP
ERROR = 2                                        # Status.STATUS_CODE_ERROR


@pytest.fixture
def receiver():
    r = OtlpReceiver().start()
    yield r
    r.stop()


def routes(tmp_path, fake):
    path = tmp_path / "routes.yaml"
    path.write_text(TEST_ROUTES.format(url=fake.url, dead_port=free_port()))
    return path


def ask(daemon, stream: bool, model: str = "claude-sonnet-4-5", **headers) -> httpx2.Response:
    return httpx2.post(daemon.url + "/v1/messages", headers=headers, timeout=30,
                       json={"model": model, "max_tokens": 50, "stream": stream,
                             "messages": [{"role": "user", "content": "hello"}]})


def test_one_genai_span_per_request_and_the_client_metrics(tmp_path, fake, receiver):
    d = Daemon(routes(tmp_path, fake), env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
                                            "OTEL_EXPORTER_OTLP_HEADERS": "x-otlp-token=tok-123",
                                            "OTEL_SERVICE_NAME": ""})
    try:
        fake.push(text_script("Hello", " there", use=usage(prompt=120, completion=7, cached=100)))
        streamed = ask(d, True, **{"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01",
                                   "x-claude-code-session-id": "sess-otel-1"})
        assert streamed.status_code == 200
        fake.push(text_script("Fine", finish="length"))
        whole = ask(d, False)
        assert whole.status_code == 200
        failed = ask(d, False, model="claude-nokey-1")               # its provider's key is not set
        assert failed.status_code >= 500
    finally:
        d.stop()                                # flushes the last spans and metric points on the way out
    names = {"gen_ai.client.token.usage", "gen_ai.client.operation.duration",
             "gen_ai.client.operation.time_to_first_chunk"}
    assert receiver.wait_for(lambda: len(receiver.spans) >= 3 and names <= {m["name"] for m in receiver.metrics})
    spans = {s["attributes"]["ccproxyd.request_id"]: s for s in receiver.spans}
    assert len(receiver.spans) == 3

    span = spans[streamed.headers["request-id"]]
    assert span["name"] == "chat claude-sonnet-4-5" and span["kind"] == CLIENT
    assert (span["trace_id"], span["parent"]) == (TRACE_ID, PARENT_ID)          # the client's trace, continued
    assert span["resource"]["service.name"] == "ccproxyd"
    a = span["attributes"]
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "mock"                  # not a well-known host: the provider's name
    assert (a["gen_ai.request.model"], a["gen_ai.response.model"]) == ("claude-sonnet-4-5", "gpt-mock")
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (120, 7)   # cached included
    assert a["gen_ai.usage.cache_read.input_tokens"] == 100
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert a["gen_ai.conversation.id"] == "sess-otel-1"
    assert a["gen_ai.request.stream"] is True
    assert 0 < a["gen_ai.response.time_to_first_chunk"] < (span["end"] - span["start"]) / 1e9
    assert (a["server.address"], a["server.port"]) == ("127.0.0.1", int(fake.url.rsplit(":", 1)[1].split("/")[0]))
    assert "error.type" not in a and span["status"] != ERROR

    span = spans[whole.headers["request-id"]]
    assert span["parent"] == "" and span["trace_id"] != TRACE_ID             # no traceparent: a trace of its own
    assert span["attributes"]["gen_ai.response.finish_reasons"] == ["length"]
    assert "gen_ai.response.time_to_first_chunk" not in span["attributes"]
    assert "gen_ai.conversation.id" not in span["attributes"]

    span = spans[failed.headers["request-id"]]
    assert span["status"] == ERROR and span["attributes"]["error.type"] == "api_error"
    assert span["attributes"]["gen_ai.provider.name"] == "nokey"

    metrics = {}
    for m in receiver.metrics:
        metrics.setdefault(m["name"], []).append(m)
    usage_points = [p for m in metrics["gen_ai.client.token.usage"] for p in m["points"]]
    assert metrics["gen_ai.client.token.usage"][0]["unit"] == "{token}"
    assert usage_points[0]["bounds"] == list(map(float, otel.TOKEN_BUCKETS))
    by_type = {}
    for p in usage_points:
        if p["attributes"]["gen_ai.request.model"] == "claude-sonnet-4-5":
            by_type[p["attributes"]["gen_ai.token.type"]] = by_type.get(p["attributes"]["gen_ai.token.type"], 0) + p["sum"]
    assert by_type == {"input": 120 + 10, "output": 7 + 5}                  # the two answered requests
    durations = [p for m in metrics["gen_ai.client.operation.duration"] for p in m["points"]]
    assert metrics["gen_ai.client.operation.duration"][0]["unit"] == "s"
    assert sum(p["count"] for p in durations) == 3
    assert any(p["attributes"].get("error.type") == "api_error" for p in durations)
    first = [p for m in metrics["gen_ai.client.operation.time_to_first_chunk"] for p in m["points"]]
    assert sum(p["count"] for p in first) == 1                              # streamed requests only

    assert all(headers.get("x-otlp-token") == "tok-123" for _, headers, _ in receiver.raw)
    assert not any(CANARY.encode() in body for _, _, body in receiver.raw)  # no key in any span or metric


def test_off_by_default_imports_nothing_of_opentelemetry():
    code = ("import sys, ccproxyd.server.app, ccproxyd.cli.main, ccproxyd.server.handlers, ccproxyd.observe.access as o; "
            "assert not o.telemetry_wanted(); "
            "print([m for m in sys.modules if m.startswith('opentelemetry') or m == 'ccproxyd.observe.otel'])")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_protocol_other_than_http_protobuf_is_refused_in_one_line(tmp_path, fake):
    env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
               MOCK_KEY=CANARY)
    out = subprocess.run([sys.executable, "-m", "ccproxyd", "serve", "--routes", str(routes(tmp_path, fake)),
                          "--port", str(free_port())], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "OTEL_EXPORTER_OTLP_PROTOCOL=grpc" in out.stderr and "http/protobuf" in out.stderr
    assert "Traceback" not in out.stderr
