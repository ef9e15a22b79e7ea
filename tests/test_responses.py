"""OpenAI Responses API models (`api: responses`): request shape, stream translation, replay."""

from __future__ import annotations

import anthropic
import pytest

from ccproxyd.errors import ClientFacingError
from ccproxyd.translate import signature
from ccproxyd.translate.response import accumulate
from ccproxyd.translate.responses import ResponsesTranslator, to_responses

from .conftest import sdk_message
from .fake_upstream import responses_script, web_search_script
from .grammar import check_stream, parse_sse
from .support import GPT5

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_request_items_tools_reasoning_and_replay():
    sig = signature.make("openai", "gpt-5", {"id": "rs_9", "encrypted_content": "ENC",
                                             "summary": [{"type": "summary_text", "text": "plan"}]})
    foreign = signature.make("openai", "o3", {"id": "rs_8", "encrypted_content": "OTHER"})
    body = {
        "model": "claude-sonnet-4-5", "max_tokens": 200000, "stream": True,
        "system": [{"type": "text", "text": "You are Claude Code."}],
        "thinking": {"type": "enabled", "budget_tokens": 2000}, "stop_sequences": ["END"],
        "tools": [{"name": "Write", "description": "write a file", "input_schema": {
            "$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
            "properties": {"path": {"type": "string"}}}}],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
        "messages": [
            {"role": "user", "content": "write hello.txt"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "plan", "signature": sig},
                {"type": "thinking", "thinking": "old", "signature": foreign},
                {"type": "text", "text": "Writing it."},
                {"type": "tool_use", "id": "call_1", "name": "Write", "input": {"path": "hello.txt"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "done"},
                {"type": "text", "text": "thanks"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}]},
        ]}
    out, names = to_responses(body, GPT5)
    assert out["model"] == "gpt-5" and out["stream"] is True and out["store"] is False
    assert out["instructions"] == "You are Claude Code."
    assert out["max_output_tokens"] == 128000
    assert out["reasoning"] == {"summary": "auto", "effort": "medium"}
    assert out["include"] == ["reasoning.encrypted_content"]
    assert out["tools"] == [{"type": "function", "name": "Write", "description": "write a file", "strict": False,
                             "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}]
    assert out["tool_choice"] == "auto" and out["parallel_tool_calls"] is False
    assert "stop" not in out and "stream_options" not in out and "temperature" not in out
    assert out["input"] == [
        {"role": "user", "content": [{"type": "input_text", "text": "write hello.txt"}]},
        {"type": "reasoning", "id": "rs_9", "encrypted_content": "ENC",
         "summary": [{"type": "summary_text", "text": "plan"}]},       # o3's reasoning is not replayed
        {"role": "assistant", "content": "Writing it."},
        {"type": "function_call", "call_id": "call_1", "name": "Write", "arguments": '{"path":"hello.txt"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "done"},
        {"role": "user", "content": [{"type": "input_text", "text": "thanks"},
                                     {"type": "input_image", "image_url": "data:image/png;base64,iVBO",
                                      "detail": "auto"}]},
    ]
    assert names == {"Write": "Write"}


def test_structured_output_goes_to_text_format():
    body = {"model": "c", "max_tokens": 50, "messages": [{"role": "user", "content": "title?"}],
            "output_config": {"format": {"type": "json_schema", "schema": {"type": "object", "properties": {}}}}}
    out, _ = to_responses(body, GPT5)
    assert out["text"] == {"format": {"type": "json_schema", "name": "structured_output",
                                      "schema": {"type": "object", "properties": {}}, "strict": False}}


def translate(script) -> list[tuple[str, dict]]:
    t = ResponsesTranslator("claude-sonnet-4-5", provider="openai", upstream_model="gpt-5",
                            tool_names={"Write": "Write"})
    events = t.start()
    for event in script.events:
        events += t.feed(event)
    return events + t.finish(saw_done=False)


def test_stream_thinking_text_and_tool_call():
    events = translate(responses_script(summary="Let me think.", text="Sure, writing.",
                                        call=("Write", '{"path": "a.txt"}')))
    message = accumulate(events)
    kinds = [b["type"] for b in message["content"]]
    assert kinds == ["thinking", "text", "tool_use"]
    thinking, text, tool = message["content"]
    assert thinking["thinking"] == "Let me think." and text["text"] == "Sure, writing."
    assert signature.reasoning_item(thinking["signature"], "openai", "gpt-5")["encrypted_content"] == "enc-abc"
    assert tool["name"] == "Write" and tool["input"] == {"path": "a.txt"} and tool["id"] == "call_r1"
    assert message["stop_reason"] == "tool_use"
    assert message["usage"] == {"input_tokens": 20, "output_tokens": 12, "cache_creation_input_tokens": 0,
                                "cache_read_input_tokens": 10}


def test_reasoning_without_summary_still_carries_the_item():
    message = accumulate(translate(responses_script(text="Hi")))
    assert [b["type"] for b in message["content"]] == ["thinking", "text"]
    assert message["content"][0]["thinking"] == ""
    assert signature.reasoning_item(message["content"][0]["signature"], "openai", "gpt-5")["id"] == "rs_1"
    assert message["stop_reason"] == "end_turn"


def test_incomplete_is_max_tokens():
    assert accumulate(translate(responses_script(text="cut", status="incomplete")))["stop_reason"] == "max_tokens"


@pytest.mark.parametrize("event", [
    {"type": "response.failed", "response": {"status": "failed", "error": {"code": "server_error", "message": "boom"}}},
    {"type": "error", "code": "rate_limit_exceeded", "message": "slow down"},
])
def test_failed_and_error_events_raise(event):
    t = ResponsesTranslator("c", provider="openai", upstream_model="gpt-5")
    with pytest.raises(ClientFacingError):
        t.feed(event)


def test_stream_cut_before_completed_is_an_error():
    script = responses_script(text="half")
    script.events = script.events[:-1]
    with pytest.raises(ClientFacingError):
        translate(script)


def test_whole_response_object():
    t = ResponsesTranslator("c", provider="openai", upstream_model="gpt-5", tool_names={"Write": "Write"})
    response = {"object": "response", "status": "completed",
                "usage": {"input_tokens": 5, "output_tokens": 3},
                "output": [{"type": "reasoning", "id": "rs_2", "encrypted_content": "E",
                            "summary": [{"type": "summary_text", "text": "a"}, {"type": "summary_text", "text": "b"}]},
                           {"type": "message", "content": [{"type": "output_text", "text": "hello"}]}]}
    message = accumulate(t.start() + t.whole(response) + t.finish(saw_done=False))
    assert message["content"][0]["thinking"] == "a\n\nb" and message["content"][1]["text"] == "hello"


# ---------------------------------------------------------------- through the daemon

def test_two_turns_through_the_sdk_replay_the_reasoning(daemon, fake):
    client = anthropic.Anthropic(base_url=daemon.url, api_key="k", max_retries=0)
    fake.push(responses_script(summary="Plan: write it.", call=("Write", '{"path": "x"}')))
    tools = [{"name": "Write", "description": "w", "input_schema": {"type": "object"}}]
    messages = [{"role": "user", "content": "write x"}]
    with client.messages.stream(model="claude-responses-1", max_tokens=1000, messages=messages, tools=tools,
                                thinking={"type": "enabled", "budget_tokens": 9000}) as stream:
        first = stream.get_final_message()
    assert fake.requests[-1]["path"] == "/v1/responses"
    assert fake.requests[-1]["body"]["reasoning"] == {"summary": "auto", "effort": "high"}
    assert [b.type for b in first.content] == ["thinking", "tool_use"] and first.stop_reason == "tool_use"
    fake.push(responses_script(text="Done."))
    messages += [{"role": "assistant", "content": [b.model_dump() for b in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": first.content[1].id,
                                               "content": "ok"}]}]
    raw = client.messages.with_raw_response.create(model="claude-responses-1", max_tokens=1000, messages=messages,
                                                   tools=tools, stream=True)
    assert check_stream(parse_sse(raw.http_response.read())) == "complete"
    replayed = fake.requests[-1]["body"]["input"]
    assert replayed[1] == {"type": "reasoning", "id": "rs_1", "encrypted_content": "enc-abc",
                           "summary": [{"type": "summary_text", "text": "Plan: write it."}]}
    assert replayed[2]["type"] == "function_call" and replayed[3]["type"] == "function_call_output"



@pytest.mark.parametrize("stream", [True, False])
def test_web_search_runs_on_openai_and_comes_back_as_anthropic_sends_it(daemon, fake, stream):
    """A model with `web_search: openai` (the test table's gpt5-mock) gets OpenAI's web_search tool;
    the search comes back as server_tool_use + web_search_tool_result blocks, and is counted."""
    fake.push(web_search_script("ccproxyd release notes", ["https://example.org/a", "https://example.org/b"],
                                "Two pages mention it."))
    client = anthropic.Anthropic(base_url=daemon.url, api_key="k", max_retries=0)
    request = dict(model="claude-responses-1", max_tokens=4000,
                   tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 8}],
                   messages=[{"role": "user", "content": "Perform a web search for the query: ccproxyd release notes"}])
    message = sdk_message(client, stream, **request)
    assert [b.type for b in message.content] == ["server_tool_use", "web_search_tool_result", "text"]
    call, result, text = message.content
    assert call.input == {"query": "ccproxyd release notes"} and result.tool_use_id == call.id
    assert [r.url for r in result.content] == ["https://example.org/a", "https://example.org/b"]
    assert text.text == "Two pages mention it."
    assert message.usage.server_tool_use.web_search_requests == 1
    sent = fake.requests[-1]["body"]
    assert {"type": "web_search"} in sent["tools"] and "web_search_call.action.sources" in sent["include"]


def test_web_search_openai_needs_the_responses_api():
    from ccproxyd.config import table as config
    from ccproxyd.errors import ConfigError
    text = """
providers: {p: {base_url: "http://127.0.0.1:1/v1"}}
models: {m: {provider: p, context_window: 1000, max_output_tokens: 100, web_search: openai}}
routes: [{match: "*", model: m}]
"""
    with pytest.raises(ConfigError, match="web_search: openai searches through the Responses API"):
        config.load(text)


def test_a_stored_web_search_answer_replays_with_the_live_grammar():
    from ccproxyd.flow.cache import message_events
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "stop_reason": "end_turn",
               "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 2}, "content": [
                   {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "q"}},
                   {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": [
                       {"type": "web_search_result", "url": "https://a", "title": "a", "encrypted_content": "",
                        "page_age": None}]},
                   {"type": "text", "text": "answer"}]}
    events = message_events(message)
    assert check_stream(events) == "complete"
    assert accumulate(events)["content"] == message["content"]
