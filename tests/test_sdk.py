"""The official anthropic SDK against ccproxyd in front of the fake upstream (all real HTTP), for
each kind of upstream: plain HTTP, TLS with HTTP/1.1 and TLS with HTTP/2 (conftest.UPSTREAM_KINDS)."""

from __future__ import annotations

import json

import anthropic
import httpx2
import pytest

from ccproxyd.translate import tokens
from ccproxyd.money.rates import parse_prices

from .conftest import UPSTREAM_KINDS, sdk_message
from .fake_upstream import Script, chunk, text_script, tool_script, usage
from .grammar import check_stream, parse_sse
from .support import parse_prometheus

MESSAGES = [{"role": "user", "content": "hi"}]
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.upstreams(*UPSTREAM_KINDS)]


@pytest.fixture
def client(daemon):
    return anthropic.Anthropic(base_url=daemon.url, api_key="sk-client", max_retries=0)


def raw_stream(daemon, model="claude-sonnet-4-5", **extra) -> list[tuple[str, dict]]:
    body = {"model": model, "max_tokens": 1000, "stream": True, "messages": MESSAGES, **extra}
    r = httpx2.post(daemon.url + "/v1/messages?beta=true", json=body, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    return parse_sse(r.content)


def test_text_stream_with_sdk(client, fake):
    fake.push(text_script("Hello", " world", use=usage(100, 7, cached=60)))
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=1000, messages=MESSAGES) as s:
        texts = list(s.text_stream)
        message = s.get_final_message()
    assert "".join(texts) == "Hello world"
    assert message.model == "claude-sonnet-4-5"
    assert message.id.startswith("msg_")
    assert message.stop_reason == "end_turn"
    assert [b.type for b in message.content] == ["text"]
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens, message.usage.output_tokens) == (40, 60, 7)
    sent = fake.requests[0]["body"]
    assert sent["model"] == "gpt-mock" and sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert fake.requests[0]["headers"]["authorization"] == "Bearer sk-mock-canary-3f9a"
    assert "x-api-key" not in fake.requests[0]["headers"]
    head = fake.requests[0]["headers"]
    assert head["host"] == fake.url.split("/")[2] and head["content-type"] == "application/json"
    assert head["accept-encoding"] == "identity" and head["user-agent"].startswith("ccproxyd/")


def test_non_streaming_with_sdk(client, fake):
    fake.push(text_script("Plain", " answer"))
    message = client.messages.create(model="claude-opus-4-1", max_tokens=50, messages=MESSAGES)
    assert message.content[0].text == "Plain answer"
    assert message.model == "claude-opus-4-1"
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 5


def test_structured_output_reaches_the_upstream_as_response_format(client, fake):
    fake.push(text_script('{"title": "Fix the', ' login bug"}'))
    schema = {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}
    message = client.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=MESSAGES,
                                     extra_body={"output_config": {"format": {"type": "json_schema", "schema": schema}}})
    assert json.loads(message.content[0].text) == {"title": "Fix the login bug"}
    sent = fake.requests[0]["body"]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["schema"]["properties"] == schema["properties"]


def test_upstream_answering_json_to_a_stream_request(client, fake):
    fake.push(Script(body={"id": "x", "object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "json body"}, "finish_reason": "stop"}],
        "usage": usage(3, 2)}))
    with client.messages.stream(model="claude-x", max_tokens=50, messages=MESSAGES) as s:
        message = s.get_final_message()
    assert message.content[0].text == "json body"


