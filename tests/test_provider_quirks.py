"""Each provider quirk as a model flag, checked two ways: the request ccproxyd sends (what the
provider documents as accepted, worked out by hand here), and the provider's own answers from
tests/corpus/ (PROVENANCE.md says where each came from) replayed through the stream translator,
compared with the Anthropic content, stop reason and usage read off the recorded chunks by hand.
The models are the presets' own (config/*.yaml), so a preset that loses a flag fails here."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from ccproxyd.config import table as config
from ccproxyd.translate import provider_errors as upstream_errors
from ccproxyd.errors import InvalidRequest
from ccproxyd.translate import request as treq
from ccproxyd.translate.responses import ResponsesTranslator, to_responses
from ccproxyd.translate.stream import StreamTranslator

from .support import assistant_turn, blocks, chunks, ending, next_request, preset, replay

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).parent / "corpus"
TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")


# ---------------------------------------------------------------- replaying recorded answers

def usage(input_tokens: int, output: int, cached: int = 0, written: int = 0) -> dict:
    return {"input_tokens": input_tokens, "output_tokens": output, "cache_creation_input_tokens": written,
            "cache_read_input_tokens": cached}


def summary(found: list[dict]) -> list[tuple]:
    return [("thinking", b["thinking"]) if b["type"] == "thinking" else ("text", b["text"]) if b["type"] == "text"
            else ("tool_use", b["id"], b["name"], b["input"]) for b in found]


def test_deepseek_streamed_tool_call_with_thinking_and_cache_hits():
    """deepseek-v4-flash, recorded: reasoning_content, then one call whose arguments come in
    pieces; usage 339 prompt of which 320 cache hits (both `prompt_tokens_details.cached_tokens`
    and DeepSeek's own `prompt_cache_hit_tokens` say 320), 83 completion, total 422."""
    events = replay("deepseek/tool_call.chunks.txt", preset("deepseek", "deepseek-flash"))
    assert summary(blocks(events)) == [
        ("thinking", "The user is asking for the weather in San Francisco. I need to use the weather tool to get "
                     "this information. Let me invoke the weather tool with the location parameter set to "
                     "\"San Francisco\"."),
        ("tool_use", "call_00_ioIn7yN9p1ZOMNpDLwd4MgAF", "weather", {"location": "San Francisco"})]
    assert ending(events) == ("tool_use", usage(339 - 320, 83, cached=320))


def test_deepseek_cache_hits_counted_from_its_own_field():
    """A usage that reports the hits only as DeepSeek's `prompt_cache_hit_tokens` (its documented
    field, https://api-docs.deepseek.com/api/create-chat-completion) still counts them as cached."""
    translator = StreamTranslator("claude-x", provider="deepseek", upstream_model="deepseek-flash")
    translator.start()
    translator.feed({"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": 1000, "completion_tokens": 5, "total_tokens": 1005,
                               "prompt_cache_hit_tokens": 960, "prompt_cache_miss_tokens": 40}})
    assert ending(translator.finish(saw_done=True)) == ("end_turn", usage(40, 5, cached=960))


def test_kimi_reasoning_with_usage_inside_the_choice():
    """kimi-k3, recorded: always thinks; usage comes inside the finishing choice and again in a
    trailing chunk, with Moonshot's top-level `cached_tokens` 90 of 90 prompt tokens."""
    events = replay("moonshot/reasoning_usage.chunks.txt", preset("moonshot", "kimi-k3"))
    assert summary(blocks(events)) == [
        ("thinking", "The user is asking me to reply with exactly \"OK\". This is a simple request with no "
                     "ambiguity. I should just respond with \"OK\" and nothing else."),
        ("text", "OK")]
    assert ending(events) == ("end_turn", usage(0, 50, cached=90))


def test_kimi_interleaved_tool_calls_without_index_and_usage_only_in_the_choice():
    """Two calls announced in one chunk without `index`, their arguments then interleaved by
    index (1 before 0); the usage is only inside the finishing choice (11 prompt, 6 completion)."""
    events = replay("moonshot/tool_calls.chunks.txt", preset("moonshot", "kimi-k3"))
    assert summary(blocks(events)) == [("tool_use", "call-weather", "get_weather", {"city": "Paris"}),
                                       ("tool_use", "call-time", "get_time", {"zone": "UTC"})]
    assert ending(events) == ("tool_use", usage(11, 6))


def test_kimi_top_level_cached_tokens():
    events = replay("moonshot/cached_tokens.chunks.txt", preset("moonshot", "kimi-k3"))
    assert summary(blocks(events)) == [("text", "Hello, world!")]
    assert ending(events) == ("end_turn", usage(100 - 80, 10, cached=80))


def test_qwen_tool_call_whose_later_fragments_carry_empty_ids():
    """qwen3-max, recorded: fragments after the first carry `"id": ""`, one more carries empty
    arguments; usage in a trailing `choices: []` chunk, cached_tokens 0."""
    events = replay("qwen/tool_call.chunks.txt", preset("qwen", "qwen3.8-max"))
    assert summary(blocks(events)) == [
        ("tool_use", "call_eee11723464a4b9eb8cee71d", "weather", {"location": "San Francisco"})]
    assert ending(events) == ("tool_use", usage(295, 22))


