"""translate.text_chunks: a stream's text chunks read by their bytes, never otherwise than parsed."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from ccproxyd.translate.text_chunks import MAX_TRIES, TextChunks, plain_text


def line(delta: dict, **extra) -> bytes:
    chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": delta, "finish_reason": None}], **extra}
    return orjson.dumps(chunk)


def learnt(data: bytes) -> TextChunks:
    known = TextChunks()
    known.learn(data, plain_text(orjson.loads(data)))
    return known


def test_a_chunk_written_like_the_learnt_one_is_read_without_parsing():
    known = learnt(line({"content": "Hello"}))
    assert known.text(line({"content": " world"})) == " world"
    assert known.text(line({"content": 'a "quoted" \\ line\n\u00e9\U0001f600'})) == 'a "quoted" \\ line\n\u00e9\U0001f600'
    assert known.text(line({"content": "x"})) == "x"


@pytest.mark.parametrize("other", [
    line({"content": ""}),                                              # empty: no text (parsed)
    line({"content": None}),
    line({"content": 7}),
    line({"content": ["x"]}),
    line({"content": "a"}).replace(b'"a"', b'"a","b"'),                  # two strings where one was
    line({"content": "a"}).replace(b'"a"', b'"a"}],"usage":{"x":1},"z":[{"q":"b"'),   # a string that closes the object
    line({"content": "hi"}, usage={"prompt_tokens": 1}),                # more than text
    line({"content": "hi", "role": "assistant"}),
    line({"content": "hi"}).replace(b'"finish_reason":null', b'"finish_reason":"stop"'),
    b'{"error":{"message":"overloaded"}}',
    b"[DONE]",
    b"not json",
    b"",
])
def test_anything_else_is_left_to_the_parser(other):
    known = learnt(line({"content": "Hello"}))
    assert known.text(other) is None


@pytest.mark.parametrize("first, then, why", [
    (b'{"choices":[{"index":0,"delta":{"content":"\\u0048i"}}]}',
     b'{"choices":[{"index":0,"delta":{"content":"Yo"}}]}', "the string written otherwise than orjson writes it"),
    (b'{"id":"Hi","choices":[{"index":0,"delta":{"content":"Hi"}}]}',
     b'{"id":"Yo","choices":[{"index":0,"delta":{"content":"Hi"}}]}', "the string twice in the line"),
    (b'{"choices":[{"index":0,"delta":{"content":"Hi","content":"Hi"}}]}',
     b'{"choices":[{"index":0,"delta":{"content":"Yo","content":"Hi"}}]}', "a duplicate key"),
    (b'{"x":"Hi","choices":[{"index":0,"delta":{"content":"\\u0048i"}}]}',
     b'{"x":"Yo","choices":[{"index":0,"delta":{"content":"\\u0048i"}}]}', "the string found is another value"),
])
def test_a_chunk_that_does_not_say_where_its_text_is_is_not_learnt(first, then, why):
    """Not learnt: neither the line itself nor the line with another string at any of the places
    its text could have been is read by its bytes (the last one's text is still "Hi")."""
    known = learnt(first)
    assert known.text(first) is None and known.text(then) is None, why


def test_a_duplicate_key_whose_last_value_is_the_text_is_learnt_at_the_last():
    first = b'{"choices":[{"index":0,"delta":{"content":"old","content":"Hi"}}]}'
    known = learnt(first)
    assert known.text(first.replace(b'"Hi"', b'"Yo"')) == "Yo" == plain_text(orjson.loads(first.replace(b'"Hi"', b'"Yo"')))


def test_the_first_text_chunk_may_differ_from_the_rest_and_learning_stops_after_a_few():
    known = TextChunks()
    first = line({"role": "assistant", "content": "Hi"})
    known.learn(first, "Hi")
    rest = line({"content": " there"})
    assert known.text(rest) is None                        # learnt from the first, which has its role
    known.learn(rest, " there")
    assert known.text(line({"content": "!"})) == "!"
    counted = [line({"content": "x"}, created=n) for n in range(1, 6)]     # a field that changes every chunk
    for data in counted:
        if known.text(data) is None:
            known.learn(data, "x")
    assert known.tries == 0
    # the first is the learnt line's (created 1); the second is the last learning; then none
    assert [known.text(data) for data in counted] == [None, "x", None, None, None]
    assert MAX_TRIES == 3


# OpenAI's chunks as it sends them (recorded by GoModel's contract tests, tests/contract/testdata/
# openai/chat_completion_stream.txt in ENTERPILOT/GoModel, 2026-01): the padding is the last member
OPENAI = [b'{"id":"chatcmpl-D0q8","object":"chat.completion.chunk","created":1769092764,"model":"gpt-4o-mini-2024-07-18",'
          b'"service_tier":"default","system_fingerprint":"fp_29330a9688","choices":[{"index":0,"delta":{"content":'
          + text + b'},"logprobs":null,"finish_reason":null}],"obfuscation":' + padding + b"}"
          for text, padding in ((b'"Hello"', b'"ZGF"'), (b'","', b'"lRK2aBv"'), (b'" World"', b'"kJ"'),
                                (b'"!"', b'"0wmdEAC"'), (b'"a\\"b"', b'""'), (b'"\\u00e9"', b'"x\\"}"'))]


def test_openais_chunks_are_read_by_their_text_and_padding():
    """Learnt up to the padding's value, then each chunk read from its two strings."""
    known = TextChunks()
    known.learn(OPENAI[0], "Hello")
    assert known.padded
    assert [known.text(data) for data in OPENAI[1:]] == [",", " World", "!", 'a"b', "\u00e9"]
    assert [known.text(data) for data in OPENAI[1:]] == [plain_text(orjson.loads(data)) for data in OPENAI[1:]]


@pytest.mark.parametrize("other, why", [
    (OPENAI[1].replace(b'"lRK2aBv"}', b'7}'), "padding that is not a string"),
    (OPENAI[1].replace(b'"lRK2aBv"}', b'"a","x":{"content":"y"}}'), "more members after the padding"),
    (OPENAI[1].replace(b'"lRK2aBv"}', b'"a"'), "the object not closed"),
    (OPENAI[1].replace(b'"lRK2aBv"}', b'"a"x'), "another byte where the object closes"),
    (OPENAI[1].replace(b'"lRK2aBv"}', b'"a"},{}'), "bytes after the object"),
    (OPENAI[1].replace(b'"finish_reason":null', b'"finish_reason":"stop"'), "a finish reason"),
])
def test_a_padded_chunk_that_is_not_the_learnt_one_is_parsed(other, why):
    known = TextChunks()
    known.learn(OPENAI[0], "Hello")
    assert known.text(other) is None, why


# Soundness, whatever the lines: `text` is None or the text the parsed chunk carries (plain_text).
_TEXT = st.one_of(st.text(min_size=0, max_size=8), st.text(st.characters(max_codepoint=127), max_size=8))
_DELTA = st.builds(lambda content, extra: {"content": content, **extra},
                   st.one_of(st.text(min_size=1, max_size=8), st.sampled_from(["", None, 3])),
                   st.sampled_from([{}, {}, {"role": "assistant"}, {"role": ""}, {"refusal": None},
                                    {"reasoning_content": None}, {"reasoning_content": "hm"}]))
_CHUNK = st.builds(lambda delta, finish, usage, id_, echo: {
    "id": id_, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    **({"usage": usage} if usage is not None else {}),
    **({"name": delta["content"]} if echo else {})},                  # the text again, elsewhere
    _DELTA, st.sampled_from([None] * 4 + ["stop"]), st.sampled_from([None] * 4 + [{"prompt_tokens": 1}]),
    st.sampled_from(["c", "Hi", "x"]), st.booleans())
_WRITERS = [orjson.dumps, lambda c: json.dumps(c).encode(), lambda c: json.dumps(c, ensure_ascii=False).encode(),
            lambda c: json.dumps(c, separators=(",", ":")).encode(),
            lambda c: orjson.dumps({**c, "obfuscation": "p" * (len(str(c)) % 7)}),          # OpenAI's padding,
            lambda c: orjson.dumps({**c, "obfuscation": 'q"}' * (len(str(c)) % 3)})]       # of every length


def _mutations(data: bytes):
    yield data
    for at in (len(data) // 3, len(data) // 2, len(data) - 3):
        yield data[:at] + b'"' + data[at:]
        yield data[:at] + b'","' + data[at:]
        yield data[:at] + data[at + 1:]


_TWEAKS = [lambda c: c, lambda c: dict(c, id="other"), lambda c: dict(c, usage={"prompt_tokens": 1}),
           lambda c: dict(c, choices=[dict(c["choices"][0], finish_reason="stop")]),
           lambda c: dict(c, choices=[dict(c["choices"][0], delta=dict(c["choices"][0]["delta"], role="assistant"))]),
           lambda c: dict(c, choices=[dict(c["choices"][0], delta=dict(c["choices"][0]["delta"], refusal="no"))])]


_SAME = [0, 0, 0]       # most other lines: the first one with another text, written alike


@given(_CHUNK, st.lists(st.tuples(st.one_of(_TEXT, _TEXT, st.sampled_from([None, 3, 12345, ["x"], {"a": "b"}])),
                                  st.sampled_from(_SAME + list(range(len(_TWEAKS)))),
                                  st.sampled_from([None, None, None, *range(len(_WRITERS))])), max_size=8),
       st.integers(0, len(_WRITERS) - 1))
@settings(max_examples=400)
def test_a_line_read_by_its_bytes_says_what_the_parsed_chunk_says(first, others, writer):
    """Each other line is the first one with its text replaced, maybe something else changed,
    maybe written otherwise, then maybe broken."""
    data = _WRITERS[writer](first)
    text = plain_text(first)
    known = TextChunks()
    if text is not None:
        known.learn(data, text)
    for content, tweak, how in others:
        chunk = _TWEAKS[tweak](dict(first, choices=[dict(first["choices"][0], delta=dict(
            first["choices"][0]["delta"], content=content))]))
        for candidate in _mutations(_WRITERS[writer if how is None else how](chunk)):
            read = known.text(candidate)
            if read is None:
                continue
            parsed = orjson.loads(candidate)                # a line read must be a JSON object
            assert isinstance(parsed, dict) and read == plain_text(parsed)


def test_a_member_named_like_the_padding_elsewhere_is_learnt_as_any_other_field():
    """Only a last member `obfuscation` with a string value is padding; one inside the delta is
    part of the learnt bytes (it would have made the chunk unlearnable as padding)."""
    first = line({"content": "Hi", "obfuscation": ""})
    known = learnt(first)
    assert not known.padded and known.text(line({"content": "Yo", "obfuscation": ""})) == "Yo"