def test_tool_call_stream(client, fake):
    fake.push(tool_script("Write", '{"file_path": "/tmp/a.txt", "content": "hi"}', text="Writing."))
    tools = [{"name": "Write", "description": "write a file",
              "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}}}]
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=1000, messages=MESSAGES, tools=tools) as s:
        message = s.get_final_message()
    assert [b.type for b in message.content] == ["text", "tool_use"]
    assert message.content[1].name == "Write"
    assert message.content[1].id == "call_1"
    assert message.content[1].input == {"file_path": "/tmp/a.txt", "content": "hi"}
    assert message.stop_reason == "tool_use"
    assert fake.requests[0]["body"]["tools"][0]["function"]["name"] == "Write"


def test_interleaved_parallel_tool_calls(daemon, client, fake):
    def tc(i, **kw):
        return chunk({"tool_calls": [dict(index=i, **kw)]})
    script = Script(events=[
        tc(0, id="call_a", type="function", function={"name": "Read", "arguments": ""}),
        tc(1, id="call_b", type="function", function={"name": "Glob", "arguments": "{\"pat"}),
        tc(0, function={"arguments": "{\"file_path\":"}),
        tc(1, function={"arguments": "tern\": \"*.py\"}"}),
        tc(0, function={"arguments": " \"x.py\"}"}),
        chunk(finish="tool_calls"), chunk(choices=False, usage=usage())])
    fake.push(script)
    events = raw_stream(daemon)
    assert check_stream(events) == "complete"
    fake.push(script)
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=1000, messages=MESSAGES) as s:
        message = s.get_final_message()
    assert [(b.id, b.name, b.input) for b in message.content] == [
        ("call_a", "Read", {"file_path": "x.py"}), ("call_b", "Glob", {"pattern": "*.py"})]


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_becomes_signed_thinking(daemon, client, fake, field):
    script = Script(events=[chunk({field: "Let me"}), chunk({field: " think."}), chunk({"content": "42"}),
                            chunk(finish="stop"), chunk(choices=False, usage=usage())])
    fake.push(script)
    assert check_stream(raw_stream(daemon, model="claude-reasoner-1")) == "complete"
    fake.push(script)
    with client.messages.stream(model="claude-reasoner-1", max_tokens=2000, messages=MESSAGES,
                                thinking={"type": "enabled", "budget_tokens": 1024}) as s:
        message = s.get_final_message()
    assert message.content[0].type == "thinking"
    assert message.content[0].thinking == "Let me think."
    assert message.content[0].signature.startswith("ccpx1.")
    assert message.content[1].text == "42"
    sent = fake.requests[-1]["body"]
    assert sent["model"] == "reasoner-up"
    assert sent["reasoning_effort"] == "low"
    assert sent["max_completion_tokens"] == 2000
    assert "temperature" not in sent and "thinking" not in sent


@pytest.mark.parametrize("thinking,blocks", [
    (None, ["text"]),                                       # not asked: reasoning dropped, still counted
    ({"type": "disabled"}, ["text"]),
    ({"type": "adaptive", "display": "omitted"}, ["thinking", "text"]),
    ({"type": "adaptive"}, ["thinking", "text"]),
])
def test_thinking_blocks_only_when_the_request_asks(client, fake, thinking, blocks):
    fake.push(Script(events=[chunk({"reasoning_content": "x" * 400}), chunk({"content": "42"}), chunk(finish="stop")]))
    extra = {"thinking": thinking} if thinking else {}
    with client.messages.stream(model="claude-reasoner-1", max_tokens=2000, messages=MESSAGES, **extra) as s:
        message = s.get_final_message()
    assert [b.type for b in message.content] == blocks
    if blocks[0] == "thinking":
        assert message.content[0].thinking == ("" if thinking.get("display") == "omitted" else "x" * 400)
        assert message.content[0].signature.startswith("ccpx1.")
    assert message.usage.output_tokens >= 40              # the reasoning (400 x, about 50 tokens) is paid for either way


def test_thinking_round_trip_replays_reasoning_content(client, fake):
    fake.push(text_script("ok"))
    history = [{"role": "user", "content": "q"},
               {"role": "assistant", "content": [
                   {"type": "thinking", "thinking": "plan", "signature": "ccpx1.eyJwIjoibW9jayJ9"},
                   {"type": "tool_use", "id": "call_9", "name": "Bash", "input": {"command": "ls"}}]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_9", "content": "a.py"},
                                            {"type": "text", "text": "go on"}]}]
    client.messages.create(model="claude-reasoner-1", max_tokens=100, messages=history)
    sent = fake.requests[0]["body"]["messages"]
    assert sent[1] == {"role": "assistant", "reasoning_content": "plan", "tool_calls": [
        {"id": "call_9", "type": "function", "function": {"name": "Bash", "arguments": "{\"command\":\"ls\"}"}}]}
    assert sent[2] == {"role": "tool", "tool_call_id": "call_9", "content": "a.py"}
    assert sent[3] == {"role": "user", "content": "go on"}


