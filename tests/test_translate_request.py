"""Table tests: Anthropic request -> OpenAI request, one JSON fixture pair per case."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ccproxyd.config import Model
from ccproxyd.errors import InvalidRequest
from ccproxyd.translate import request as treq

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
    from ccproxyd.observe import redacted

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
