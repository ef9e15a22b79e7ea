"""Issue 21's acceptance, provider by provider: a streamed tool-call turn, a thinking turn replayed on
the next request, and a usage with cached tokens, each against that provider's own answers in
tests/corpus (PROVENANCE.md there says where each file came from and whether it is recorded,
SDK-written or transcribed), replayed through the translator with the preset's model
(config/<preset>.yaml).

The expected values are read off the files here, not off ccproxyd: the tool call's name and
arguments and the cached count by hand (in the table), the thinking that must go back straight from
the recorded chunks.  A provider that documents no way to send thinking back has a `none` cell with
the reason and the page; the test then checks that nothing of the thinking goes back (Groq answers
400 to a field it does not know) while the calls still do.  Cerebras takes it inside the assistant's
`content`, before the answer (`sent_as` "content")."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass

import pytest

from ccproxyd.translate import request as treq
from ccproxyd.translate.responses import ResponsesTranslator, to_responses
from ccproxyd.translate.stream import StreamTranslator

from .support import CORPUS, ROOT, assistant_turn, blocks, chunks, ending, next_request, preset

THOUGHT_FIELDS = ("reasoning_content", "reasoning", "reasoning_details")


@dataclass(frozen=True)
class Row:
    preset: str                   # config/<preset>.yaml
    model: str                    # the preset's model
    call: tuple[str, str, dict]   # a streamed answer with a tool call: (file, the call's name, its arguments)
    thinking: str                 # an answer with thinking (or, for Gemini, a signed call)
    sent_as: str                  # where the next request carries it; "none": nowhere
    why: str                      # the provider's page for that field, or why nothing is sent
    cached: tuple[str, int]       # an answer whose usage has cached prompt tokens, and how many
    api: str | None = None        # the preset's model over another API (OpenAI's, xAI's Chat Completions)


ROWS = [
    Row("deepseek", "deepseek-flash",
        ("deepseek/tool_call.chunks.txt", "weather", {"location": "San Francisco"}),
        "deepseek/tool_call.chunks.txt", "reasoning_content",
        "https://api-docs.deepseek.com/guides/thinking_mode (tool calls: pass reasoning_content back)",
        ("deepseek/tool_call.chunks.txt", 320)),
    Row("moonshot", "kimi-k3",
        ("moonshot/tool_calls.chunks.txt", "get_weather", {"city": "Paris"}),
        "moonshot/reasoning_usage.chunks.txt", "reasoning_content",
        "https://platform.moonshot.ai/docs/guide/use-kimi-k2-thinking-model#frequently-asked-questions "
        "(\"reasoning_content is missing in assistant tool call message\" otherwise)",
        ("moonshot/reasoning_usage.chunks.txt", 90)),
    Row("zai", "glm-5.3",
        ("zai/glm_tool_call.chunks.txt", "weather", {"location": "Florence,Italy"}),
        "zai/glm_tool_call.chunks.txt", "reasoning_content",
        "config/zai.yaml; the recording SDK's next request carries this same reasoning_content (PROVENANCE.md)",
        ("zai/glm_tool_call.chunks.txt", 172)),
    Row("qwen", "qwen3.8-max",
        ("qwen/tool_call.chunks.txt", "weather", {"location": "San Francisco"}),
        "qwen/reasoning.chunks.txt", "none",
        "Model Studio documents reasoning_content as output only and builds multi-turn history from "
        "content (https://www.alibabacloud.com/help/en/model-studio/deep-thinking, "
        "https://www.alibabacloud.com/help/en/model-studio/multi-round-conversation)",
        ("qwen/cached_tokens.chunks.txt", 2560)),
    Row("minimax", "MiniMax-M3",
        ("minimax/tool_call.chunks.txt", "get_weather", {"location": "Shanghai"}),
        "minimax/reasoning_split.chunks.txt", "reasoning_details",
        "https://platform.minimax.io/docs/api-reference/text-openai-api (reasoning_details preserved completely)",
        ("minimax/reasoning_split.chunks.txt", 443)),
    Row("gemini", "gemini-4-hydrogen",
        ("gemini/tool_call.chunks.txt", "check_flight", {"flight": "AA100"}),
        "gemini/tool_call.chunks.txt", "thought_signature",
        "https://ai.google.dev/gemini-api/docs/thought-signatures (the call goes back with its signature)",
        ("gemini/tool_call.chunks.txt", 100)),
    Row("groq", "openai/gpt-oss-120b",
        ("groq/tool_call.chunks.txt", "weather", {}),
        "groq/cached_reasoning.json", "none",
        "Groq documents `reasoning` as a field of the answer only (https://console.groq.com/docs/reasoning) "
        "and answers 400 \"property 'reasoning' is unsupported\" / \"property 'reasoning_content' is "
        "unsupported\" on an assistant message (https://github.com/karthink/gptel/issues/774, "
        "https://github.com/agentjido/req_llm/issues/772)",
        ("groq/cached_reasoning.json", 256)),
    Row("cerebras", "gpt-oss-120b",
        ("cerebras/tool_call.chunks.txt", "nonUsefulTool", {}),
        "cerebras/tool_call.chunks.txt", "content",
        "\"Reasoning Context Retention\", https://inference-docs.cerebras.ai/capabilities/reasoning: \"for "
        "GPT-OSS, prepend reasoning text directly before the answer\" in the assistant's `content` (a "
        "`reasoning_content` field gets a 400, https://github.com/Kilo-Org/kilocode/issues/10375)",
        ("cerebras/tool_call.chunks.txt", 256)),
    Row("xai", "grok-4.7",
        ("xai/responses_tool_call.chunks.txt", "get_temperature", {"location": "Paris"}),
        "responses/xai-text-with-reasoning-streaming-store-false.1.chunks.txt", "encrypted_content",
        "https://docs.x.ai/developers/model-capabilities/text/best-practices (\"Send the encrypted reasoning "
        "content back to the API with every turn\", through the Responses API)",
        ("xai/responses_function_call.json", 256)),
    Row("xai", "grok-4.7",
        ("xai/tool_call.chunks.txt", "weather", {"location": "San Francisco"}),
        "xai/tool_call.chunks.txt", "none",
        "xAI's Chat Completions API, deprecated, \"has no field for the model's encrypted reasoning\" "
        "(https://docs.x.ai/developers/model-capabilities/text/best-practices); only its Responses API carries it back",
        ("xai/tool_call.chunks.txt", 290), api="chat_completions"),
    Row("openrouter", "z-ai/glm-5.3",
        ("openrouter/glm_tool_call.chunks.txt", "weather", {"location": "Florence, Italy"}),
        "openrouter/glm_tool_call.chunks.txt", "reasoning_details",
        "https://openrouter.ai/docs/use-cases/reasoning-tokens (\"Preserving reasoning\")",
        ("openrouter/glm_tool_call.chunks.txt", 128)),
    Row("openai", "gpt-6.1-sol",
        ("responses/openai-reasoning-encrypted-content.1.chunks.txt", "calculator", {"a": 12, "b": 7, "op": "add"}),
        "responses/openai-reasoning-encrypted-content.1.chunks.txt", "encrypted_content",
        "https://cookbook.openai.com/examples/responses_api/reasoning_items (reasoning items back in `input`)",
        ("responses/openai-web-search-tool.1.chunks.txt", 3712)),
    Row("openai", "gpt-6.1-sol",
        ("openai/tool_call.chunks.txt", "weather", {"location": "Florence, Italy"}),
        "openai/tool_call.chunks.txt", "none",
        "OpenAI's Chat Completions returns no reasoning to send back; reasoning items go back through the "
        "Responses API only (https://cookbook.openai.com/examples/responses_api/reasoning_items)",
        ("openai/cached_tokens.json", 4012), api="chat_completions"),
]


def model_of(row: Row):
    model = preset(row.preset, row.model)
    return dataclasses.replace(model, api=row.api) if row.api else model


def first_response(path: str) -> list[dict]:
    """The events of a Responses stream up to the next turn's (a file may hold several turns)."""
    events: list[dict] = []
    for event in chunks(path):
        if event.get("type") == "response.created" and events:
            break
        events.append(event)
    return events


