"""Requests captured from Claude Code 2.1.197 (tests/fixtures/claude_code/) through the request
translator, checked against PROTOCOL.md §7.2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ccproxyd.config import Model
from ccproxyd.translate.request import to_openai

CAPTURES = sorted((Path(__file__).parent / "fixtures" / "claude_code").glob("*.json"))
OPENAI_KEYS = {"model", "messages", "stream", "stream_options", "max_completion_tokens", "tools", "tool_choice",
               "parallel_tool_calls", "reasoning_effort", "user", "stop"}
MESSAGE_LEAKS = ("cache_control", "tool_use_id", "signature", '"type": "tool_result"', '"type": "thinking"')
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
    assert messages[0]["content"].startswith("x-anthropic-billing-header")
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
    assert out["reasoning_effort"] == "high"
    assert len(out["tools"]) == len(body["tools"])                                # §7.2.6
    assert all(len(t["function"]["name"]) <= 64 for t in out["tools"])
    assert out["user"].startswith("ccpx-") and body["metadata"]["user_id"] not in dumped
    assert "<system-reminder>" in dumped


def test_mid_conversation_system_message_is_kept_as_user_reminder():
    body = json.loads((CAPTURES[0].parent / "turn2.json").read_text())["body"]
    system_text = next(m["content"] for m in body["messages"] if m["role"] == "system")
    out, _ = to_openai(body, GPT5)
    reminders = [m for m in out["messages"] if m["role"] == "user" and system_text in m["content"]]
    assert len(reminders) == 1 and reminders[0]["content"].startswith("<system-reminder>")