ANSWER = "Counting tokens, honestly: one tokenizer, both ends."


def test_no_usage_from_upstream_is_counted_with_o200k(daemon, fake):
    """An upstream that should have sent usage and did not: both counts come from o200k at the
    end (message_start had only a guess)."""
    fake.push(Script(events=[chunk({"content": ANSWER}), chunk(finish="stop")]))
    events = raw_stream(daemon)
    assert check_stream(events) == "complete"
    final_usage = [d for n, d in events if n == "message_delta"][0]["usage"]
    body = {"model": "claude-sonnet-4-5", "max_tokens": 1000, "messages": MESSAGES}
    assert final_usage["input_tokens"] == tokens.count_request(body)
    assert final_usage["output_tokens"] == tokens.count_text(ANSWER) != len(ANSWER) // 4


def test_stream_usage_false_counts_once_and_the_same_at_both_ends(daemon, fake):
    """`stream_usage: false`: the input is counted before message_start, and message_delta says
    the same; the log line marks the usage as estimated."""
    fake.push(Script(events=[chunk({"content": ANSWER[:9]}), chunk({"content": ANSWER[9:]}), chunk(finish="stop")]))
    messages = [{"role": "user", "content": "How many tokens is this question, counted by ccproxyd?"}]
    events = raw_stream(daemon, model="claude-counted-1", messages=messages)
    assert check_stream(events) == "complete"
    start_usage = events[0][1]["message"]["usage"]
    final_usage = [d for n, d in events if n == "message_delta"][0]["usage"]
    expected = tokens.count_request({"messages": messages})
    assert start_usage["input_tokens"] == final_usage["input_tokens"] == expected
    assert final_usage["output_tokens"] == tokens.count_text(ANSWER)
    lines = [json.loads(line.split("ccproxyd.access: ", 1)[1]) for line in daemon.log_path.read_text().splitlines()
             if "ccproxyd.access: " in line]
    mine = [line for line in lines if line["client_model"] == "claude-counted-1"]
    assert mine and mine[-1]["usage_estimated"] is True and mine[-1]["input_tokens"] == expected
    assert all(line["usage_estimated"] is False for line in lines if line["client_model"] == "claude-sonnet-4-5"
               and line["status"] == 200 and line["output_tokens"] == 7)
    metrics = httpx2.get(daemon.url + "/metrics", timeout=10).text
    assert 'ccproxyd_estimated_usage_total{provider="mock"}' in metrics


def test_pings_while_upstream_is_silent(daemon, fake):
    fake.push(Script(events=[chunk({"content": "a"}), 1.0, chunk({"content": "b"}), chunk(finish="stop")]))
    events = raw_stream(daemon)
    assert check_stream(events) == "complete"
    names = [n for n, _ in events]
    assert "ping" in names[names.index("content_block_start"):]


def test_stop_with_tool_calls_is_tool_use_and_content_filter_is_refusal(daemon, fake):
    fake.push(Script(events=[chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "Bash", "arguments": "{}"}}]}),
                             chunk(finish="stop")]))
    events = raw_stream(daemon)
    assert [d for n, d in events if n == "message_delta"][0]["delta"]["stop_reason"] == "tool_use"
    fake.push(Script(events=[chunk({"content": "I can't"}), chunk(finish="content_filter")]))
    events = raw_stream(daemon)
    assert [d for n, d in events if n == "message_delta"][0]["delta"]["stop_reason"] == "refusal"


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("status,exc_class,etype", [
    (400, anthropic.BadRequestError, "invalid_request_error"),
    (404, anthropic.NotFoundError, "not_found_error"),
    (500, anthropic.InternalServerError, "api_error"),
    (503, anthropic.APIStatusError, "overloaded_error"),
])
def test_upstream_errors_become_anthropic_errors(client, fake, status, exc_class, etype):
    fake.push(Script(status=status, body={"error": {"message": f"upstream says {status}", "type": "x"}}))
    with pytest.raises(exc_class) as info:
        client.messages.create(model="claude-flaky", max_tokens=10, messages=MESSAGES)
    err = info.value
    assert err.body["type"] == "error"
    assert err.body["error"]["type"] == etype
    assert f"upstream says {status}" in err.message
    assert err.status_code == (529 if status == 503 else status)


