"""Requests captured from Claude Code (tests/fixtures/claude_code/: 2.1.197, and 2.1.332 with an MCP
server behind its ToolSearch) through the request translator, checked against docs/PROTOCOL.md §7.2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ccproxyd.config.table import Model
from ccproxyd.translate.request import to_openai

CAPTURES = sorted((Path(__file__).parent / "fixtures" / "claude_code").glob("*.json"))
OPENAI_KEYS = {"model", "messages", "stream", "stream_options", "max_completion_tokens", "tools", "tool_choice",
               "parallel_tool_calls", "reasoning_effort", "user", "stop"}
MESSAGE_LEAKS = ("cache_control", "tool_use_id", "signature", '"type": "tool_result"', '"type": "thinking"')
# 2.1.197 asks for thinking with a large budget; 2.1.332 for adaptive thinking at output_config.effort medium
EFFORT = {"2.1.197": "high", "2.1.332": "medium"}
GPT5 = Model(name="gpt-5", provider="openai", upstream="gpt-5", context_window=400000, max_output_tokens=128000,
             reasoning=True, reasoning_control="reasoning_effort", efforts=("minimal", "low", "medium", "high"),
             sampling=False)


@pytest.mark.parametrize("path", CAPTURES, ids=[p.name for p in CAPTURES])
def test_captured_claude_code_request(path):
    capture = json.loads(path.read_text())
    body = capture["body"]
    out, names = to_openai(body, GPT5)
    messages = out["messages"]
    assert messages[0]["role"] == "system"
    assert [m["role"] for m in messages].count("system") == 1                     # §7.2.1
    client_system = body.get("system") or [m for m in body["messages"] if m["role"] == "system"][0]["content"]
    first = client_system[0]["text"]
    if first.startswith("x-anthropic-billing-header:"):                           # Claude Code's attribution:
        assert "x-anthropic-billing-header" not in json.dumps(out)               # consumed, not sent
        first = first.partition("\n")[2] or client_system[1]["text"]
    assert first[:200] in messages[0]["content"]                                 # the client's instructions
    for i, m in enumerate(messages):                                              # §7.2.2
        for call in m.get("tool_calls", ()):
            following = messages[i + 1:i + 1 + len(m["tool_calls"])]
            assert call["id"] in {f.get("tool_call_id") for f in following}
        if m["role"] == "tool":
            assert isinstance(m["content"], str)                                  # §7.2.3
    dumped = json.dumps(out)
    assert set(out) <= OPENAI_KEYS, set(out) - OPENAI_KEYS                        # §7.2.4
    in_messages = json.dumps(messages)
    assert not [k for k in MESSAGE_LEAKS if k in in_messages]
    assert not [t for t in out["tools"] if "$schema" in t["function"]["parameters"]]
    assert out["max_completion_tokens"] == min(body["max_tokens"], 128000)        # §7.2.5
    assert "temperature" not in out and "max_tokens" not in out
    assert out["reasoning_effort"] == EFFORT[capture["claude_code_version"]]
    offered = [t for t in body["tools"] if t["name"] != "DeferredToolPlaceholder"]   # never callable
    assert len(out["tools"]) == len(offered)                                      # §7.2.6
    assert all(len(t["function"]["name"]) <= 64 for t in out["tools"])
    assert out["user"].startswith("ccpx-") and body["metadata"]["user_id"] not in dumped
    assert "<system-reminder>" in dumped


def test_system_messages_join_the_system_prompt_until_the_first_assistant_turn():
    """Claude Code 2.1.197 sends its agent list as a system message after the first user turn: it
    joins the one leading system message.  A system message after an assistant turn becomes a
    <system-reminder> user message in place (strict chat templates take one system message)."""
    body = json.loads((CAPTURES[0].parent / "turn2.json").read_text())["body"]
    early = next(m["content"] for m in body["messages"] if m["role"] == "system")
    late = "A hook ran: the tests pass."
    body = dict(body, messages=body["messages"] + [{"role": "system", "content": late}])
    out, _ = to_openai(body, GPT5)
    roles = [m["role"] for m in out["messages"]]
    assert roles.count("system") == 1 and roles[0] == "system" and early in out["messages"][0]["content"]
    assert out["messages"][-1] == {"role": "user", "content": f"<system-reminder>\n{late}\n</system-reminder>"}


def test_tool_search_loads_a_deferred_mcp_tool():
    """Claude Code 2.1.332: the MCP tool is not offered before ToolSearch loads it, its
    tool_reference result becomes text naming it, and from then on it is offered although its
    defer_loading flag stays set."""
    turns = [json.loads((CAPTURES[0].parent / f"v2332_toolsearch_turn{n}.json").read_text())["body"] for n in (1, 2, 3)]
    offered = [{t["function"]["name"] for t in to_openai(body, GPT5)[0]["tools"]} for body in turns]
    assert "mcp__demo__lookup" not in offered[0] and {"mcp__demo__lookup", "ToolSearch"} <= offered[1] <= offered[2]
    assert not any("DeferredToolPlaceholder" in names for names in offered)
    messages = to_openai(turns[1], GPT5)[0]["messages"]
    result = next(m for m in messages if m["role"] == "tool")
    assert result["content"] == "Tool loaded, now callable as a function: mcp__demo__lookup"
    assert [m["role"] for m in messages][:2] == ["system", "user"]
    assert "deferred tools are now available via ToolSearch" in messages[0]["content"]
