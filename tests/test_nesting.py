"""A body may nest MAX_NESTING levels: one level more is a 400, and a body exactly that deep, its
deepest value in any field a recursive step of ccproxyd walks, translates, counts, keys and logs
without an error (no RecursionError, no value orjson refuses to write)."""

from __future__ import annotations

import base64

import orjson
import pytest

from ccproxyd.config.routing import Target
from ccproxyd.config.table import Model, Provider
from ccproxyd.errors import InvalidRequest
from ccproxyd.flow import proxy
from ccproxyd.flow.cache import cache_key
from ccproxyd.observe.access import redacted
from ccproxyd.translate import signature, tokens
from ccproxyd.translate.request import to_openai
from ccproxyd.translate.responses import to_responses
from ccproxyd.translate.wire.messages import MAX_NESTING, check_body, validate


def nested(levels: int):
    """A value `levels` deep: objects and arrays in turn, a string at the bottom."""
    value = "deep"
    for level in range(levels):
        value = {"a": value} if level % 2 else [value]
    return value


def depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


def body_with(place, levels: int) -> dict:
    """A Claude-Code-like request whose deepest value is put by `place` so that the whole body
    is `levels` deep."""
    body = {"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": True,
            "system": [{"type": "text", "text": "be brief"}],
            "tools": [{"name": "Read", "description": "read", "input_schema": {
                "type": "object", "properties": {"path": {"type": "string"}}}}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]},
                         {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Read",
                                                            "input": {"path": "/x"}}]},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                                       "content": [{"type": "text", "text": "ok"}]}]}]}
    at = place(body)
    at["deep"] = nested(levels)                # the deepest value: the body is `at`'s level + levels deep
    at["deep"] = nested(2 * levels - depth(body))
    assert depth(body) == levels
    return body


PLACES = {
    "metadata": lambda b: b.setdefault("metadata", {}),
    "a tool's schema": lambda b: b["tools"][0]["input_schema"]["properties"]["path"],
    "a tool call's input": lambda b: b["messages"][1]["content"][0]["input"],
    "a tool result's block": lambda b: b["messages"][2]["content"][0]["content"][0],
    "a system block": lambda b: b["system"][0],
    "a text block": lambda b: b["messages"][0]["content"][0],
}

MODELS = {
    "chat": Model(name="m", provider="p", upstream="up", context_window=128000, max_output_tokens=8000),
    "responses": Model(name="m", provider="p", upstream="up", context_window=128000, max_output_tokens=8000, api="responses", reasoning=True,
                       reasoning_control="reasoning_effort"),
    "gemini schemas": Model(name="m", provider="p", upstream="up", context_window=128000, max_output_tokens=8000, tool_schema="gemini",
                            thought_signatures="gemini"),
}


def test_one_level_more_is_refused():
    ok = body_with(PLACES["metadata"], MAX_NESTING)
    assert check_body(orjson.dumps(ok)) == ok
    with pytest.raises(InvalidRequest, match=f"nested more than {MAX_NESTING} levels deep"):
        check_body(orjson.dumps(body_with(PLACES["metadata"], MAX_NESTING + 1)))


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("place", PLACES)
def test_the_deepest_body_allowed_goes_everywhere(place, kind):
    body = check_body(orjson.dumps(body_with(PLACES[place], MAX_NESTING)))
    try:
        validate(body)
    except InvalidRequest:               # a field that must be a string, say: a 400, fine
        return
    model = MODELS[kind]
    upstream, _ = to_responses(body, model) if model.api == "responses" else to_openai(body, model)
    assert orjson.loads(orjson.dumps(upstream))
    assert len(cache_key(upstream, "p", "http://x/v1", "client", "claude-sonnet-4-5", "summarized")) == 64
    assert tokens.count_request(body) > 0
    assert depth(redacted(body)) == MAX_NESTING


def test_a_gemini_schema_that_translation_deepens_past_what_orjson_writes_is_a_400():
    """Gemini's subset turns each `prefixItems` level into two: within MAX_NESTING as sent, too deep
    once translated; refused like a body too deep as sent (was a 500)."""
    node = {"type": "string"}
    for _ in range(120):
        node = {"type": "array", "prefixItems": [node, {"type": "string"}]}
    body = check_body(orjson.dumps(dict(body_with(PLACES["metadata"], 10), tools=[{"name": "T", "input_schema": node}])))
    target = Target(MODELS["gemini schemas"], Provider("p", "http://x/v1"))
    with pytest.raises(InvalidRequest, match="nested too deep once translated for up"):
        proxy.payload(body, target)
    assert proxy.payload(body, Target(MODELS["chat"], Provider("p", "http://x/v1")))     # as sent, it fits


def test_converted_tools_written_once_are_refused_as_deep_as_the_body_holds_them():
    """flow.proxy.payload writes converted tools once and puts the bytes in the body as they are
    (translate.tools.Converted.written): written at the depth the body holds them, so that what
    is too deep in the body is refused, the first time and every time after, at every depth
    around orjson's limit (a level off once sent such a body upstream)."""
    from ccproxyd.translate import tools as ttools

    target = Target(MODELS["gemini schemas"], Provider("p", "http://x/v1"))
    outcomes = set()
    for levels, pad in ((levels, pad) for levels in range(70, 90) for pad in (0, 1)):
        node = {"type": "object"}
        for _ in range(pad):                    # one level more: translation adds them two at a time
            node = {"type": "object", "properties": {"a": node}}
        for _ in range(levels):
            node = {"type": "array", "prefixItems": [node, {"type": "string"}]}
        schema = {"type": "object", "properties": {"x": node}}
        body = check_body(orjson.dumps(dict(body_with(PLACES["metadata"], 10), tools=[{"name": "T", "input_schema": schema}])))
        try:
            orjson.dumps(proxy.upstream_request(body, target.model)[0])
            expected = "sent"
        except TypeError:
            expected = "refused"
        for _ in range(2):                      # the second time with the tools' bytes kept
            try:
                proxy.payload(body, target)
                got = "sent"
            except InvalidRequest:
                got = "refused"
            assert got == expected, (levels, pad)
        outcomes.add(expected)
        ttools._CONVERTED.clear()
    assert outcomes == {"sent", "refused"}      # the limit lies in the range


def test_a_forged_signature_that_carries_deep_json_is_a_400():
    """A signature is a string the depth check does not open; what it carries goes upstream."""
    carried = (b'{"p":"p","m":"up","d":{"i":[{"type":"reasoning.text","text":"","x":' + b"[" * 300 + b"1"
               + b"]" * 300 + b'}],"f":["text"]}}')
    forged = signature.PREFIX + base64.urlsafe_b64encode(carried).decode().rstrip("=")
    model = Model(name="m", provider="p", upstream="up", context_window=128000, max_output_tokens=8000,
                  reasoning=True, reasoning_control="reasoning_effort", reasoning_details=True)
    body = check_body(orjson.dumps({"model": "claude-x", "max_tokens": 100, "messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "", "signature": forged},
                                          {"type": "text", "text": "ok"}]},
        {"role": "user", "content": "on"}]}))
    with pytest.raises(InvalidRequest, match="nested too deep once translated"):
        proxy.payload(body, Target(model, Provider("p", "http://x/v1")))