def test_qwen_implicit_cache_hit():
    """Transcribed: Model Studio reports an implicit-cache hit as `prompt_tokens_details.cached_tokens`,
    part of `prompt_tokens`: 2,560 of 3,100 prompt tokens, so 540 were read fresh."""
    events = replay("qwen/cached_tokens.chunks.txt", preset("qwen", "qwen3.8-max"))
    assert summary(blocks(events)) == [("text", "The function reads the file once.")]
    assert ending(events) == ("end_turn", usage(3100 - 2560, 9, cached=2560))


def test_qwen_reasoning_then_answer():
    events = replay("qwen/reasoning.chunks.txt", preset("qwen", "qwen3.8-max"))
    found = summary(blocks(events))
    assert [b[0] for b in found] == ["thinking", "text"]
    assert found[0][1].startswith("We are asked: \"How many 'r's are in the word 'strawberry'?\"")
    assert len(found[0][1]) == 3301
    assert found[1][1].startswith("The word **\"strawberry\"** contains **3** instances of the letter **\"r\"**.")
    assert ending(events) == ("end_turn", usage(24, 1355))


def test_groq_whole_tool_call_and_usage_beside_x_groq():
    events = replay("groq/tool_call.chunks.txt", preset("groq", "openai/gpt-oss-120b"))
    assert summary(blocks(events)) == [("tool_use", "tk85n1k4m", "weather", {})]
    assert ending(events) == ("tool_use", usage(210, 15))


def test_groq_cache_hit_beside_x_groq():
    """Transcribed: gpt-oss-120b on Groq with 1,536 of 1,800 prompt tokens from its prompt cache, the
    same usage object in `x_groq` and at the top level."""
    events = replay("groq/cached_tokens.chunks.txt", preset("groq", "openai/gpt-oss-120b"))
    assert summary(blocks(events)) == [("text", "All tests pass.")]
    assert ending(events) == ("end_turn", usage(1800 - 1536, 7, cached=1536))


def test_groq_whole_answer_with_reasoning_cut_by_max_tokens():
    """qwen/qwen3.6-27b on Groq, recorded as one JSON answer: thinking in `reasoning`, empty
    content, finish_reason length."""
    model = preset("groq", "openai/gpt-oss-120b")
    translator = StreamTranslator("claude-x", provider=model.provider, upstream_model=model.upstream)
    events = translator.start() + translator.whole(json.loads((CORPUS / "groq/reasoning.json").read_text()))
    events += translator.finish(saw_done=True)
    found = blocks(events)
    assert summary(found) == [("thinking", "Here's a thinking process:\n\n1.  **Understand the User Request:**\n"
                                           "   - The user asks: \"What is 17 times 19? Explain your calculation, then "
                                           "answer.\"\n   - I need to compute 17 × 19, explain the method/calculation process")]
    assert ending(events) == ("max_tokens", usage(27, 64))
    body, _ = treq.to_openai(next_request(found, {"type": "adaptive"}), model)
    assert not {"reasoning", "reasoning_content"} & set(assistant_turn(body))    # Groq is not sent it back


def test_xai_reasoning_outside_completion_and_cached_prompt():
    """grok-3-mini, recorded: total 513 = 291 prompt + 26 completion + 196 reasoning, and 290 of
    the prompt tokens cached: output is 26 + 196."""
    events = replay("xai/tool_call.chunks.txt", preset("xai", "grok-4.7"))
    assert summary(blocks(events)) == [("thinking", "First, the user is"),
                                       ("tool_use", "call_55117580", "weather", {"location": "San Francisco"})]
    assert ending(events) == ("tool_use", usage(1, 26 + 196, cached=290))


def test_xai_responses_whole_answer_with_a_call_and_cached_input():
    """grok-4.5 over the Responses API, recorded (a whole answer, `store` on: no encrypted_content):
    a reasoning summary, a call of getFigure with no arguments, 256 of 335 input tokens cached and 79
    output tokens (74 of them reasoning, inside output_tokens).  The next request sends the call back
    under xAI's call_id, and no reasoning item, since none came encrypted."""
    model = preset("xai", "grok-4.7")
    assert model.api == "responses"
    answer = json.loads((CORPUS / "xai/responses_function_call.json").read_text())
    translator = ResponsesTranslator("claude-x", provider=model.provider, upstream_model=model.upstream,
                                     thinking="summarized")
    events = translator.start() + translator.whole(answer) + translator.finish(saw_done=True)
    found = blocks(events)
    assert summary(found) == [("thinking", "The user says: \"Call getFigure. Then read the single uppercase word in the "
                                           "returned image. Reply with only that word. If no image is available, reply "
                                           "exactly NO_IMAGE.\"\n"),
                              ("tool_use", "call-07409b09-2aa0-435f-b577-2095dc465b94-0", "getFigure", {})]
    assert ending(events) == ("tool_use", usage(335 - 256, 79, cached=256))
    body, _ = to_responses(next_request(found, {"type": "adaptive"}), model)
    assert [i["type"] for i in body["input"] if "type" in i] == ["function_call", "function_call_output"]
    assert body["input"][1]["call_id"] == "call-07409b09-2aa0-435f-b577-2095dc465b94-0"


def test_cerebras_reasoning_field_and_cached_prompt():
    events = replay("cerebras/tool_call.chunks.txt", preset("cerebras", "gpt-oss-120b"))
    found = summary(blocks(events))
    assert found[0][0] == "thinking"
    assert found[0][1].startswith("The user is asking about a \"magic number\". I have access to a function called")
    assert found[0][1].endswith("I should call this function to get the magic number.")
    assert found[1:] == [("tool_use", "bbd2b9d98", "nonUsefulTool", {})]
    assert ending(events) == ("tool_use", usage(322 - 256, 104, cached=256))