def test_rate_limit_past_the_cap_goes_to_the_client_then_cools_down(client, fake):
    fake.push(Script(status=429, body={"error": {"message": "slow down"}}, headers={"retry-after": "30"}))
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(model="claude-cool", max_tokens=10, messages=MESSAGES)
    assert info.value.response.headers["retry-after"] == "30"
    assert info.value.body["error"] == {"type": "rate_limit_error", "message": "slow down (provider 'cool', HTTP 429)"}
    with pytest.raises(anthropic.APIStatusError) as info:          # the provider is cooling down
        client.messages.create(model="claude-cool", max_tokens=10, messages=MESSAGES)
    assert info.value.status_code == 529
    assert 25 <= int(info.value.response.headers["retry-after"]) <= 30
    assert len(fake.requests) == 1
    raw_head = fake.requests[0]["raw_head"].lower()
    assert raw_head.count("user-agent:") == 1 and "user-agent: team-proxy/1" in raw_head   # overrides ours
    assert raw_head.count("host:") == 1 and "x-title: ccproxyd-tests" in raw_head


def test_cut_mid_stream_ends_with_error_event(daemon, client, fake):
    script = Script(events=[chunk({"content": "partial"})], cut=True)
    fake.push(script)
    events = raw_stream(daemon)
    assert check_stream(events) == "error"
    assert "message_stop" not in [n for n, _ in events]
    fake.push(script)
    with pytest.raises(anthropic.APIError):
        with client.messages.stream(model="claude-sonnet-4-5", max_tokens=100, messages=MESSAGES) as s:
            s.get_final_message()


def test_in_stream_error_object(daemon, fake):
    fake.push(Script(events=[chunk({"content": "x"}), {"error": {"code": 502, "message": "provider died"}}]))
    events = raw_stream(daemon)
    assert check_stream(events) == "error"
    assert events[-1][1]["error"] == {"type": "overloaded_error", "message": "provider died"}


def test_missing_key_names_the_variable(client, fake):
    with pytest.raises(anthropic.InternalServerError) as info:
        client.messages.create(model="claude-nokey", max_tokens=10, messages=MESSAGES)
    assert "CCPROXYD_TEST_UNSET_KEY" in info.value.message
    assert info.value.response.headers["x-should-retry"] == "false"
    assert fake.requests == []


def test_dead_primary_falls_back(client, fake):
    fake.push(text_script("from fallback"))
    message = client.messages.create(model="claude-fallback-1", max_tokens=10, messages=MESSAGES)
    assert message.content[0].text == "from fallback"
    assert message.model == "claude-fallback-1"


def test_dead_provider_without_fallback_is_overloaded(client):
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(model="claude-dead", max_tokens=10, messages=MESSAGES)
    assert info.value.status_code == 529
    assert info.value.body["error"]["type"] == "overloaded_error"