def answer(path: str, model) -> list[tuple[str, dict]]:
    """The events Claude Code would get for a recorded answer: a stream, or a whole JSON answer."""
    kind = ResponsesTranslator if model.api == "responses" else StreamTranslator
    translator = kind("claude-sonnet-4-5", provider=model.provider, upstream_model=model.upstream,
                      thinking="summarized", live_tools=True, details=model.reasoning_details)
    events = translator.start()
    if path.endswith(".json"):
        events += translator.whole(json.loads((CORPUS / path).read_text()))
    else:
        for chunk in first_response(path) if model.api == "responses" else chunks(path):
            events += translator.feed(chunk)
    return events + translator.finish(saw_done=True)


def deltas(path: str) -> list[dict]:
    """The recorded deltas (a whole answer's message counts as one)."""
    if path.endswith(".json"):
        return [c["message"] for c in json.loads((CORPUS / path).read_text())["choices"]]
    return [c["delta"] for chunk in chunks(path) for c in chunk.get("choices") or () if "delta" in c]


def recorded(path: str, sent_as: str):
    """What the next request must carry, read off the recording: the reasoning text (for a `none` row,
    whatever reasoning the answer had), the items' text, Gemini's signature on the call, the
    encrypted reasoning (OpenAI's, xAI's), Cerebras' content (reasoning, then the answer)."""
    if sent_as == "encrypted_content":
        return next(e["item"]["encrypted_content"] for e in first_response(path)
                    if e["type"] == "response.output_item.done" and e["item"]["type"] == "reasoning")
    if sent_as == "thought_signature":
        return next(call["extra_content"]["google"]["thought_signature"]
                    for d in deltas(path) for call in d.get("tool_calls") or () if call.get("extra_content"))
    if sent_as == "reasoning_details":
        return "".join(item.get("text", "") for d in deltas(path) for item in d.get("reasoning_details") or ())
    if sent_as == "content":                  # Cerebras: the reasoning, then (after a space) the answer
        reasoning, answer = recorded(path, "none"), "".join(d.get("content") or "" for d in deltas(path))
        return f"{reasoning} {answer}" if answer else reasoning
    fields = (sent_as,) if sent_as != "none" else ("reasoning_content", "reasoning")
    return "".join(next((d[f] for f in fields if d.get(f)), "") for d in deltas(path))