def test_minimax_reasoning_details():
    events = replay("minimax/tool_call.chunks.txt", preset("minimax", "MiniMax-M3"))
    assert summary(blocks(events)) == [("thinking", "The user wants the weather. I will call get_weather."),
                                       ("tool_use", "call_function_1", "get_weather", {"location": "Shanghai"})]
    assert ending(events) == ("tool_use", usage(50, 40, cached=150))


def test_zai_streamed_tool_call_arguments_in_pieces():
    """SDK-written (vercel/ai's Z.AI tests): choices without `index`, a call whose later fragment has
    neither id nor type, the usage on the finishing chunk (5 prompt, 4 completion, nothing cached)."""
    events = replay("zai/tool_call.chunks.txt", preset("zai", "glm-5.3"))
    assert summary(blocks(events)) == [("tool_use", "call-weather", "weather", {"city": "Paris"})]
    assert ending(events) == ("tool_use", usage(5, 4))


def test_zai_tool_stream_with_reasoning_and_cache_hit():
    """Transcribed (tool_stream=true): reasoning_content, then a call in three fragments; 4,096 of
    4,200 prompt tokens cached."""
    events = replay("zai/stream_tool.chunks.txt", preset("zai", "glm-5.3"))
    assert summary(blocks(events)) == [
        ("thinking", "The user asks about Beijing's weather; I will call get_weather."),
        ("tool_use", "call_glm_1", "get_weather", {"location": "Beijing"})]
    assert ending(events) == ("tool_use", usage(4200 - 4096, 48, cached=4096))


def test_openrouter_reasoning_tool_call_and_cache_reads_and_writes():
    """Transcribed: the same thinking in `reasoning` and in `reasoning_details` (shown once), a call in
    three fragments, and a last chunk whose usage has 1,000 cached and 150 written of 1,200 prompt
    tokens: Anthropic counts 1,200 - 1,000 - 150 = 50 as plain input; reasoning_tokens (10) are part
    of completion_tokens (60), not added to it."""
    events = replay("openrouter/tool_call.chunks.txt", preset("openrouter", "z-ai/glm-5.3"))
    assert summary(blocks(events)) == [("thinking", "I need the file list; Bash can give it."),
                                       ("tool_use", "call_or_1", "Bash", {"command": "ls"})]
    assert ending(events) == ("tool_use", usage(50, 60, cached=1000, written=150))


def test_openai_responses_cached_input():
    """openai-web-search-tool.1.chunks.txt (recorded, tests/corpus/responses): usage 31,073 input of
    which 3,712 cached, 4,416 output (3,712 of them reasoning, inside output_tokens)."""
    translator = ResponsesTranslator("claude-x", provider="openai", upstream_model="recorded", thinking="summarized")
    events = translator.start()
    for event in chunks("responses/openai-web-search-tool.1.chunks.txt"):
        events += translator.feed(event)
    events += translator.finish(True)
    found = ending(events)[1]
    assert {k: found[k] for k in usage(0, 0)} == usage(31073 - 3712, 4416, cached=3712)


def test_zai_window_finish_reason_is_anthropics_own():
    events = replay("zai/window_exceeded.chunks.txt", preset("zai", "glm-5.3"))
    assert summary(blocks(events)) == [("thinking", "Summarising"), ("text", "The file")]
    assert ending(events) == ("model_context_window_exceeded", usage(2000, 750, cached=200000))


def test_thinking_not_shown_when_not_asked_still_counts():
    events = replay("deepseek/tool_call.chunks.txt", preset("deepseek", "deepseek-flash"), thinking="none")
    assert [b["type"] for b in blocks(events)] == ["tool_use"]
    assert ending(events)[1]["output_tokens"] == 83


# ---------------------------------------------------------------- the next request

REPLAYS = [   # preset, model, recorded answer, the field its thinking goes back in (None: not sent back)
    ("deepseek", "deepseek-flash", "deepseek/tool_call.chunks.txt", "reasoning_content"),
    ("moonshot", "kimi-k3", "moonshot/reasoning_usage.chunks.txt", "reasoning_content"),
    ("zai", "glm-5.3", "zai/window_exceeded.chunks.txt", "reasoning_content"),
    ("zai", "glm-5.3", "zai/stream_tool.chunks.txt", "reasoning_content"),
    ("openrouter", "z-ai/glm-5.3", "openrouter/tool_call.chunks.txt", None),     # as reasoning_details, below
    ("qwen", "qwen3.8-max", "qwen/reasoning.chunks.txt", None),
    ("xai", "grok-4.7", "xai/tool_call.chunks.txt", None),                      # over Chat Completions
    ("cerebras", "gpt-oss-120b", "cerebras/tool_call.chunks.txt", None),           # in `content`, below
    ("minimax", "MiniMax-M3", "minimax/tool_call.chunks.txt", None),               # as reasoning_details, below
]


