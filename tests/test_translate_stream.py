"""Table tests: OpenAI chunk transcripts -> Anthropic events, plus the SSE codec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import example, given, strategies as st

from ccproxyd.errors import ApiError, Overloaded, RateLimited, Untranslatable
from ccproxyd.translate.sse import SSEDecoder, coalesce, encode
from ccproxyd.translate import signature
from ccproxyd.translate.response import accumulate, from_completion
from ccproxyd.translate.stream import FINISH_TO_STOP, UNKNOWN_FINISH_STOP, StreamTranslator

from .grammar import check_stream, parse_sse

CASES = json.loads((Path(__file__).parent / "fixtures" / "stream_cases.json").read_text())


def translator() -> StreamTranslator:
    return StreamTranslator("claude-sonnet-4-5", provider="p", upstream_model="m", input_estimate=42)


def run(chunks, done=True) -> list:
    t = translator()
    events = t.start()
    for c in chunks:
        events += t.feed(c)
    return events + t.finish(saw_done=done)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_stream_translation(case):
    events = run(case["chunks"], case["done"])
    sig = signature.make("p", "m")
    expected = [(n, json.loads(json.dumps(d).replace('"SIG"', json.dumps(sig)))) for n, d in case["events"]]
    assert events[0][0] == "message_start"
    assert events[0][1]["message"]["model"] == "claude-sonnet-4-5"
    assert events[1:] == expected
    assert check_stream(parse_sse(encode(events))) == "complete"


@pytest.mark.parametrize("finish,stop", [*FINISH_TO_STOP.items(), ("something_new", UNKNOWN_FINISH_STOP)])
def test_finish_reason_table(finish, stop):
    events = run([{"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": finish}]}])
    expected = "end_turn" if stop == "tool_use" else stop        # no tool block was emitted
    assert events[-2][1]["delta"]["stop_reason"] == expected


def test_truncated_stream_raises_instead_of_closing_cleanly():
    t = translator()
    t.start()
    t.feed({"choices": [{"index": 0, "delta": {"content": "half"}}]})
    with pytest.raises(ApiError):
        t.finish(saw_done=False)


@pytest.mark.parametrize("chunk,cls", [
    ({"error": {"code": 429, "message": "slow down"}}, RateLimited),
    ({"error": {"code": 502, "message": "bad gateway"}}, Overloaded),
    ({"object": "error", "message": "vllm broke"}, ApiError),
    ({"choices": [{"index": 0, "delta": {}, "finish_reason": "error"}]}, ApiError),
])
def test_in_stream_errors(chunk, cls):
    t = translator()
    t.start()
    with pytest.raises(cls) as info:
        t.feed(chunk)
    assert check_stream(parse_sse(encode(t.start()[:1] + t.fail(info.value)))) == "error"


def test_non_streaming_completion():
    completion = {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "Sure.", "reasoning_content": "hmm",
        "tool_calls": [{"id": "call_x", "type": "function", "function": {"name": "Bash", "arguments": "[1, 2]"}},
                       {"id": "call_y", "type": "function", "function": {"name": "Bash", "arguments": "not json"}}]}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}}
    message = from_completion(completion, translator())
    assert [b["type"] for b in message["content"]] == ["thinking", "text", "tool_use", "tool_use"]
    assert message["content"][2]["input"] == {"value": [1, 2]}
    assert message["content"][3]["input"] == {"raw_arguments": "not json"}
    assert message["stop_reason"] == "tool_use" and message["model"] == "claude-sonnet-4-5"
    assert message["usage"]["input_tokens"] == 10


def test_refusal_field_becomes_text():
    completion = {"choices": [{"index": 0, "finish_reason": "content_filter",
                               "message": {"role": "assistant", "content": None, "refusal": "I can't help."}}]}
    message = from_completion(completion, translator())
    assert message["content"] == [{"type": "text", "text": "I can't help."}]
    assert message["stop_reason"] == "refusal"


def test_tool_names_map_back_to_client_names():
    t = StreamTranslator("c", provider="p", upstream_model="m", tool_names={"short_1234": "mcp__long__name"})
    events = t.start() + t.feed({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "c1", "function": {"name": "short_1234", "arguments": "{}"}}]}}]}) + t.finish(True)
    assert accumulate(events)["content"][0]["name"] == "mcp__long__name"


def test_translators_share_no_state():
    a, b = translator(), translator()
    a.start(), b.start()
    a.feed({"choices": [{"index": 0, "delta": {"content": "from a"}}]})
    events_b = b.feed({"choices": [{"index": 0, "delta": {"content": "from b"}}]}) + b.finish(True)
    assert accumulate(b.start()[:1] + events_b)["content"] == [{"type": "text", "text": "from b"}]
    assert a.id != b.id


@pytest.mark.parametrize("pieces", [
    [b"data: {\"a\":1}\n\n", b"data: [DONE]\n\n"],
    [b"data: {\"a\"", b":1}\n", b"\n: OPENROUTER PROCESSING\n\ndata: [DONE]\n\n"],
    [b"data: {\"a\":1}\r\n\r\ndata: [DONE]\r\n\r\n"],
    [b"event: x\ndata: {\"a\":1}\n\ndata: [DONE]"],
])
def test_sse_decoder_splits(pieces):
    decoder = SSEDecoder()
    out = []
    for p in pieces:
        out += decoder.feed(p)
    out += decoder.close()
    assert out == [b'{"a":1}', b"[DONE]"]


# ---------------------------------------------------------------- live tool arguments

def tc(index, args="", name=None, call_id=None):
    call = {"index": index, "function": {"arguments": args}}
    if name:
        call["function"]["name"], call["id"] = name, call_id or f"call_{index}"
    return {"choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]}


def finish(reason="tool_calls"):
    return {"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]}


def live_run(chunks):
    """Events per chunk (so a test can see when each went out), then the closing events."""
    t = StreamTranslator("c", provider="p", upstream_model="m", live_tools=True)
    t.start()
    per_chunk = [t.feed(c) for c in chunks]
    return per_chunk, t.finish(saw_done=True)


def compact(events):
    """(event, index, partial_json or block type) for the tool-related events."""
    out = []
    for name, data in events:
        if name == "content_block_start":
            out.append(("start", data["index"], data["content_block"]["type"]))
        elif name == "content_block_delta" and data["delta"]["type"] == "input_json_delta":
            out.append(("json", data["index"], data["delta"]["partial_json"]))
        elif name == "content_block_delta":
            out.append(("text", data["index"], data["delta"].get("text")))
        elif name == "content_block_stop":
            out.append(("stop", data["index"], None))
    return out


def test_a_tool_call_streams_its_arguments_as_they_arrive():
    per_chunk, closing = live_run([tc(0, name="Write"), tc(0, '{"file_path": "a.txt", '),
                                   tc(0, '"content": "long'), tc(0, ' text"}'), finish()])
    assert [compact(e) for e in per_chunk] == [
        [],                                                         # no block before the arguments open
        [("start", 0, "tool_use"), ("json", 0, '{"file_path": "a.txt", ')],
        [("json", 0, '"content": "long')],
        [("json", 0, ' text"}')],
        [],
    ]
    assert compact(closing) == [("stop", 0, None)]
    events = [("message_start", {"type": "message_start", "message": {"content": [], "usage": {}}})]
    message = accumulate(events + [e for chunk in per_chunk for e in chunk] + closing)
    assert message["content"][0]["input"] == {"file_path": "a.txt", "content": "long text"}
    assert message["stop_reason"] == "tool_use"


def test_sequential_calls_each_go_out_live():
    per_chunk, closing = live_run([tc(0, '{"a": 1', name="A"), tc(0, "}"), tc(1, '{"b": 2}', name="B"), finish()])
    assert compact([e for chunk in per_chunk for e in chunk] + closing) == [
        ("start", 0, "tool_use"), ("json", 0, '{"a": 1'), ("json", 0, "}"),
        ("stop", 0, None), ("start", 1, "tool_use"), ("json", 1, '{"b": 2}'), ("stop", 1, None)]


def test_interleaved_calls_hold_the_second_until_the_first_is_complete():
    per_chunk, closing = live_run([tc(0, '{"a": ', name="A"), tc(1, '{"b": ', name="B"), tc(0, "1}"),
                                   tc(1, "2}"), finish()])
    events = [e for chunk in per_chunk for e in chunk] + closing
    assert compact(events) == [
        ("start", 0, "tool_use"), ("json", 0, '{"a": '), ("json", 0, "1}"), ("stop", 0, None),
        ("start", 1, "tool_use"), ("json", 1, '{"b": 2}'), ("stop", 1, None)]
    check_stream([("message_start", {"type": "message_start", "message": {
        "content": [], "stop_reason": None, "usage": {}}})] + events)


def test_a_live_call_cut_by_max_tokens_ends_as_max_tokens_with_its_partial_arguments():
    per_chunk, closing = live_run([tc(0, '{"content": "half', name="Write"), finish("length")])
    assert compact(closing) == [("stop", 0, None)]
    assert closing[-2][1]["delta"]["stop_reason"] == "max_tokens"


def test_a_live_call_whose_arguments_never_become_json_is_an_error():
    t = StreamTranslator("c", provider="p", upstream_model="m", live_tools=True)
    t.start()
    t.feed(tc(0, '{"a": nope', name="A"))
    t.feed(finish())
    with pytest.raises(ApiError, match="not a JSON object"):
        t.finish(saw_done=True)


def test_interleaved_calls_that_never_resolve_are_sent_whole_at_the_end():
    per_chunk, closing = live_run([tc(0, '{"a": ', name="A"), tc(1, '{"b": ', name="B"), tc(1, "2}"),
                                   tc(0, "1}"), tc(2, '{"c": 3}', name="C"), finish()])
    events = [e for chunk in per_chunk for e in chunk] + closing
    assert compact(events) == [
        ("start", 0, "tool_use"), ("json", 0, '{"a": '), ("json", 0, "1}"), ("stop", 0, None),
        ("start", 1, "tool_use"), ("json", 1, '{"b":2}'), ("stop", 1, None),
        ("start", 2, "tool_use"), ("json", 2, '{"c":3}'), ("stop", 2, None)]


def test_text_in_the_middle_of_a_live_call_comes_after_it():
    per_chunk, closing = live_run([tc(0, '{"a": ', name="A"),
                                   {"choices": [{"index": 0, "delta": {"content": "aside"}}]}, tc(0, "1}"), finish()])
    assert compact([e for chunk in per_chunk for e in chunk] + closing) == [
        ("start", 0, "tool_use"), ("json", 0, '{"a": '), ("json", 0, "1}"), ("stop", 0, None),
        ("start", 1, "text"), ("text", 1, "aside"), ("stop", 1, None)]


def text_chunk(text):
    return {"choices": [{"index": 0, "delta": {"content": text}}]}


def test_text_held_during_a_live_call_keeps_its_order_with_later_text():
    per_chunk, closing = live_run([tc(0, '{"a": ', name="A"), text_chunk("first"), tc(0, "1}"),
                                   text_chunk(" second"), finish()])
    blocks = accumulate([("message_start", {"type": "message_start", "message": {"content": [], "usage": {}}})]
                        + [e for chunk in per_chunk for e in chunk] + closing)["content"]
    assert [b["type"] for b in blocks][0] == "tool_use"
    assert "".join(b.get("text", "") for b in blocks[1:]) == "first second"


def test_an_empty_fragment_for_a_finished_live_call_is_ignored():
    per_chunk, closing = live_run([tc(0, '{"a": 1}', name="A"), tc(1, '{"b": 2}', name="B"), tc(0, ""), finish()])
    events = [e for chunk in per_chunk for e in chunk] + closing
    assert [b["input"] for b in accumulate([("message_start", {"type": "message_start", "message": {
        "content": [], "usage": {}}})] + events)["content"]] == [{"a": 1}, {"b": 2}]


def test_a_cut_live_call_is_left_out_of_the_whole_message_when_asked():
    per_chunk, closing = live_run([text_chunk("Writing."), tc(0, '{"content": "half', name="Write"), finish("length")])
    events = [("message_start", {"type": "message_start", "message": {"content": [], "usage": {}}})]
    events += [e for chunk in per_chunk for e in chunk] + closing
    with pytest.raises(ValueError):
        accumulate(events)                          # strict by default
    cut: list = []
    message = accumulate(events, cut)
    assert cut == [1] and message["content"] == [{"type": "text", "text": "Writing."}]
    assert message["stop_reason"] == "max_tokens"


def _delta(index: int, kind: str, piece: str) -> tuple[str, dict]:
    field = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "partial_json",
             "signature_delta": "signature"}[kind]
    return ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {"type": kind, field: piece}})


STOP0 = ("content_block_stop", {"type": "content_block_stop", "index": 0})
START1 = ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}})

# (events of one upstream read, what goes out): runs of one block's deltas of one type join; nothing else
COALESCE = [
    ([_delta(0, "text_delta", "Hel"), _delta(0, "text_delta", "lo"), _delta(0, "text_delta", "!")],
     [_delta(0, "text_delta", "Hello!")]),
    ([_delta(0, "thinking_delta", "a"), _delta(0, "thinking_delta", "b"), _delta(0, "signature_delta", "s"),
      _delta(0, "signature_delta", "t"), STOP0, START1, _delta(1, "text_delta", "x"), _delta(1, "text_delta", "y")],
     [_delta(0, "thinking_delta", "ab"), _delta(0, "signature_delta", "s"), _delta(0, "signature_delta", "t"), STOP0,
      START1, _delta(1, "text_delta", "xy")]),
    ([_delta(2, "input_json_delta", '{"pa'), _delta(2, "input_json_delta", 'th": 1}'), _delta(3, "input_json_delta", "{}")],
     [_delta(2, "input_json_delta", '{"path": 1}'), _delta(3, "input_json_delta", "{}")]),
    ([_delta(0, "text_delta", "one")], [_delta(0, "text_delta", "one")]),
    ([], []),
]


@pytest.mark.parametrize("events, expected", COALESCE)
def test_one_reads_deltas_go_out_joined(events, expected):
    before = json.dumps(events)
    assert coalesce(events) == expected
    assert json.dumps(events) == before              # the translator's own events are left as they were


def test_a_burst_of_chunks_streams_the_same_message_in_fewer_events():
    chunks = [{"choices": [{"index": 0, "delta": {"content": f"w{i} "}}]} for i in range(40)]
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 5, "completion_tokens": 40}})
    one_by_one, burst = (StreamTranslator("claude-x", provider="p", upstream_model="u") for _ in range(2))
    singly = one_by_one.start() + [e for c in chunks for e in one_by_one.feed(c)] + one_by_one.finish(True)
    joined = coalesce(burst.start() + [e for c in chunks for e in burst.feed(c)] + burst.finish(True))
    assert len(joined) == len(singly) - 39
    assert accumulate(joined)["content"] == accumulate(singly)["content"] == [
        {"type": "text", "text": "".join(f"w{i} " for i in range(40))}]
    check_stream(parse_sse(encode(joined)))


def _sse_by_the_spec(stream: bytes) -> list[bytes]:
    """The data of each event, read line by line as the SSE spec reads them (the oracle)."""
    out, data = [], []
    for line in stream.replace(b"\r\n", b"\n").split(b"\n"):
        if not line:
            if data:
                out.append(b"\n".join(data))
            data = []
        elif line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
    return out


_SSE_VALUE = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12).map(str.encode)
_SSE_LINE = st.one_of(_SSE_VALUE.map(lambda v: b"data: " + v), _SSE_VALUE.map(lambda v: b"data:" + v),
                      _SSE_VALUE.map(lambda v: b": " + v), _SSE_VALUE.map(lambda v: b"event: " + v))


@given(events=st.lists(st.lists(_SSE_LINE, min_size=1, max_size=3), max_size=8),
       crlf=st.booleans(), cuts=st.lists(st.integers(0, 400), max_size=6))
def test_sse_decoder_reads_as_the_spec_does_however_the_bytes_are_cut(events, crlf, cuts):
    end = b"\r\n" if crlf else b"\n"
    stream = b"".join(b"".join(line + end for line in event) + end for event in events)
    decoder, out, last = SSEDecoder(), [], 0
    for cut in sorted(c for c in cuts if c <= len(stream)) + [len(stream)]:
        out += decoder.feed(stream[last:cut])
        last = cut
    assert out + decoder.close() == _sse_by_the_spec(stream)


# One upstream read at a time, as the relay translates it (flow.proxy._decode: a run of chunks
# that are only text goes to the translator at once) against the chunks fed one by one and the
# read's events coalesced: the same events, the same final events, the same output text.
_PIECE = st.text(min_size=1, max_size=6)
_NULLS = st.sampled_from([{}, {"role": "assistant"}, {"reasoning_content": None}, {"refusal": None},
                          {"tool_calls": []}, {"reasoning_details": []}, {"role": "assistant", "reasoning": None}])


def _chunk(delta=None, finish=None, usage=None, choices=True, index=0):
    out = {"id": "c", "object": "chat.completion.chunk", "model": "m"}
    out["choices"] = [{"index": index, "delta": delta or {}, "finish_reason": finish}] if choices else []
    if usage is not None:
        out["usage"] = usage
    return out


_CHUNKS = st.one_of(
    st.builds(lambda text, extra: _chunk({"content": text, **extra}), _PIECE, _NULLS),     # plain text
    st.builds(lambda text: _chunk({"content": text}), _PIECE),
    st.just(_chunk({"role": "assistant", "content": ""})),
    st.builds(lambda text: _chunk({"reasoning_content": text}), _PIECE),
    st.builds(lambda text: _chunk({"content": text, "reasoning_content": "hm"}), _PIECE),
    st.builds(lambda text: _chunk({"refusal": text}), _PIECE),
    st.builds(lambda text: _chunk({"content": text}, index=1), _PIECE),                     # another choice
    st.builds(lambda text: _chunk({"content": text}, finish="stop"), _PIECE),
    st.just(_chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                    "function": {"name": "f", "arguments": ""}}]})),
    st.sampled_from([_chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
                     for piece in ('{"a"', ': 1', '}', '')]),
    st.just(_chunk(finish="tool_calls")),
    st.just(_chunk(choices=False, usage={"prompt_tokens": 3, "completion_tokens": 2})),
    st.just({"choices": [{"delta": {"content": "x"}, "usage": {"prompt_tokens": 1, "completion_tokens": 1}}]}),
    st.just({"error": {"message": "overloaded", "code": 529}}),                            # an in-stream error
    st.sampled_from([b"not json", b"[1]", b"null"]),                                       # a broken data line
)


_CALL_OPEN = [_chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                      "function": {"name": "f", "arguments": ""}}]}),
              _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]})]


@given(st.lists(st.lists(_CHUNKS, min_size=1, max_size=8), max_size=6), st.booleans(),
       st.sampled_from(["summarized", "none"]))
@example([[*_CALL_OPEN, _chunk({"content": "x"}), _chunk({"content": "y"}),      # text held by a live call,
           _chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]})]], True, "none")   # sent at the end
def test_a_read_translated_at_once_is_the_chunks_fed_one_by_one_then_coalesced(reads, live, thinking):
    from types import SimpleNamespace

    import orjson

    from ccproxyd.flow import proxy
    from ccproxyd.translate.text_chunks import TextChunks

    def new() -> StreamTranslator:
        t = StreamTranslator("claude-x", provider="p", upstream_model="m", thinking=thinking, live_tools=live)
        t.start()
        return t

    one_by_one, at_once = new(), new()
    answer = SimpleNamespace(translator=at_once, target=SimpleNamespace(provider=SimpleNamespace(name="p")),
                             text_chunks=TextChunks())

    def fed_one_by_one(read: list) -> list:     # flow.proxy._decode before runs of text were taken at once
        events = []
        for c in read:
            if isinstance(c, bytes):
                raise Untranslatable("a data line that is not a JSON object")
            events += one_by_one.feed(c)
        return coalesce(events)

    def outcome(translate):
        try:
            return translate()
        except Exception as exc:                 # an error must be the same kind of error
            return type(exc).__name__

    for read in reads:
        expected = outcome(lambda: fed_one_by_one(read))
        got = outcome(lambda: proxy._decode([c if isinstance(c, bytes) else orjson.dumps(c) for c in read], answer)[0])
        assert got == expected
        assert at_once.output_text() == one_by_one.output_text()     # what a cut call is billed for
        if isinstance(expected, str):
            return
    assert outcome(lambda: at_once.finish(True)) == outcome(lambda: one_by_one.finish(True))