def check_tool_call(row: Row, model) -> None:
    """A streamed tool-call turn: a tool_use block whose input is the call's parsed arguments."""
    path, name, arguments = row.call
    assert path.endswith(".chunks.txt")
    events = answer(path, model)
    calls = [b for b in blocks(events) if b["type"] == "tool_use"]
    assert (calls[0]["name"], calls[0]["input"]) == (name, arguments)
    assert ending(events)[0] == "tool_use"


def check_thinking_replayed(row: Row, model) -> None:
    """The thinking Claude Code was shown comes back on its next request, in the provider's field."""
    found = blocks(answer(row.thinking, model))
    shown = "".join(b["thinking"] for b in found if b["type"] == "thinking")
    request = next_request(found, {"type": "adaptive"})
    if row.sent_as == "encrypted_content":
        body, _ = to_responses(request, model)
        assert shown
        assert body["store"] is False and "reasoning.encrypted_content" in body["include"]
        assert [i["encrypted_content"] for i in body["input"] if i.get("type") == "reasoning"] == [
            recorded(row.thinking, row.sent_as)]
        return
    body, _ = treq.to_openai(request, model)
    turn = assistant_turn(body)
    sent = {k: turn[k] for k in THOUGHT_FIELDS if k in turn}
    signed = [c["extra_content"]["google"]["thought_signature"] for c in turn.get("tool_calls", ())
              if "extra_content" in c]
    if row.sent_as in ("reasoning_content", "reasoning"):
        assert shown == recorded(row.thinking, row.sent_as) != ""
        assert sent == {row.sent_as: shown} and not signed
    elif row.sent_as == "reasoning_details":
        assert shown == recorded(row.thinking, row.sent_as) != ""
        assert list(sent) == ["reasoning_details"] and not signed
        assert "".join(item["text"] for item in sent["reasoning_details"]) == shown
    elif row.sent_as == "thought_signature":
        assert signed == [recorded(row.thinking, row.sent_as)] and not sent
    elif row.sent_as == "content":
        assert shown == recorded(row.thinking, "none") != ""
        assert turn["content"] == recorded(row.thinking, row.sent_as) and not sent and not signed
    else:
        assert row.sent_as == "none" and "https://" in row.why
        assert shown == recorded(row.thinking, "none")     # the client saw it, as recorded
        assert not sent and not signed, row.why
    calls = [b for b in found if b["type"] == "tool_use"]
    assert len(turn.get("tool_calls", ())) == len(calls)
    assert [m["tool_call_id"] for m in body["messages"] if m["role"] == "tool"] == [
        c["id"] for c in turn.get("tool_calls", ())]


def check_cached(row: Row, model) -> None:
    """A usage with cached tokens: they reach Anthropic's cache_read_input_tokens in the final usage."""
    path, cached = row.cached
    assert cached > 0
    assert ending(answer(path, model))[1]["cache_read_input_tokens"] == cached


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.preset}-{r.api or 'preset'}" for r in ROWS])
def test_every_provider_has_the_three_replays(row):
    model = model_of(row)
    check_tool_call(row, model)
    check_thinking_replayed(row, model)
    check_cached(row, model)


HOSTED = {p.stem for p in (ROOT / "config").glob("*.yaml")} - {"llama-cpp", "ollama", "vllm"}   # local servers


def test_the_matrix_has_every_hosted_preset_and_every_file_has_its_source():
    assert {row.preset for row in ROWS} == HOSTED
    cited = set(re.findall(r"^\| `([^`]+)`", (CORPUS / "PROVENANCE.md").read_text(), re.M))
    cited |= {"responses/" + f for f in re.findall(r"^\| `([^`]+)`", (CORPUS / "responses/PROVENANCE.md").read_text(), re.M)}
    used = {f for row in ROWS for f in (row.call[0], row.thinking, row.cached[0])}
    assert used <= cited, used - cited