@pytest.mark.parametrize("name,model_name,path,field", REPLAYS, ids=[r[2].split(".")[0] for r in REPLAYS])
def test_thinking_turn_replayed_on_the_next_request(name, model_name, path, field):
    model = dataclasses.replace(preset(name, model_name), api="chat_completions")   # these are Chat Completions answers
    found = blocks(replay(path, model))
    thought = next(b["thinking"] for b in found if b["type"] == "thinking")
    body, _ = treq.to_openai(next_request(found, {"type": "adaptive"}), model)
    turn = assistant_turn(body)
    sent = {k: turn[k] for k in ("reasoning_content", "reasoning") if k in turn}
    assert sent == ({field: thought} if field else {})
    if name == "cerebras":     # prepend_to_content: the thinking is the content (no text came with the call)
        assert turn["content"] == thought
    else:
        assert thought not in turn.get("content", "")
    calls = [b for b in found if b["type"] == "tool_use"]
    assert [c["id"] for c in turn.get("tool_calls", [])] == [c["id"] for c in calls]
    assert [m["tool_call_id"] for m in body["messages"] if m["role"] == "tool"] == [c["id"] for c in calls]


def test_thinking_from_another_model_is_not_replayed_but_deepseek_gets_its_field():
    """A tool-call turn whose thinking ccproxyd did not sign (Anthropic's own, another route) still
    carries `reasoning_content` for DeepSeek, empty, since thinking mode refuses a tool-call turn
    without it (recorded: tests/corpus/deepseek/error_reasoning_not_passed_back.json)."""
    found = [{"type": "thinking", "thinking": "secret", "signature": "EqQBCkYIBxgCKkB"},
             {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}}]
    body, _ = treq.to_openai(next_request(found, {"type": "adaptive"}), preset("deepseek", "deepseek-flash"))
    assert assistant_turn(body)["reasoning_content"] == ""


# ---------------------------------------------------------------- reasoning_details, back as they came

GLM_THOUGHT = "The user wants to know the weather in Florence, Italy. Let me call the weather function."
CLAUDE_THOUGHT = ("The user is asking for weather information in Florence, Italy. I have access to a weather function "
                  "that takes a location parameter. I should call the weather function with \"Florence, Italy\" or "
                  "\"Florence\" as the location.\n\nLet me call the weather function with the location being Florence, "
                  "Italy (or I could try just \"Florence\" - but \"Florence, Italy\" would be more specific and accurate).")
MINIMAX_PROOF = ("The user wants a proof that the sum of two odd numbers is even. This is a straightforward number "
                 "theory proof. I should present it concisely in caveman style.")


GPT5_SUMMARY = ("I'm thinking that I need to provide both calls in a structured manner. I should use the 'commentary' "
                "channel for the tool calls, making sure to keep everything clear and organized. After I receive the "
                "tool responses, I'll proceed to give a final output based on that information. It seems "
                "straightforward, but I want to ensure I'm being thorough and accurate throughout the process! "
                "Let's move forward!")
CLAUDE = "openrouter/claude_signed_tool_call.chunks.txt"
GPT5 = "openrouter/gpt5_summary_encrypted_tool_calls.chunks.txt"


def recorded(path: str, field: str) -> str:
    """A field the recording streams once, in a reasoning_details fragment of its own: Claude's
    `signature`, OpenAI's encrypted `data`."""
    return next(d[field] for c in chunks(path) for d in c["choices"][0]["delta"].get("reasoning_details", ())
                if d.get(field))


def openrouter_as(upstream: str):
    """A recording of a model the preset does not list: the preset's flags, that model's id."""
    return dataclasses.replace(preset("openrouter", "z-ai/glm-5.3"), name=upstream, upstream=upstream)


DETAILS = [   # preset, model, answer, [(kind, text or tool call)], usage, the items, read off the chunks by hand
    ("minimax", "MiniMax-M3", "minimax/tool_call.chunks.txt",
     [("thinking", "The user wants the weather. I will call get_weather."),
      ("tool_use", "call_function_1", "get_weather", {"location": "Shanghai"})], ("tool_use", usage(50, 40, cached=150)),
     [{"type": "reasoning.text", "id": "reasoning-text-1", "format": "MiniMax-response-v1", "index": 0,
       "text": "The user wants the weather. I will call get_weather."}]),
    ("minimax", "MiniMax-M3", "minimax/reasoning_split.chunks.txt",      # recorded: reasoning_content beside them
     [("thinking", MINIMAX_PROOF), ("text", "**Proof.**\n\nOdd numbers: $2a + 1$ and $2b + 1$ for integers $a, b$.\n\n"
                                            "Add:\n\n$$(2a + 1) + (2b + 1) = 2a + 2b + 2 = 2(a + b + 1)$$\n\n"
                                            "Result divisible by 2. Even. \u220e")],
     ("end_turn", usage(769 - 443, 116, cached=443)),
     [{"type": "reasoning.text", "id": "reasoning-text-1", "format": "MiniMax-response-v1", "index": 0,
       "text": MINIMAX_PROOF}]),
    ("openrouter", "z-ai/glm-5.3", "openrouter/tool_call.chunks.txt",
     [("thinking", "I need the file list; Bash can give it."), ("tool_use", "call_or_1", "Bash", {"command": "ls"})],
     ("tool_use", usage(50, 60, cached=1000, written=150)),
     [{"type": "reasoning.text", "text": "I need the file list; Bash can give it.", "format": "unknown", "index": 0}]),
    ("openrouter", "z-ai/glm-5.3", "openrouter/glm_tool_call.chunks.txt",      # recorded, one fragment a word
     [("thinking", GLM_THOUGHT), ("tool_use", "call_9400b8b3405c4d74b5b97e12", "weather", {"location": "Florence, Italy"})],
     ("tool_use", usage(173 - 128, 33, cached=128)),
     [{"type": "reasoning.text", "text": GLM_THOUGHT, "format": "unknown", "index": 0}]),
    ("openrouter", "anthropic/claude-haiku-4.5", CLAUDE,      # recorded: the signature comes alone, last
     [("thinking", CLAUDE_THOUGHT),
      ("tool_use", "toolu_bdrk_01N8hD5cYDw4WfvnjKXAkA2W", "weather", {"location": "Florence, Italy"})],
     ("tool_use", usage(607, 143)),
     [{"type": "reasoning.text", "text": CLAUDE_THOUGHT, "format": "anthropic-claude-v1", "index": 0,
       "signature": "<recorded>"}]),
    ("openrouter", "openai/gpt-5", GPT5,        # recorded: a summary, then an encrypted item, both index 0
     [("thinking", GPT5_SUMMARY), ("tool_use", "call_FS6r3jejWrnsF9udNRMPiyfM", "add", {"a": 2, "b": 3}),
      ("tool_use", "call_Rlgo1THqC0e9mGnzP18pESCO", "multiply", {"a": 2, "b": 3})],
     ("tool_use", usage(109, 306)),
     [{"type": "reasoning.summary", "summary": GPT5_SUMMARY, "format": "openai-responses-v1", "index": 0},
      {"type": "reasoning.encrypted", "data": "<recorded>", "id": "rs_0dc8a771bc4d29200169b2c6a26a248195aafcaec10e972cd4",
       "format": "openai-responses-v1", "index": 0}]),
]