@pytest.mark.parametrize("body,needle", [
    (b"{not json", "not valid JSON"),
    (b"[1,2]", "JSON object"),
    (b'{"max_tokens": 5, "messages": []}', "model"),
    (b'{"model": "claude-x", "messages": []}', "max_tokens"),
    (b'{"model": "claude-x", "max_tokens": 5}', "messages"),
    (b'{"model": "claude-x", "max_tokens": 5, "messages": [{"role": "robot", "content": "x"}]}', "role"),
    (b'{"model": "claude-x", "max_tokens": 5, "messages": [], "tools": [{"name": "x", "type": 5}]}',
     "tools.0.type: must be a string, got an integer"),
    (b'{"model": "claude-x", "max_tokens": 5, "system": 5, "messages": []}',
     "system: must be a string or an array of text blocks, got an integer"),
    (b'{"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "text", "text": null}]}]}',
     "messages.0.content.0.text: must be a string, got null"),
    (b'{"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a", "content": 5}]}]}',
     "messages.0.content.0.content: must be a string or an array of content blocks, got an integer"),
    (b'{"model": "claude-x", "max_tokens": "five", "messages": []}', "max_tokens: must be an integer >= 0, got a string"),
    (b'{"model": "claude-x", "max_tokens": 5, "messages": [], "metadata": {"user_id": [[[1]]]}}',
     "metadata: must be an object whose user_id is a string"),
    (b'{"model": "claude-x", "max_tokens": 5, "messages": [], "x": ' + b"[" * 250 + b"]" * 250 + b"}",
     "nested more than 250 levels"),
])
def test_bad_requests_are_400_invalid_request(daemon, fake, body, needle):
    r = httpx2.post(daemon.url + "/v1/messages", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["type"] == "error"
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert needle in r.json()["error"]["message"]
    assert fake.requests == []


def test_max_tokens_zero_is_answered_locally(daemon, client, fake):
    message = client.messages.create(model="claude-sonnet-4-5", max_tokens=0, messages=MESSAGES)
    assert message.content == [] and message.stop_reason == "max_tokens"
    assert check_stream(raw_stream(daemon, max_tokens=0)) == "complete"
    assert fake.requests == []


# ---------------------------------------------------------------- other endpoints

def test_count_tokens(client, fake):
    small = client.messages.count_tokens(model="claude-sonnet-4-5", messages=MESSAGES)
    big = client.messages.count_tokens(
        model="claude-sonnet-4-5", system="You are a careful assistant.", messages=MESSAGES,
        tools=[{"name": "Bash", "description": "run a shell command", "input_schema": {"type": "object"}}])
    assert 0 < small.input_tokens < big.input_tokens
    assert fake.requests == []


def test_models_health_root(daemon, client):
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert "claude-sonnet-4-5-20250929" in ids and all(i.startswith("claude") for i in ids)
    assert httpx2.get(daemon.url + "/health").json()["status"] == "ok"
    assert httpx2.head(daemon.url + "/").status_code == 200
    assert httpx2.get(daemon.url + "/").status_code == 200
    r = httpx2.get(daemon.url + "/v2/nothing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


@pytest.mark.parametrize("prices, window, expected", [
    ([{"input": 1.25, "output": 10.0, "cached_input": 0.125}], 400_000, "$1.25 in / $10 out per Mtok, 400k context"),
    ([{"up_to": 200_000, "input": 0.2, "output": 0.5}, {"input": 0.4, "output": 1.0}], 2_000_000,
     "$0.2 in / $0.5 out per Mtok, 2000k context"),
    (None, 128_000, "no price known, 128k context"),
])
def test_model_description_is_the_price_claude_codes_picker_shows(prices, window, expected):
    from ccproxyd.config.table import Model
    from ccproxyd.server.handlers import _model_object
    priced = parse_prices(prices, model="up", origin="t", source="t")[0] if prices is not None else None
    model = Model("m", "p", "up", context_window=window, max_output_tokens=100, prices=priced)
    assert _model_object("claude-x", "x", model)["description"] == expected


def test_model_list_says_what_answers_and_pages(daemon, client, fake):
    listed = list(client.models.list(limit=3))                  # the SDK follows has_more/after_id
    ids = [m.id for m in listed]
    assert ids[-2:] == ["claude-via-limited", "claude-via-reasoner"] and len(ids) == len(set(ids)) == 9
    by_id = {m.id: m for m in listed}
    assert by_id["claude-via-limited"].display_name == "limited-up (limited) via ccproxyd"
    assert by_id["claude-opus-4-1-20250805"].display_name == "Claude Opus 4.1 → gpt-mock (mock) via ccproxyd"
    first = httpx2.get(daemon.url + "/v1/models?limit=2").json()
    assert len(first["data"]) == 2 and first["has_more"] is True and first["last_id"] == ids[1]
    after = httpx2.get(daemon.url + f"/v1/models?limit=2&after_id={ids[1]}").json()
    assert [m["id"] for m in after["data"]] == ids[2:4]
    before = httpx2.get(daemon.url + f"/v1/models?limit=2&before_id={ids[4]}").json()
    assert [m["id"] for m in before["data"]] == ids[2:4]
    assert httpx2.get(daemon.url + "/v1/models?limit=0").status_code == 400
    assert client.models.retrieve("claude-via-reasoner").max_input_tokens == 128000
    assert client.models.retrieve("claude-anything-routed").display_name == "gpt-mock (mock) via ccproxyd"
    fake.push(text_script("from the limited model"))
    client.messages.create(model="claude-via-limited", max_tokens=10, messages=MESSAGES)
    assert fake.requests[-1]["body"]["model"] == "limited-up"          # the alias, not the '*' route


@pytest.mark.upstreams("http")
def test_a_model_id_no_route_matches_is_404(tmp_path, fake):
    from .conftest import Daemon
    routes = tmp_path / "routes.yaml"
    routes.write_text(f"""
providers: {{mock: {{base_url: "{fake.url}", api_key_env: MOCK_KEY}}}}
models: {{gpt-mock: {{provider: mock, context_window: 1000, max_output_tokens: 100}}}}
routes: [{{match: "claude-*", model: gpt-mock}}]
""")
    daemon = Daemon(routes, log_path=tmp_path / "d.log")
    try:
        r = httpx2.get(daemon.url + "/v1/models/gpt-4o")
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error" and "gpt-4o" in r.text
        assert httpx2.get(daemon.url + "/v1/models/claude-x").json()["display_name"] == "gpt-mock (mock) via ccproxyd"
    finally:
        daemon.stop()


def test_request_log_line(daemon, client, fake):
    import json as _json
    import time as _time

    fake.push(text_script("logged", use=usage(1000, 100, cached=200)))
    raw = client.messages.with_raw_response.create(model="claude-opus-4-1", max_tokens=10, messages=MESSAGES)
    rid = raw.headers["request-id"]
    assert rid.startswith("req_")
    _time.sleep(0.2)
    lines = [_json.loads(l.split("ccproxyd.access: ", 1)[1]) for l in daemon.log_path.read_text().splitlines()
             if "ccproxyd.access: " in l]
    line = next(l for l in lines if l["request_id"] == rid)
    assert line["client_model"] == "claude-opus-4-1" and line["provider"] == "mock"
    assert line["upstream_model"] == "gpt-mock" and line["status"] == 200 and line["attempts"] == 1
    assert (line["input_tokens"], line["cached_tokens"], line["output_tokens"]) == (800, 200, 100)
    assert "sk-mock-canary-3f9a" not in daemon.log_path.read_text()
    metrics = httpx2.get(daemon.url + "/metrics").text + httpx2.get(daemon.url + "/health").text
    assert "sk-mock-canary-3f9a" not in metrics


def test_metrics_count_requests(daemon, client, fake):
    def total(samples, status):
        return sum(v for k, v in samples.items()
                   if k.startswith("ccproxyd_requests_total") and f'status="{status}"' in k and 'model="gpt-mock"' in k)
    before = parse_prometheus(httpx2.get(daemon.url + "/metrics").text)
    for _ in range(3):
        fake.push(text_script("m", use=usage(10, 4)))
        client.messages.create(model="claude-opus-4-1", max_tokens=10, messages=MESSAGES)
    fake.push(Script(status=400, body={"error": {"message": "bad"}}))
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model="claude-opus-4-1", max_tokens=10, messages=MESSAGES)
    after = parse_prometheus(httpx2.get(daemon.url + "/metrics").text)
    assert total(after, 200) - total(before, 200) == 3
    out_key = 'ccproxyd_tokens_total{kind="output"}'
    assert after[out_key] - before.get(out_key, 0) == 12
    err_key = 'ccproxyd_errors_total{type="invalid_request_error"}'
    assert after[err_key] - before.get(err_key, 0) == 1
    assert 'ccproxyd_breaker_state{provider="mock"}' in after


def test_costs_command_summarises_the_running_daemon(daemon, client, fake):
    import subprocess
    import sys

    fake.push(text_script("priced", use=usage(1000, 100)))
    client.messages.create(model="claude-opus-4-1", max_tokens=10, messages=MESSAGES)
    out = subprocess.run([sys.executable, "-m", "ccproxyd", "costs", "--url", daemon.url],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(": ", 1) for line in out.stdout.splitlines())
    assert int(lines["requests"]) >= 1 and lines["cost"].startswith("$")
    dead = subprocess.run([sys.executable, "-m", "ccproxyd", "costs", "--url", "http://127.0.0.1:1"],
                          capture_output=True, text=True)
    assert dead.returncode == 1 and "cannot read" in dead.stderr
    import os
    by_port = subprocess.run([sys.executable, "-m", "ccproxyd", "costs"], capture_output=True, text=True,
                             env={**os.environ, "CCPROXYD_PORT": str(daemon.port)})
    assert by_port.returncode == 0 and by_port.stdout.startswith("requests: ")
    for url, error in ((daemon.url + "/metrics", None), (daemon.url + "/health", "HTTP 404"),
                       ("not a url", "cannot read"), (daemon.url + "/nowhere", "cannot read")):
        other = subprocess.run([sys.executable, "-m", "ccproxyd", "costs", "--url", url], capture_output=True, text=True)
        assert "Traceback" not in other.stderr
        if error is None:
            assert other.returncode == 0, other.stderr
        else:
            assert other.returncode == 1 and error in other.stderr and len(other.stderr.splitlines()) == 1


WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 8}


