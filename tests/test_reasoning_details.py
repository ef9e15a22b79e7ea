"""Table tests: `reasoning_details` fragments in, the thinking blocks Claude Code is sent, and the
`reasoning_details` of the next request's assistant message (translate.reasoning_details).

Shapes from OpenRouter's reasoning-tokens page (https://openrouter.ai/docs/use-cases/reasoning-tokens:
`reasoning.text`, `reasoning.summary`, `reasoning.encrypted` with `data`, each with `id`, `format`,
`index`); the framing follows the recorded streams (tests/corpus/openrouter/, replayed in
tests/test_provider_quirks.py), where a summary and an encrypted item both have index 0."""

from __future__ import annotations

import pytest

from ccproxyd.config.table import Model
from ccproxyd.translate import request as treq
from ccproxyd.translate import signature
from ccproxyd.translate.response import accumulate
from ccproxyd.translate.stream import StreamTranslator

MODEL = Model(name="m", provider="p", upstream="m", context_window=100_000, max_output_tokens=1000, reasoning=True,
              reasoning_replay="reasoning", reasoning_details=True)
CALL = {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                        "function": {"name": "Bash", "arguments": "{\"command\": \"ls\"}"}}]}


def summary_item(text: str) -> dict:
    return {"type": "reasoning.summary", "summary": text, "format": "openai-responses-v1", "index": 0}


def text_item(text: str, **more) -> dict:
    return {"type": "reasoning.text", "text": text, "format": "anthropic-claude-v1", "index": 0, **more}


ENCRYPTED = {"type": "reasoning.encrypted", "data": "gAAAAB-opaque", "id": "rs_1", "format": "openai-responses-v1",
             "index": 0}

CASES = {   # deltas, then the blocks Claude Code is shown [(type, text)], then the items sent back
    "a summary in fragments, then an encrypted item alone": (
        [{"reasoning": "**Plan**", "reasoning_details": [summary_item("**Plan**")]},
         {"reasoning": " then act.", "reasoning_details": [summary_item(" then act.")]},
         {"reasoning_details": [ENCRYPTED]}, CALL],
        [("thinking", "**Plan** then act."), ("tool_use", "Bash")],
        [summary_item("**Plan** then act."), ENCRYPTED]),
    "an encrypted item and no text: an empty thinking block carries it": (
        [{"reasoning_details": [ENCRYPTED]}, {"content": "Done."}],
        [("thinking", ""), ("text", "Done.")],
        [ENCRYPTED]),
    "items without index, joined by their place in the list": (
        [{"reasoning_details": [{"type": "reasoning.text", "text": "a"}]},
         {"reasoning_details": [{"type": "reasoning.text", "text": "b"}]}, {"content": "ok"}],
        [("thinking", "ab"), ("text", "ok")],
        [{"type": "reasoning.text", "text": "ab"}]),
    "one item on both sides of text, its signature last: joined again": (
        [{"reasoning_details": [text_item("Look")]}, {"content": "x"},
         {"reasoning_details": [text_item(" again")]}, {"reasoning_details": [text_item("", signature="sig==")]}],
        [("thinking", "Look"), ("text", "x"), ("thinking", " again")],
        [text_item("Look again", signature="sig==")]),
    "a plain reasoning that is not the items' text: the texts ride whole": (
        [{"reasoning": "what was shown", "reasoning_details": [summary_item("a summary")]}, {"content": "ok"}],
        [("thinking", "what was shown"), ("text", "ok")],
        [summary_item("a summary")]),
    "an item with two text fields: its text goes back to the one it came in": (
        [{"reasoning_details": [{"type": "reasoning.summary", "summary": "S", "text": "", "index": 0}]},
         {"reasoning_details": [{"type": "reasoning.summary", "summary": "T", "index": 0}]}, {"content": "ok"}],
        [("thinking", "ST"), ("text", "ok")],
        [{"type": "reasoning.summary", "summary": "ST", "text": "", "index": 0}]),
    "a null text, then text": (
        [{"reasoning_details": [text_item(None)]}, {"reasoning_details": [text_item("abc")]}, {"content": "ok"}],
        [("thinking", "abc"), ("text", "ok")],
        [text_item("abc")]),
}


def answer(deltas: list[dict], display: str = "summarized", details: bool = True) -> list[dict]:
    translator = StreamTranslator("claude-x", provider=MODEL.provider, upstream_model=MODEL.upstream,
                                  thinking=display, live_tools=True, details=details)
    events = translator.start()
    for delta in deltas:
        events += translator.feed({"choices": [{"index": 0, "delta": delta}]})
    events += translator.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return accumulate(events + translator.finish(saw_done=True))["content"]


def sent_back(content: list[dict], model: Model = MODEL) -> dict:
    body = {"model": "claude-x", "max_tokens": 100, "thinking": {"type": "adaptive"}, "messages": [
        {"role": "user", "content": "go"}, {"role": "assistant", "content": content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": b["id"], "content": "ok"}
                                     for b in content if b["type"] == "tool_use"] or "next"}]}
    return next(m for m in treq.to_openai(body, model)[0]["messages"] if m["role"] == "assistant")


def shown(content: list[dict]) -> list[tuple]:
    return [(b["type"], b["thinking"] if b["type"] == "thinking" else b.get("text", b.get("name"))) for b in content]


@pytest.mark.parametrize("display", ["summarized", "omitted"])
@pytest.mark.parametrize("name", list(CASES))
def test_items_go_back_as_they_came(name, display):
    deltas, blocks, items = CASES[name]
    content = answer(deltas, display)
    assert shown(content) == [(kind, text if display == "summarized" or kind != "thinking" else "")
                              for kind, text in blocks]
    assert all(signature.bound(b["signature"], "p", "m")["d"] for b in content if b["type"] == "thinking")
    turn = sent_back(content)
    assert turn["reasoning_details"] == items
    assert "reasoning" not in turn                 # the plain field is for thinking from elsewhere


def test_without_the_flag_the_signature_is_the_plain_one():
    """A model without `reasoning_details` gets today's signature: nothing gathered, nothing carried."""
    deltas = CASES["a summary in fragments, then an encrypted item alone"][0]
    content = answer(deltas, details=False)
    assert [b["signature"] for b in content if b["type"] == "thinking"] == [signature.make("p", "m")]
    assert "reasoning_details" not in sent_back(content)
    assert sent_back(answer(deltas))["reasoning_details"]


@pytest.mark.parametrize("carried", [
    {"i": "not a list"}, {"i": [{"type": "reasoning.text", "text": ""}], "f": ["text"], "n": ["3"]},
    {"i": [{"type": "reasoning.text", "text": ""}], "f": ["text"], "n": [-1, 4]}, {"i": [1, 2]}, "not an object",
    {"i": [{"type": "reasoning.text", "text": ""}], "n": [3]},                       # no text fields named
    {"i": [{"type": "reasoning.text", "text": ""}], "f": ["data"], "n": [3]}])
def test_a_damaged_signature_falls_back_to_the_plain_field(carried):
    block = {"type": "thinking", "thinking": "abc", "signature": signature.make("p", "m", details=carried)}
    turn = sent_back([block, {"type": "text", "text": "ok"}])
    assert "reasoning_details" not in turn and turn["reasoning"] == "abc"
    good = {"type": "thinking", "thinking": "abc",
            "signature": signature.make("p", "m", details={"i": [{"type": "reasoning.text", "text": ""}], "f": ["text"],
                                                           "n": [3]})}
    assert sent_back([good, {"type": "text", "text": "ok"}])["reasoning_details"] == [
        {"type": "reasoning.text", "text": "abc"}]