def details_model(name: str, model_name: str):
    models = config.load((ROOT / "config" / f"{name}.yaml").read_text(), env={}).models
    return models[model_name] if model_name in models else openrouter_as(model_name)


def expected_items(path: str, items: list[dict]) -> list[dict]:
    return [{k: recorded(path, k) if v == "<recorded>" else v for k, v in item.items()} for item in items]


@pytest.mark.parametrize("display", ["summarized", "omitted"])
@pytest.mark.parametrize("name,model_name,path,content,stop,items", DETAILS, ids=[d[2].split(".")[0] for d in DETAILS])
def test_reasoning_details_go_back_as_they_came(name, model_name, path, content, stop, items, display):
    """The answer as Claude Code sees it, and Claude Code's next request (the thinking block with
    its text, or none with `display: omitted`, and its signature): the assistant message carries
    `reasoning_details` equal to the items the provider streamed, fragments joined per index, every
    other field (id, format, index, Claude's signature) as sent; nothing else of the thinking."""
    model = details_model(name, model_name)
    assert model.reasoning_details
    events = replay(path, model, thinking=display)
    found = blocks(events)
    shown = [(b[0], b[1] if display == "summarized" else "") if b[0] == "thinking" else b for b in content]
    assert summary(found) == shown
    assert ending(events) == stop
    body, _ = treq.to_openai(next_request(found, {"type": "adaptive", "display": display}), model)
    turn = assistant_turn(body)
    assert turn["reasoning_details"] == expected_items(path, items)
    assert not {"reasoning", "reasoning_content"} & set(turn)


SENT_BY_THE_SDK = {   # the items the SDK that made each recording sent back on its next request (the
    # second request of its cassette, PROVENANCE.md): the same items, field for field
    CLAUDE: [{"format": "anthropic-claude-v1", "index": 0, "signature": "<recorded>", "text": CLAUDE_THOUGHT,
              "type": "reasoning.text"}],
    GPT5: [{"format": "openai-responses-v1", "index": 0, "summary": GPT5_SUMMARY, "type": "reasoning.summary"},
           {"data": "<recorded>", "format": "openai-responses-v1", "id": "rs_0dc8a771bc4d29200169b2c6a26a248195aafcaec10e972cd4",
            "index": 0, "type": "reasoning.encrypted"}],
}


@pytest.mark.parametrize("path,upstream", [(CLAUDE, "anthropic/claude-haiku-4.5"), (GPT5, "openai/gpt-5")])
def test_the_items_are_those_the_recording_sdk_sent_back(path, upstream):
    model = openrouter_as(upstream)
    found = blocks(replay(path, model))
    body, _ = treq.to_openai(next_request(found, {"type": "adaptive"}), model)
    assert assistant_turn(body)["reasoning_details"] == expected_items(path, SENT_BY_THE_SDK[path])


def test_a_whole_minimax_answer_keeps_its_items():
    """Not streamed: MiniMax's documented message (https://platform.minimax.io/docs/api-reference/
    text-chat-openai, ChatCompletionResp) with reasoning_content and reasoning_details."""
    model = preset("minimax", "MiniMax-M3")
    item = {"type": "reasoning.text", "id": "reasoning-text-1", "format": "MiniMax-response-v1", "index": 0,
            "text": "The user asks for the weather in San Francisco; get_weather gives it."}
    completion = {"id": "066b13237d4accbb697b81f696876915", "object": "chat.completion", "model": "MiniMax-M3",
                  "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                      "role": "assistant", "name": "MiniMax AI", "content": "", "reasoning_content": item["text"],
                      "reasoning_details": [item], "tool_calls": [{"id": "call_function_a1nrtksph4pi_1", "type": "function",
                      "function": {"name": "get_weather", "arguments": "{\"location\": \"San Francisco, US\"}"}}]}}],
                  "usage": {"total_tokens": 473, "prompt_tokens": 418, "completion_tokens": 55}}
    translator = StreamTranslator("claude-x", provider=model.provider, upstream_model=model.upstream, details=True)
    found = blocks(translator.start() + translator.whole(completion) + translator.finish(saw_done=True))
    assert summary(found) == [("thinking", item["text"]),
                              ("tool_use", "call_function_a1nrtksph4pi_1", "get_weather", {"location": "San Francisco, US"})]
    body, _ = treq.to_openai(next_request(found, {"type": "adaptive"}), model)
    assert assistant_turn(body)["reasoning_details"] == [item]