@pytest.mark.parametrize("stream", [True, False])
def test_web_search_on_a_model_that_cannot_search_says_so(client, fake, stream):
    """Claude Code's WebSearch request (captured from 2.1.332): only the web_search server tool.
    The route's model cannot search, so the answer says so as Anthropic would (the tool call, an
    `unavailable` result), never the model's guess passed off as results; nothing goes upstream."""
    request = dict(model="claude-sonnet-4-5", max_tokens=8000, tools=[WEB_SEARCH], tool_choice={"type": "auto"},
                   system="You run a web search for another Claude model. Search once, then reply with a summary.",
                   messages=[{"role": "user", "content": [{"type": "text", "text": "Perform a web search for the query: ccproxyd release notes"}]}])
    message = sdk_message(client, stream, **request)
    assert [b.type for b in message.content] == ["server_tool_use", "web_search_tool_result", "text"]
    call, result, text = message.content
    assert call.name == "web_search" and call.input == {"query": "ccproxyd release notes"}
    assert result.tool_use_id == call.id and result.content.error_code == "unavailable"
    assert "No web search took place" in text.text and "gpt-mock" in text.text
    assert message.usage.server_tool_use.web_search_requests == 0
    assert fake.requests == []


def test_web_search_beside_other_tools_is_dropped_and_the_request_goes_upstream(client, fake):
    fake.push(text_script("answered"))
    message = client.messages.create(model="claude-sonnet-4-5", max_tokens=100, messages=MESSAGES, tools=[
        WEB_SEARCH, {"name": "Read", "input_schema": {"type": "object", "properties": {}}}])
    assert message.content[0].text == "answered"
    assert [t["function"]["name"] for t in fake.requests[0]["body"]["tools"]] == ["Read"]


