"""Token counting with the bundled encodings (no network)."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ccproxyd.translate import tokens


def test_bundled_encodings_give_tiktoken_ids():
    # ids as published for these encodings; the Python rank table is dropped after loading
    assert tokens.encoding("o200k_base").encode("hello world") == [24912, 2375]
    assert tokens.encoding("cl100k_base").encode("hello world") == [15339, 1917]
    assert tokens.encoding("o200k_base")._mergeable_ranks == {}


def test_count_request_grows_with_every_part():
    base = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hello world"}]}
    with_system = dict(base, system="You are a careful assistant.")
    with_tools = dict(with_system, tools=[{"name": "Bash", "description": "run a command",
                                           "input_schema": {"type": "object"}}])
    counts = [tokens.count_request(b) for b in (base, with_system, with_tools)]
    assert 0 < counts[0] < counts[1] < counts[2]


def test_unknown_encoding_is_a_clear_error():
    try:
        tokens.encoding("p50k_base")
    except tokens.EncodingError as exc:
        assert "p50k_base" in str(exc) and "o200k_base" in str(exc)
    else:
        raise AssertionError("an unknown encoding must raise")


def _count(content) -> int:
    return tokens.count_request({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": content}]})


TEXT = "The quick brown fox jumps over the lazy dog near the riverbank."
# Each billed kind carrying TEXT counts as much as TEXT said plainly (plus the name for a tool call).
CONSISTENT = [
    ("text", {"type": "text", "text": TEXT}, TEXT),
    ("thinking", {"type": "thinking", "thinking": TEXT, "signature": "s"}, TEXT),
    ("redacted thinking", {"type": "redacted_thinking", "data": TEXT}, TEXT),
    ("tool result, string", {"type": "tool_result", "tool_use_id": "t", "content": TEXT}, TEXT),
    ("tool result, blocks", {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": TEXT}]}, TEXT),
    ("text document", {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": TEXT}}, TEXT),
    ("content document", {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": TEXT}]}}, TEXT),
    ("tool reference", {"type": "tool_reference", "tool_name": "mcp__demo__lookup"}, "mcp__demo__lookup"),
]


@pytest.mark.parametrize("name,block,plain", CONSISTENT, ids=[c[0] for c in CONSISTENT])
def test_every_billed_kind_counts_like_its_text(name, block, plain):
    assert _count([block]) == _count(plain) > 0


def test_tool_calls_images_and_pdfs_count():
    call = {"type": "tool_use", "id": "t", "name": "Bash", "input": {"command": "ls -la"}}
    assert _count([call]) == _count([{"type": "text", "text": "Bash"}, {"type": "text", "text": '{"command":"ls -la"}'}])
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "AAAA"}}
    empty = _count([])
    assert _count([image]) - empty == _count([pdf]) - empty == tokens.IMAGE_TOKENS
    assert _count([{"type": "tool_result", "tool_use_id": "t", "content": [image]}]) - empty == tokens.IMAGE_TOKENS


def test_the_encoding_loads_once_whichever_thread_asks_first(monkeypatch):
    loads, real = [], tokens._load

    def slow(name):
        loads.append(name)
        time.sleep(0.2)                             # the others ask while this one loads
        return real(name)
    monkeypatch.setattr(tokens, "_LOADED", {})
    monkeypatch.setattr(tokens, "_load", slow)
    with ThreadPoolExecutor(4) as pool:
        found = list(pool.map(lambda _: tokens.encoding("cl100k_base"), range(4)))
    assert loads == ["cl100k_base"] and all(f is found[0] for f in found)
    assert tokens.count_text("hello world", "cl100k_base") == 2
