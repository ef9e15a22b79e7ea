"""Strict checker of an Anthropic SSE byte stream (docs/PROTOCOL.md §7.1)."""

from __future__ import annotations

import json


def parse_sse(raw: bytes) -> list[tuple[str, dict]]:
    events = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        lines = block.split("\n")
        assert lines[0].startswith("event: "), f"event without an event: line: {block!r}"
        assert len(lines) == 2 and lines[1].startswith("data: "), f"malformed event: {block!r}"
        name, data = lines[0][7:], json.loads(lines[1][6:])
        assert data["type"] == name, f"event name {name} != type {data['type']}"
        events.append((name, data))
    return events


def check_stream(events: list[tuple[str, dict]]) -> str:
    """Assert the grammar; return 'complete' or 'error'."""
    names = [n for n, _ in events if n != "ping"]
    assert names and names[0] == "message_start", f"first event must be message_start: {names[:3]}"
    assert names.count("message_start") == 1
    start = events[0][1]["message"] if events[0][0] == "message_start" else next(d["message"] for n, d in events if n == "message_start")
    assert start["content"] == [] and start["stop_reason"] is None and "usage" in start
    open_index = None
    next_index = 0
    kinds: dict[int, str] = {}
    tool_json: dict[int, str] = {}
    signed: set[int] = set()
    ended = None
    for name, data in events:
        assert ended is None, f"{name} after the stream ended with {ended}"
        if name == "content_block_start":
            assert open_index is None, "blocks interleave"
            assert data["index"] == next_index, f"index {data['index']} != {next_index}"
            kinds[next_index] = data["content_block"]["type"]
            open_index, next_index = next_index, next_index + 1
        elif name == "content_block_delta":
            assert data["index"] == open_index, "delta for a block that is not open"
            dtype, kind = data["delta"]["type"], kinds[open_index]
            allowed = {"text": {"text_delta", "citations_delta"}, "thinking": {"thinking_delta", "signature_delta"},
                       "tool_use": {"input_json_delta"}, "server_tool_use": {"input_json_delta"}}.get(kind, set())
            assert dtype in allowed, f"{dtype} in a {kind} block"
            if dtype == "text_delta":
                assert data["delta"]["text"], "empty text_delta"
            if dtype == "input_json_delta":
                tool_json[open_index] = tool_json.get(open_index, "") + data["delta"]["partial_json"]
            if dtype == "signature_delta":
                assert data["delta"]["signature"], "empty signature"
                signed.add(open_index)
        elif name == "content_block_stop":
            assert data["index"] == open_index
            if kinds[open_index] == "thinking":
                assert open_index in signed, "thinking block without signature_delta"
            if kinds[open_index] in ("tool_use", "server_tool_use"):
                assert isinstance(json.loads(tool_json.get(open_index) or "{}"), dict)
            open_index = None
        elif name == "message_delta":
            assert open_index is None, "message_delta with an open block"
            assert data["delta"]["stop_reason"], "message_delta without stop_reason"
            assert isinstance(data["usage"]["output_tokens"], int)
        elif name == "message_stop":
            assert names[-2] == "message_delta" and names.count("message_delta") == 1
            ended = "message_stop"
        elif name == "error":
            assert set(data["error"]) >= {"type", "message"}
            ended = "error"
        elif name != "ping" and name != "message_start":
            raise AssertionError(f"unknown event {name}")
    assert ended, "stream ended without message_stop or error"
    return "complete" if ended == "message_stop" else "error"