def test_items_go_back_only_to_the_model_that_wrote_them():
    """GLM's items go back to GLM; on a turn that goes to Kimi (a fallback of the same route) Kimi
    is not sent them but, as before, the thinking as `reasoning`; MiniMax, which has no plain
    field, is sent nothing of it; Anthropic's own thinking goes to none of them."""
    glm = preset("openrouter", "z-ai/glm-5.3")
    found = blocks(replay("openrouter/glm_tool_call.chunks.txt", glm))
    body, _ = treq.to_openai(next_request(found, {"type": "adaptive"}), glm)
    assert [d["text"] for d in assistant_turn(body)["reasoning_details"]] == [GLM_THOUGHT]
    body, _ = treq.to_openai(next_request(found, {"type": "adaptive"}), preset("openrouter", "moonshotai/kimi-k3"))
    turn = assistant_turn(body)
    assert "reasoning_details" not in turn and turn["reasoning"] == GLM_THOUGHT
    body, _ = treq.to_openai(next_request(found, {"type": "adaptive"}), preset("minimax", "MiniMax-M3"))
    assert not {"reasoning_details", "reasoning", "reasoning_content"} & set(assistant_turn(body))
    anthropic = [{"type": "thinking", "thinking": "secret", "signature": "EqQBCkYIBxgCKkB"}, found[1]]
    for name, model_name in (("openrouter", "z-ai/glm-5.3"), ("minimax", "MiniMax-M3")):
        body, _ = treq.to_openai(next_request(anthropic, {"type": "adaptive"}), preset(name, model_name))
        assert not {"reasoning_details", "reasoning", "reasoning_content"} & set(assistant_turn(body))


def test_a_thinking_text_that_changed_is_not_sent_as_the_items():
    """The items' texts are rebuilt from the block's text by length; a block whose text is not the
    one it was sent with falls back to the plain field (OpenRouter) rather than send wrong items."""
    model = preset("openrouter", "z-ai/glm-5.3")
    found = blocks(replay("openrouter/glm_tool_call.chunks.txt", model))
    turn = assistant_turn(treq.to_openai(next_request(found, {"type": "adaptive"}), model)[0])
    assert [d["text"] for d in turn["reasoning_details"]] == [GLM_THOUGHT] and "reasoning" not in turn
    found[0] = dict(found[0], thinking=found[0]["thinking"] + " (edited)")
    turn = assistant_turn(treq.to_openai(next_request(found, {"type": "adaptive"}), model)[0])
    assert "reasoning_details" not in turn and turn["reasoning"] == GLM_THOUGHT + " (edited)"


# ---------------------------------------------------------------- Gemini's thought signatures

def test_gemini_thought_signature_rides_in_the_tool_id_and_goes_back():
    """The call Gemini signed comes back to Gemini with its signature and its own id; the id the
    client saw is a valid tool_use id."""
    model = preset("gemini", "gemini-4-hydrogen")
    events = replay("gemini/tool_call.chunks.txt", model)
    found = blocks(events)
    call = found[0]
    assert call["name"] == "check_flight" and call["input"] == {"flight": "AA100"}
    assert TOOL_ID.match(call["id"]) and call["id"].startswith("function-call-1") and call["id"] != "function-call-1"
    assert ending(events) == ("tool_use", usage(20, 15, cached=100))
    body, _ = treq.to_openai(next_request(found), model)
    assert assistant_turn(body)["tool_calls"] == [{
        "id": "function-call-1", "type": "function",
        "function": {"name": "check_flight", "arguments": "{\"flight\":\"AA100\"}"},
        "extra_content": {"google": {"thought_signature": "<Signature A>"}}}]
    assert [m["tool_call_id"] for m in body["messages"] if m["role"] == "tool"] == ["function-call-1"]


def test_gemini_history_without_signature_gets_the_documented_stand_in_on_the_first_call():
    found = [{"type": "tool_use", "id": "toolu_a", "name": "Read", "input": {}},
             {"type": "tool_use", "id": "toolu_b", "name": "Grep", "input": {}}]
    body, _ = treq.to_openai(next_request(found), preset("gemini", "gemini-3.8-flash"))
    calls = assistant_turn(body)["tool_calls"]
    assert calls[0]["extra_content"] == {"google": {"thought_signature": "skip_thought_signature_validator"}}
    assert "extra_content" not in calls[1]


def test_a_signed_id_goes_to_another_provider_without_its_signature():
    model = preset("gemini", "gemini-4-hydrogen")
    found = blocks(replay("gemini/tool_call.chunks.txt", model))
    body, _ = treq.to_openai(next_request(found), preset("deepseek", "deepseek-flash"))
    assert assistant_turn(body)["tool_calls"][0]["id"] == "function-call-1"
    assert "extra_content" not in assistant_turn(body)["tool_calls"][0]


# ---------------------------------------------------------------- requests, flag by flag

def request(**extra) -> dict:
    return {"model": "claude-sonnet-4-5", "max_tokens": 1000, "messages": [{"role": "user", "content": "hi"}], **extra}


