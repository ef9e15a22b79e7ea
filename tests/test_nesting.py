"""A body may nest MAX_NESTING levels: one level more is a 400, and a body exactly that deep, its
deepest value in any field a recursive step of ccproxyd walks, translates, counts, keys and logs
without an error (no RecursionError, no value orjson refuses to write)."""

from __future__ import annotations

import orjson
import pytest

from ccproxyd.config.table import Model
from ccproxyd.errors import InvalidRequest
from ccproxyd.flow.cache import cache_key
from ccproxyd.observe.access import redacted
from ccproxyd.translate import tokens
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
