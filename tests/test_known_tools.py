"""translate.wire.known_tools: a request whose tools are known by their bytes is read as it would
be parsed whole: the same body, the same errors; the known lists are never changed by a request."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from ccproxyd.config.table import Model
from ccproxyd.errors import InvalidRequest
from ccproxyd.translate import request as treq
from ccproxyd.translate import tools as ttools
from ccproxyd.translate.wire import known_tools, messages
from ccproxyd.translate.wire.known_tools import Known, KnownTools


def tool(i: int, **extra) -> dict:
    return {"name": f"Tool{i}", "description": f"Tool number {i}: it does a useful thing. " * 4,
            "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
            **extra}


TOOLS = [tool(i) for i in range(8)]
OTHER_TOOLS = [tool(i) for i in range(1, 9)]


def request(tools=TOOLS, text="hello", **extra) -> dict:
    """In Claude Code's order: the conversation, then the tools, then the rest."""
    return {"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": True, "system": [{"type": "text", "text": "s"}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
            **({"tools": tools} if tools is not None else {}), "metadata": {"user_id": "u"}, **extra}


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setattr(messages, "KNOWN_TOOLS", Known())


def read(raw: bytes):
    """What messages.read gives, or the error's message."""
    try:
        body, media = messages.read(raw)
    except InvalidRequest as exc:
        return "error: " + exc.message
    return body, media


def test_a_request_whose_tools_are_known_is_the_request_parsed_whole():
    first = orjson.dumps(request())
    assert type(read(first)[0]["tools"]) is list                    # parsed whole, then learnt
    second = orjson.dumps(request(text="and again"))
    body, media = read(second)
    assert type(body["tools"]) is KnownTools
    assert body == orjson.loads(second) and media == 0
    assert body["tools"].raw == orjson.dumps(TOOLS)


@pytest.mark.parametrize("raw, why", [
    (orjson.dumps(request(tools=OTHER_TOOLS)), "other tools"),
    (json.dumps(request(text="x")).encode(), "written with spaces: not as orjson writes it"),
    (orjson.dumps(request(tools=None, text="x")), "no tools"),
    (orjson.dumps(request(tools=[])), "no tools"),
    # the known bytes inside a message (a tool's input), the body's own tools other ones
    (orjson.dumps(request(tools=OTHER_TOOLS, messages=[{"role": "assistant", "content": [
        {"type": "tool_use", "id": "t", "name": "Tool1", "input": {"tools": TOOLS}}]}])), "the known bytes in a message"),
    # tools named twice: the last wins, as orjson parses
    (orjson.dumps(request())[:-1] + b',"tools":' + orjson.dumps(OTHER_TOOLS) + b"}", "tools named twice, the last other"),
    (orjson.dumps(request(tools=OTHER_TOOLS))[:-1] + b',"tools":' + orjson.dumps(TOOLS) + b',"tools":[]}', "the known list, then none"),
])
def test_a_request_whose_tools_are_not_known_there_is_parsed_whole(raw, why):
    read(orjson.dumps(request()))
    parsed = orjson.loads(raw)
    expected = messages.validate(parsed)
    body, media = read(raw)
    assert body == parsed and type(body.get("tools")) is not KnownTools, why
    assert media == expected


DEEP: list = []
for _ in range(messages.MAX_NESTING):
    DEEP = [DEEP]


@pytest.mark.parametrize("raw, error", [
    (orjson.dumps(request())[:-1], "request body is not valid JSON"),
    (orjson.dumps(request(metadata={"x": DEEP})), "nested more than"),
    (orjson.dumps(request(max_tokens="many")), "max_tokens: must be an integer"),
    (orjson.dumps([request()]), "must be a JSON object"),
])
def test_a_bad_request_with_known_tools_gets_the_error_it_gets_parsed_whole(raw, error):
    read(orjson.dumps(request()))
    assert messages.KNOWN_TOOLS.parse(orjson.dumps(request(text="x"))) is not None      # known
    got = read(raw)
    assert isinstance(got, str) and error in got
    messages.KNOWN_TOOLS = Known()                                   # the same without known tools
    assert read(raw) == got


def test_tools_whose_shape_fails_are_never_learnt():
    bad = [tool(i) for i in range(7)] + [{"name": "", "input_schema": {}}]
    assert read(orjson.dumps(request(tools=bad))) == "error: tools.7.name: must be a non-empty string, got a string"
    assert messages.KNOWN_TOOLS.parse(orjson.dumps(request(tools=bad))) is None


def test_a_small_list_is_not_worth_knowing_and_a_list_written_otherwise_is_not_tried_again():
    known = Known()
    small = request(tools=[{"name": "a", "input_schema": {"type": "object"}}])
    known.learn(orjson.dumps(small), small)
    escaped = request(tools=[*TOOLS, tool(9, description="caf\u00e9")])     # é as \u00e9, not as orjson writes it
    known.learn(json.dumps(escaped, separators=(",", ":")).encode(), escaped)
    spaced = request()
    known.learn(json.dumps(spaced).encode(), spaced)                      # no "tools":[ to be found
    assert known._lists == {} and len(known._unknowable) == 2


def test_the_known_lists_are_bounded_oldest_first_and_a_list_in_use_stays():
    known = Known()
    bodies = [request(tools=[tool(i, n=n) for i in range(8)]) for n in range(known_tools.KEPT + 2)]
    for body in bodies:
        if body is bodies[-2]:                                       # full: the first one used,
            assert known.parse(orjson.dumps(bodies[0])) is not None    # the newest again
        known.learn(orjson.dumps(body), body)
    assert known.parse(orjson.dumps(bodies[0])) is not None
    assert known.parse(orjson.dumps(bodies[1])) is None and known.parse(orjson.dumps(bodies[2])) is None
    assert sum(map(len, known._lists.values())) == known_tools.KEPT
    assert known._bytes == sum(len(t.raw) for kept in known._lists.values() for t in kept)


MODEL = Model(name="m", provider="p", upstream="up", context_window=100000, max_output_tokens=1000)
SEARCH_MODEL = Model(name="s", provider="p", upstream="up", context_window=100000, max_output_tokens=1000,
                     web_search="openrouter", api="chat_completions")


@pytest.mark.parametrize("model", [MODEL, SEARCH_MODEL, Model(name="r", provider="p", upstream="up", context_window=100000,
                                                             max_output_tokens=1000, api="responses", web_search="openai"),
                                   Model(name="g", provider="p", upstream="up", context_window=100000,
                                         max_output_tokens=1000, tool_schema="gemini")])
def test_translation_reads_a_known_list_and_never_changes_it(model):
    tools = [*TOOLS, tool(9, defer_loading=True), tool(10, cache_control={"type": "ephemeral", "ttl": "1h"}),
             {"type": "web_search_20250305", "name": "web_search", "max_uses": 2, "allowed_domains": ["a.org"]}]
    read(orjson.dumps(request(tools=tools)))
    body, _ = read(orjson.dumps(request(tools=tools, text="again")))
    assert type(body["tools"]) is KnownTools
    before = copy.deepcopy(list(body["tools"]))
    from ccproxyd.flow import proxy
    for _ in range(2):
        proxy.upstream_request(body, model)
    assert list(body["tools"]) == before == tools


def test_a_known_list_finds_the_conversion_its_json_would():
    read(orjson.dumps(request()))
    body, _ = read(orjson.dumps(request(text="x")))
    names_known, names_parsed = {}, {}
    assert ttools.convert_tools(body["tools"], names_known) is ttools.convert_tools(orjson.loads(orjson.dumps(TOOLS)), names_parsed)
    assert names_known == names_parsed
    assert treq.to_openai(body, MODEL) == treq.to_openai(orjson.loads(orjson.dumps(request(text="x"))), MODEL)


# Whatever the requests, each is read as it is parsed whole (orjson.loads, then the shape check).
_TEXT = st.text(max_size=20)
_TOOL_LISTS = st.sampled_from([TOOLS, OTHER_TOOLS, TOOLS[:5], None])
_KEY = st.sampled_from(["tools", "tool", "Tools", "tools_"])


@st.composite
def _requests(draw):
    tools = draw(_TOOL_LISTS)
    body = request(tools=tools, text=draw(_TEXT))
    if draw(st.booleans()):                      # the known bytes (or others) in a tool's input
        body["messages"].append({"role": "assistant", "content": [
            {"type": "tool_use", "id": "t", "name": "Tool1", "input": {draw(_KEY): draw(_TOOL_LISTS) or []}}]})
    if draw(st.booleans()):                      # the tools before the conversation
        body = {"tools": body.pop("tools", None), **body}
    raw = orjson.dumps(body)
    how = draw(st.integers(0, 4))
    if how == 1:                                 # the tools again, after: the last one counts
        raw = raw[:-1] + b',"tools":' + orjson.dumps(draw(_TOOL_LISTS)) + b"}"
    elif how == 2:                               # cut short
        raw = raw[:draw(st.integers(0, len(raw)))]
    elif how == 3:                               # a byte changed
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([draw(st.sampled_from(b'"[]{},:x '))]) + raw[at + 1:]
    return raw


@given(st.lists(_requests(), min_size=1, max_size=6))
@settings(max_examples=150)
def test_every_request_is_read_as_it_is_parsed_whole(raws):
    known = messages.KNOWN_TOOLS = Known()
    known.learn(orjson.dumps(request()), request())                 # TOOLS are known
    for raw in raws:
        got = read(raw)
        messages.KNOWN_TOOLS = Known()
        expected = read(raw)
        messages.KNOWN_TOOLS = known
        assert got == expected


@pytest.mark.parametrize("model", [MODEL, SEARCH_MODEL])
def test_the_upstream_body_is_its_translation_written_whole_with_the_tools_written_once(model):
    """flow.proxy.payload writes converted tools once (translate.tools.Converted.written) and puts
    those bytes in every later body: the bytes are those of the translation written whole."""
    from types import SimpleNamespace

    from ccproxyd.flow import proxy

    tools = [*TOOLS, {"type": "web_search_20250305", "name": "web_search"}]
    read(orjson.dumps(request(tools=tools)))
    for text in ("one", "two"):
        body, _ = read(orjson.dumps(request(tools=tools, text=text)))
        written, names = proxy.payload(body, SimpleNamespace(model=model))
        translated, same_names = proxy.upstream_request(body, model)
        assert written == orjson.dumps(translated) and names == same_names


CAPTURES = sorted((Path(__file__).parent / "fixtures" / "claude_code").glob("*.json"))


@pytest.mark.parametrize("path", CAPTURES, ids=[p.name for p in CAPTURES])
def test_claude_codes_tools_as_javascript_writes_them_are_known_on_the_next_turn(path):
    """Claude Code writes its request with JavaScript's JSON.stringify: its captured requests (31 to
    81 KB of tools, MCP tools among them), written so by node, are learnt, and the next turn's
    tools are known (the bytes JSON.stringify writes are those orjson writes)."""
    script = ("const c = JSON.parse(require('fs').readFileSync(0, 'utf8')); const b = c.body;"
              "const next = Object.assign({}, b, {messages: b.messages.concat([{role: 'user', content: 'next'}])});"
              "process.stdout.write(JSON.stringify(b) + '\\n' + JSON.stringify(next));")
    first, _, second = subprocess.run(["node", "-e", script], input=path.read_bytes(), capture_output=True,
                                      check=True).stdout.partition(b"\n")
    body, _ = read(first)
    assert type(body["tools"]) is list
    known, _ = read(second)
    assert type(known["tools"]) is KnownTools and known == orjson.loads(second)