BASH = {"name": "Bash", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}}


def test_deepseek_thinking_follows_the_request():
    """No thinking asked: DeepSeek (which thinks by default) is told `disabled`, as Anthropic would
    not think; adaptive with effort max: enabled with max; adaptive alone: Anthropic's default
    effort, medium, which DeepSeek folds to high itself."""
    model = preset("deepseek", "deepseek-flash")
    body, _ = treq.to_openai(request(), model)
    assert body["thinking"] == {"type": "disabled"} and "reasoning_effort" not in body
    body, _ = treq.to_openai(request(thinking={"type": "adaptive"}, output_config={"effort": "max"}), model)
    assert (body["thinking"], body["reasoning_effort"]) == ({"type": "enabled"}, "max")
    body, _ = treq.to_openai(request(thinking={"type": "adaptive"}), model)
    assert (body["thinking"], body["reasoning_effort"]) == ({"type": "enabled"}, "medium")


@pytest.mark.parametrize("choice,sent", [({"type": "any"}, "required"),
                                         ({"type": "tool", "name": "Bash"}, {"type": "function", "function": {"name": "Bash"}})])
def test_deepseek_forced_tool_choice_goes_with_thinking_off(choice, sent):
    body, _ = treq.to_openai(request(thinking={"type": "adaptive"}, tools=[BASH], tool_choice=choice),
                             preset("deepseek", "deepseek-flash"))
    assert body["tool_choice"] == sent and body["thinking"] == {"type": "disabled"} and "reasoning_effort" not in body


def test_deepseek_auto_tool_choice_keeps_thinking():
    body, _ = treq.to_openai(request(thinking={"type": "adaptive"}, tools=[BASH], tool_choice={"type": "auto"}),
                             preset("deepseek", "deepseek-flash"))
    assert body["tool_choice"] == "auto" and body["thinking"] == {"type": "enabled"}


@pytest.mark.parametrize("choice,note", [
    ({"type": "tool", "name": "Bash"}, "Answer by calling the function Bash."),
    ({"type": "any"}, "Answer by calling one of the functions.")])
def test_glm_forced_tool_choice_becomes_auto_and_an_instruction(choice, note):
    body, _ = treq.to_openai(request(tools=[BASH], tool_choice=choice), preset("zai", "glm-5.3"))
    assert body["tool_choice"] == "auto"
    assert body["messages"][-1] == {"role": "user", "content": f"<system-reminder>\n{note}\n</system-reminder>"}
    assert body["max_tokens"] == 1000 and "max_completion_tokens" not in body      # GLM reads max_tokens


def test_kimi_takes_at_most_128_tools():
    model = preset("moonshot", "kimi-k3.1-pro")
    tools = [dict(BASH, name=f"t{i}") for i in range(129)]
    with pytest.raises(InvalidRequest) as raised:
        treq.to_openai(request(tools=tools), model)
    assert "at most 128 tools" in raised.value.message and "offers 129" in raised.value.message
    assert len(treq.to_openai(request(tools=tools[:128]), model)[0]["tools"]) == 128
    deferred = tools[:128] + [dict(BASH, name="later1", defer_loading=True), dict(BASH, name="later2", defer_loading=True)]
    assert len(treq.to_openai(request(tools=deferred), model)[0]["tools"]) == 128   # not loaded: not offered


def test_kimi_gets_a_note_for_a_pdf():
    pdf = {"type": "document", "title": "spec.pdf", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}
    body, _ = treq.to_openai({"model": "c", "max_tokens": 10, "messages": [
        {"role": "user", "content": [pdf, {"type": "text", "text": "summarise"}]}]}, preset("moonshot", "kimi-k3.1-pro"))
    assert body["messages"][-1] == {"role": "user", "content": (
        "[document omitted: spec.pdf (application/pdf); kimi-k3.1-pro is not sent files]\n\nsummarise")}


def test_minimax_thinking_is_adaptive_or_disabled_and_split():
    model = preset("minimax", "MiniMax-M3")
    body, _ = treq.to_openai(request(thinking={"type": "enabled", "budget_tokens": 4000}), model)
    assert (body["thinking"], body["reasoning_split"]) == ({"type": "adaptive"}, True) and "reasoning_effort" not in body
    body, _ = treq.to_openai(request(), model)
    assert (body["thinking"], body["reasoning_split"]) == ({"type": "disabled"}, True)


# xAI's reasoning page (https://docs.x.ai/developers/model-capabilities/text/reasoning): grok-4.3
# takes reasoning.effort none, low (its default), medium or high; grok-4.7 low, medium, high (its
# default) or xhigh, and no none.  No thinking asked and no effort set: no effort, xAI's default.
XAI_EFFORTS = [
    ("grok-4.3", {}, None),
    ("grok-4.3", {"thinking": {"type": "disabled"}}, "none"),
    ("grok-4.3", {"thinking": {"type": "enabled", "budget_tokens": 1024}}, "low"),
    ("grok-4.3", {"thinking": {"type": "adaptive"}}, "medium"),
    ("grok-4.3", {"thinking": {"type": "adaptive"}, "output_config": {"effort": "max"}}, "high"),
    ("grok-4.7", {}, None),
    ("grok-4.7", {"thinking": {"type": "disabled"}}, "low"),
    ("grok-4.7", {"thinking": {"type": "adaptive"}}, "medium"),
    ("grok-4.7", {"thinking": {"type": "adaptive"}, "output_config": {"effort": "high"}}, "high"),
    ("grok-4.7", {"thinking": {"type": "adaptive"}, "output_config": {"effort": "max"}}, "xhigh"),
]


