"""Table tests: Anthropic request -> OpenAI request, one JSON fixture pair per case."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from ccproxyd.config.table import Model
from ccproxyd.errors import InvalidRequest
from ccproxyd.translate import request as treq
from ccproxyd.translate import tools as ttools
from ccproxyd.translate.wire import messages as messages_shape

CASES = json.loads((Path(__file__).parent / "fixtures" / "request_cases.json").read_text())


def model(**flags) -> Model:
    base = dict(name="m", provider="p", upstream="up-model", context_window=128000, max_output_tokens=16384)
    reasoning = flags.get("reasoning", False)
    base.update(reasoning_control="reasoning_effort" if reasoning else "none", sampling=not reasoning)
    base.update({k: tuple(v) if isinstance(v, list) else v for k, v in flags.items()})
    return Model(**base)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_request_translation(case):
    body, names = treq.to_openai(case["anthropic"], model(**case["model"]))
    assert body == case["openai"]
    for short, original in names.items():
        assert treq.upstream_tool_name(original) == short


def test_long_tool_name_maps_back():
    long_name = "mcp__" + "x" * 80
    body, names = treq.to_openai({"model": "c", "max_tokens": 5, "messages": [],
                                  "tools": [{"name": long_name, "input_schema": {}}]}, model())
    short = body["tools"][0]["function"]["name"]
    assert len(short) <= 64 and names[short] == long_name


@pytest.mark.parametrize("budget,effort", [(0, "low"), (1024, "low"), (1025, "medium"), (8192, "medium"), (8193, "high")])
def test_budget_to_effort(budget, effort):
    assert treq.budget_to_effort(budget) == effort


@pytest.mark.parametrize("wanted,allowed,got", [
    ("max", ("low", "medium", "high"), "high"),
    ("minimal", ("low", "medium", "high"), "low"),
    ("none", ("minimal", "low"), "minimal"),
    ("medium", ("none", "low", "medium", "high"), "medium"),
    ("bogus", ("low", "high"), "low"),
])
def test_clamp_effort(wanted, allowed, got):
    assert treq.clamp_effort(wanted, allowed) == got


@pytest.mark.parametrize("body,needle", [
    ({"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
    ({"model": "c", "max_tokens": 5, "messages": [], "tool_choice": {"type": "maybe"}, "tools": [{"name": "a"}]}, "tool_choice"),
    ({"model": "c", "max_tokens": 5, "messages": [], "tools": [{"description": "no name"}]}, "tools"),
    ({"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "file", "file_id": "f"}}]}]}, "image source"),
])
def test_unsupported_input_is_invalid_request(body, needle):
    with pytest.raises(InvalidRequest) as info:
        treq.to_openai(body, model())
    assert needle in info.value.message


def test_debug_body_log_is_redacted():
    from ccproxyd.observe.access import redacted

    body = {"model": "c", "metadata": {"user_id": "user_abc_account_x"}, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo"}},
        {"type": "text", "text": "keep me"}]}]}
    out = redacted(body)
    assert out["metadata"]["user_id"] == "[redacted]"
    assert out["messages"][0]["content"][0]["source"]["data"] == "[redacted]"
    assert out["messages"][0]["content"][1]["text"] == "keep me"
    assert body["metadata"]["user_id"] == "user_abc_account_x"          # the request itself is untouched


@pytest.mark.parametrize("user_id,session", [
    ('{"device_id":"d","account_uuid":"","session_id":"s-1"}', "s-1"),
    ("user_abc_account_123_session_9f8e-7d6c", "9f8e-7d6c"),
    ("plain-user", "plain-user"),
])
def test_session_of_claude_code_user_ids(user_id, session):
    assert treq.session_of(user_id) == session


# ---------------------------------------------------------------- what the strictest server takes

_STRING = {"type": "string"}
_TOOL_CALL = {"type": "object", "required": ["id", "type", "function"], "properties": {
    "id": _STRING, "type": {"const": "function"},
    "function": {"type": "object", "required": ["name", "arguments"], "properties": {"name": _STRING, "arguments": _STRING}}}}
_PART = {"type": "object", "required": ["type"], "properties": {"type": {"enum": ["text", "image_url", "file"]}}}
# The intersection of OpenAI's, vLLM's and llama-cpp-python's request schemas for the fields ccproxyd
# sends (llama-cpp-python: llama_types.ChatCompletionRequest*Message, where an assistant's `content`
# is NotRequired[str], so null is refused).  Extra keys (reasoning_content, stream_options) are
# ignored by all three.  `file` parts (PDF documents) are OpenAI-only; the others refuse them.
STRICT_MESSAGE = {"oneOf": [
    {"type": "object", "required": ["role", "content"], "properties": {"role": {"const": "system"}, "content": _STRING}},
    {"type": "object", "required": ["role", "content"], "properties": {
        "role": {"const": "user"},
        "content": {"oneOf": [_STRING, {"type": "array", "minItems": 1, "items": _PART}]}}},
    {"type": "object", "required": ["role"], "anyOf": [{"required": ["content"]}, {"required": ["tool_calls"]}],
     "properties": {"role": {"const": "assistant"}, "content": _STRING,
                    "tool_calls": {"type": "array", "minItems": 1, "items": _TOOL_CALL}}},
    {"type": "object", "required": ["role", "content", "tool_call_id"], "properties": {
        "role": {"const": "tool"}, "content": _STRING, "tool_call_id": _STRING}},
]}
STRICT_REQUEST = {"type": "object", "required": ["model", "messages"], "properties": {
    "model": _STRING, "messages": {"type": "array", "minItems": 1, "items": STRICT_MESSAGE},
    "tools": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["type", "function"], "properties": {
        "type": {"const": "function"}, "function": {"type": "object", "required": ["name", "parameters"], "properties": {
            "name": _STRING, "description": _STRING, "parameters": {"type": "object"}}}}}},
    "tool_choice": {"oneOf": [{"enum": ["none", "auto", "required"]}, {"type": "object", "required": ["type", "function"]}]},
    "stop": {"type": "array", "minItems": 1, "maxItems": 4, "items": _STRING},
    "max_tokens": {"type": "integer", "minimum": 1}, "max_completion_tokens": {"type": "integer", "minimum": 1},
    "temperature": {"type": "number"}, "top_p": {"type": "number"}, "user": _STRING, "stream": {"type": "boolean"},
    "parallel_tool_calls": {"type": "boolean"}}}


def _nulls(value, where="") -> list[str]:
    """Paths of every null in a request: no field ccproxyd sends may be null."""
    if value is None:
        return [where or "."]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _nulls(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _nulls(v, f"{where}.{i}")]
    return []


STRICT_CASES = {
    "assistant with only a tool call": [
        {"role": "user", "content": "run ls"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "Bash", "input": {"command": "ls"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "a.py"}]}],
    "assistant with blank text and a tool call": [
        {"role": "user", "content": "run ls"},
        {"role": "assistant", "content": [{"type": "text", "text": "  "},
                                          {"type": "tool_use", "id": "call_1", "name": "Bash", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": []}]}],
    "assistant with only thinking": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "x"}]},
        {"role": "user", "content": "again"}],
    "empty assistant turn": [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": []}, {"role": "user", "content": "again"}],
    "tool result with an image and an error": [
        {"role": "user", "content": "look"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "c2", "name": "Read", "input": {"file_path": "/a.png"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c2", "is_error": True, "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}]}]}],
    "interrupted tool call": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "c3", "name": "Bash", "input": {"command": "x"}}]},
        {"role": "user", "content": "never mind"}],
}


@pytest.mark.parametrize("flags", [{}, {"reasoning": True, "reasoning_replay": "reasoning_content"},
                                   {"max_tokens_field": "max_tokens", "vision": False, "structured_output": "json_object"}],
                         ids=["default", "reasoning-replay", "local-server"])
@pytest.mark.parametrize("name", list(STRICT_CASES))
def test_translated_history_fits_the_strictest_schema(name, flags):
    import jsonschema

    body = {"model": "c", "max_tokens": 100, "messages": STRICT_CASES[name], "temperature": 0.5, "stop_sequences": ["x"],
            "tools": [{"name": "Bash", "input_schema": {"type": "object"}}, {"name": "Read", "input_schema": {}}],
            "tool_choice": {"type": "tool", "name": "Bash"}, "metadata": {"user_id": "u"}}
    sent, _ = treq.to_openai(body, model(**flags))
    jsonschema.validate(sent, STRICT_REQUEST)
    assert _nulls(sent) == []


# (not the cases in a provider's own shape: files, and OpenRouter's cache_control text parts)
@pytest.mark.parametrize("case", [c for c in CASES if '"type": "file"' not in json.dumps(c["openai"])
                                  and not c["model"].get("cache_control")], ids=lambda c: c["name"])
def test_every_fixture_fits_the_strictest_schema(case):
    import jsonschema

    sent, _ = treq.to_openai(case["anthropic"], model(**case["model"]))
    jsonschema.validate(sent, STRICT_REQUEST)
    assert _nulls(sent) == []


def test_the_strict_schema_refuses_what_llama_cpp_python_refuses():
    """The check can fail: the old translation of an assistant tool call (content null) is refused."""
    import jsonschema

    old = {"model": "m", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": None,
           "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(old, STRICT_REQUEST)
    assert _nulls(old) == [".messages.1.content"]


def test_tools_converted_once_give_every_request_its_names():
    deferred = {"name": "mcp__db__query", "input_schema": {"type": "object"}, "defer_loading": True}
    tools = [{"name": "Read", "input_schema": {"type": "object", "$schema": "x"}}, {"name": "a.b", "input_schema": {}}, deferred]
    first, second = {}, {}
    out = ttools.convert_tools(tools, first)
    again = ttools.convert_tools(orjson.loads(orjson.dumps(tools)), second)      # a later request, same tools
    assert again is out and first == second == {"Read": "Read", ttools.upstream_tool_name("a.b"): "a.b"}
    assert [t["function"]["name"] for t in out] == ["Read", ttools.upstream_tool_name("a.b")]
    loaded = ttools.convert_tools(tools, {}, {"mcp__db__query"})                  # what the conversation loaded counts
    assert [t["function"]["name"] for t in loaded][-1] == "mcp__db__query"
    assert ttools.convert_tools(tools, {}, dialect="gemini") is not out
    for i in range(ttools.CONVERTED_KEPT + 5):                                    # bounded in number
        ttools.convert_tools([{"name": f"T{i}"}], {})
    assert len(ttools._CONVERTED) <= ttools.CONVERTED_KEPT


def test_kept_tool_conversions_are_bounded_in_bytes():
    big = [{"name": f"T{i}", "description": "x" * (ttools.CONVERTED_ONE // 4)} for i in range(5)]
    assert ttools.convert_tools(big, {})[0]["function"]["name"] == "T0"
    assert ttools.convert_tools(big, {}) is not ttools.convert_tools(big, {})        # too large to keep
    for i in range(40):                                   # 40 sets of 200 KB: more than CONVERTED_BYTES
        ttools.convert_tools([{"name": f"U{i}", "description": "y" * (200 << 10)}], {})
    kept = sum(len(key[0]) for key in ttools._CONVERTED)
    assert kept == ttools._KEPT_BYTES[0] and kept <= ttools.CONVERTED_BYTES


def test_bad_tools_are_refused_every_time():
    for _ in range(2):
        with pytest.raises(InvalidRequest, match="every tool needs a name"):
            ttools.convert_tools([{"input_schema": {}}], {})


def test_every_reasoning_replay_mode_is_one_the_schema_takes():
    """routes.yaml's enum and the translation's table of in-content forms name the same modes."""
    from ccproxyd.config.table import SCHEMA

    modes = SCHEMA["$defs"]["model"]["properties"]["reasoning_replay"]["enum"]
    assert set(modes) == {"none", "reasoning_content", "reasoning", *treq.REASONING_IN_CONTENT}


def _request(*content) -> dict:
    return {"model": "claude-x", "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": list(content)}]}


@pytest.mark.parametrize("body, said", [
    (_request({"type": "text", "text": "a"}, {"type": "tool_use", "id": "t", "name": "n", "input": []}),
     "messages.1.content.1.input: must be an object, got an array"),
    (_request({"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": 3}]}),
     "messages.1.content.0.content.1.text: must be a string, got an integer"),
    (_request({"type": "tool_result", "tool_use_id": "t", "is_error": "yes"}),
     "messages.1.content.0.is_error: must be a boolean, got a string"),
    (_request({"type": "image", "source": {"type": "url", "url": 7}}),
     "messages.1.content.0.source.url: must be a string, got an integer"),
    (_request({"type": ["text"]}), "messages.1.content.0.type: must be a string, got an array"),
    (_request("text"), "messages.1.content.0: must be a content block object, got a string"),
    (_request({"type": "thinking", "thinking": "t", "signature": None}),
     "messages.1.content.0.signature: must be a string, got null"),
])
def test_a_malformed_block_is_named_by_its_path(body, said):
    with pytest.raises(InvalidRequest) as caught:
        messages_shape.validate(body)
    assert caught.value.message == said


def test_blocks_of_unknown_types_and_fields_pass_unchecked():
    messages_shape.validate(_request({"type": "server_tool_use", "id": 5, "input": "x"},
                                     {"type": "text", "text": "a", "citations": 5, "extra": {"a": [1]}}))


IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}


# A tool result's content -> the tool message's text (and whether an image follows in a user message)
@pytest.mark.parametrize("content, is_error, text, image", [
    ("done", False, "done", False),
    ("", False, "(no output)", False),
    ("  \n", False, "(no output)", False),
    ([], False, "(no output)", False),
    ([{"type": "text", "text": "one"}], False, "one", False),
    ([{"type": "text", "text": "   "}], False, "(no output)", False),
    ([{"type": "text", "text": "one"}], True, "Error: one", False),
    ([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], False, "a\nb", False),
    ([{"type": "text", "text": "a"}, {"type": "text", "text": " "}, {"type": "text", "text": "b"}], False, "a\nb", False),
    ([IMAGE], False, "(see the attached content below)", True),
    ([{"type": "text", "text": "see"}, IMAGE], True, "Error: see", True),
])
def test_a_tool_result_becomes_a_tool_message(content, is_error, text, image):
    body = {"model": "c", "max_tokens": 10, "messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "call_9", "name": "Read", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_9", "content": content,
                                      **({"is_error": True} if is_error else {})}]}]}
    messages = treq.to_openai(body, model(vision=True))[0]["messages"]
    tool = next(m for m in messages if m["role"] == "tool")
    assert tool == {"role": "tool", "tool_call_id": "call_9", "content": text}
    after = messages[messages.index(tool) + 1:]
    assert bool(after and after[0]["role"] == "user" and isinstance(after[0]["content"], list)
                and after[0]["content"][0]["type"] == "image_url") == image