def test_a_streamed_tool_call_reaches_the_client_as_it_is_written(daemon, client, fake):
    """Claude Code shows a long Write as it is written: the argument fragments go out live."""
    content = "line of a long file\n" * 200
    args = json.dumps({"file_path": "/tmp/long.txt", "content": content})
    pieces = [args[i:i + 500] for i in range(0, len(args), 500)]
    events = [chunk({"tool_calls": [{"index": 0, "id": "call_w", "type": "function",
                                     "function": {"name": "Write", "arguments": ""}}]})]
    # each piece written 10 ms after the one before (the pieces of one read go out as one delta)
    events += [e for p in pieces for e in (0.01, chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}))]
    fake.push(Script(events=events + [chunk(finish="tool_calls"), chunk(choices=False, usage=usage())]))
    streamed = raw_stream(daemon, tools=[{"name": "Write", "input_schema": {"type": "object"}}])
    assert check_stream(streamed) == "complete"
    deltas = [d["delta"]["partial_json"] for n, d in streamed if n == "content_block_delta"]
    assert len(deltas) == len(pieces) and "".join(deltas) == args
    fake.push(Script(events=events + [chunk(finish="tool_calls"), chunk(choices=False, usage=usage())]))
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=5000, messages=MESSAGES,
                                tools=[{"name": "Write", "input_schema": {"type": "object"}}]) as s:
        message = s.get_final_message()
    assert message.content[0].input == {"file_path": "/tmp/long.txt", "content": content}