@pytest.mark.parametrize("model_name,extra,effort", XAI_EFFORTS,
                         ids=[f"{m}-{e}" for m, _, e in XAI_EFFORTS])
def test_xai_effort_in_the_responses_request(model_name, extra, effort):
    body, _ = to_responses(request(**extra), preset("xai", model_name))
    assert body["reasoning"] == ({"summary": "auto"} if effort is None else {"summary": "auto", "effort": effort})
    assert "reasoning_effort" not in body                   # the Chat Completions field never goes to Responses


@pytest.mark.parametrize("model_name", ["grok-4.7", "grok-4.3"])
def test_xai_responses_request_carries_the_cache_routing_key_in_the_body(model_name):
    """xAI: "For the Responses API, use the prompt_cache_key field directly in the request body"
    (https://docs.x.ai/developers/advanced-api-usage/prompt-caching/maximizing-cache-hits)."""
    model = preset("xai", model_name)
    one, _ = to_responses(request(system="You are Claude Code."), model)
    two, _ = to_responses(request(system="You are Claude Code.", messages=[
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "go on"}]), model)
    assert one["prompt_cache_key"].startswith("ccpx-") and one["prompt_cache_key"] == two["prompt_cache_key"]


def test_qwen_gets_one_system_message_first():
    body, _ = treq.to_openai({"model": "c", "max_tokens": 10, "system": "You are Claude Code.", "messages": [
        {"role": "system", "content": "Project rules."}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"}, {"role": "system", "content": "Reminder."},
        {"role": "user", "content": "go"}]}, preset("qwen", "qwen3.8-max"))
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user", "user"]
    assert body["messages"][0]["content"] == "You are Claude Code.\n\nProject rules."
    assert body["messages"][3]["content"] == "<system-reminder>\nReminder.\n</system-reminder>"


def test_gemini_tool_schema_in_its_subset_losing_nothing():
    """A schema of the kind Claude Code 2.1.260+ sends, cut to https://ai.google.dev/api/caching#Schema
    by hand: $ref inlined, const as enum, a type list as nullable, oneOf as anyOf, prefixItems as
    items; what the subset cannot say stays in the description."""
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "additionalProperties": False,
        "$defs": {"Range": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "integer"}], "items": False}},
        "properties": {
            "lines": {"$ref": "#/$defs/Range", "description": "first and last line"},
            "mode": {"const": "replace"},
            "limit": {"type": ["integer", "null"], "exclusiveMinimum": 0},
            "target": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        },
        "required": ["mode"],
    }
    body, _ = treq.to_openai(request(tools=[{"name": "Edit", "input_schema": schema}]), preset("gemini", "gemini-3.8-flash"))
    note = "JSON Schema constraints not enforced here: "
    assert body["tools"][0]["function"]["parameters"] == {
        "type": "object",
        "properties": {
            "lines": {"type": "array", "items": {"anyOf": [{"type": "integer"}, {"type": "integer"}]},
                      "description": "first and last line\n" + note +
                      '{"prefixItems":[{"type":"integer"},{"type":"integer"}],"items":false}'},
            "mode": {"enum": ["replace"]},
            "limit": {"nullable": True, "type": "integer", "description": note + '{"exclusiveMinimum":0}'},
            "target": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
                       "description": note + '{"oneOf":"exactly one of the anyOf branches"}'},
        },
        "required": ["mode"],
        "description": note + '{"additionalProperties":false}',
    }


def test_other_models_get_the_schema_as_sent():
    schema = {"type": "object", "properties": {"p": {"type": "array", "prefixItems": [{"type": "string"}]}}}
    body, _ = treq.to_openai(request(tools=[{"name": "T", "input_schema": schema}]), preset("deepseek", "deepseek-flash"))
    assert body["tools"][0]["function"]["parameters"] == schema


# ---------------------------------------------------------------- the providers' own errors

def error_of(path: str, status: int = 400):
    return upstream_errors.from_upstream(status, (CORPUS / path).read_bytes(), provider="p")


@pytest.mark.parametrize("path,overflow", [("zai/error_1210_context.json", True), ("zai/error_1210_tokens.json", True),
                                           ("zai/error_1261.json", True), ("zai/error_1210_other.json", False)])
def test_zai_overflow_codes_become_prompt_is_too_long(path, overflow):
    exc = error_of(path)
    assert isinstance(exc, InvalidRequest) and exc.status == 400
    assert exc.message.startswith("prompt is too long: ") == overflow
    assert json.loads((CORPUS / path).read_text())["error"]["message"] in exc.message


@pytest.mark.parametrize("path", ["deepseek/error_reasoning_not_passed_back.json", "deepseek/error_tool_choice.json",
                                  "moonshot/error_too_many_tools.json"])
def test_provider_words_reach_the_client(path):
    exc = error_of(path)
    assert isinstance(exc, InvalidRequest) and not exc.message.startswith("prompt is too long")
    assert exc.message.startswith(json.loads((CORPUS / path).read_text())["error"]["message"])


def test_gemini_error_list_gives_its_message_not_a_printout():
    exc = error_of("gemini/error_missing_signature.json")
    assert exc.message.startswith("function call is missing a thought_signature in functioncall parts.")
    assert "{'error'" not in exc.message and "[{" not in exc.message
