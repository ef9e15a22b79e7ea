"""Windows are honoured: a request that does not fit the routed model's window (its counted input
plus its output reserve) goes to a fallback whose window fits, or is answered, before any upstream
call, with the 400 Anthropic answers a too-long prompt with; a provider's own overflow error maps
to the same answer; `ccproxyd claude` tells Claude Code the routed window."""

from __future__ import annotations

import re

import anthropic
import orjson
import pytest
from hypothesis import given, strategies as st

from ccproxyd import errors
from ccproxyd.translate import tokens
from ccproxyd.translate.wire import messages as messages_shape
from ccproxyd.translate import provider_errors as upstream_errors
from ccproxyd.cli.launch import window_env
from ccproxyd.config.table import Model, Provider, Route
from ccproxyd.config.routing import Decision, Target, fit_window, input_room

from .conftest import Daemon
from .fake_upstream import text_script

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PROVIDER = Provider(name="p", base_url="http://127.0.0.1:1/v1")
SMALL = Model(name="small", provider="p", upstream="small", context_window=1000, max_output_tokens=200)
MIDDLE = Model(name="middle", provider="p", upstream="middle", context_window=3000, max_output_tokens=1000)
LARGE = Model(name="large", provider="p", upstream="large", context_window=100000, max_output_tokens=8000)


def decision(*models: Model) -> Decision:
    route = Route(match="*", model=models[0].name, fallbacks=tuple(m.name for m in models[1:]))
    return Decision(requested="claude-x", route_index=0, route=route,
                    targets=tuple(Target(m, PROVIDER) for m in models))


# (targets, max_tokens, input tokens) -> the targets kept, worked out by hand:
# SMALL takes input + min(max_tokens, 200) <= 1000; MIDDLE input + min(max_tokens, 1000) <= 3000;
# LARGE input + min(max_tokens, 8000) <= 100000.
FITS = [
    ((SMALL,), 100, 900, ("small",)),                        # 900 + 100 = 1000: exactly full
    ((SMALL, LARGE), 100, 901, ("large",)),                  # 1001 > 1000: the fallback
    ((SMALL, LARGE), 64000, 800, ("small", "large")),        # the reserve is capped: 800 + 200 = 1000
    ((SMALL, MIDDLE, LARGE), 64000, 2500, ("large",)),       # MIDDLE: 2500 + 1000 = 3500 > 3000
    ((SMALL, MIDDLE, LARGE), 500, 2500, ("middle", "large")),
    ((LARGE, SMALL), 1000, 5000, ("large",)),                # a fallback that cannot hold it is dropped
]


@pytest.mark.parametrize("models, max_tokens, counted, kept", FITS)
def test_the_targets_whose_window_holds_the_request(models, max_tokens, counted, kept):
    fitted = fit_window(decision(*models), max_tokens, counted)
    assert tuple(t.model.name for t in fitted.targets) == kept


# (targets, max_tokens, input) -> the numbers of "prompt is too long: N tokens > M maximum", where
# M is the most input the primary takes beside this request's reserve.
TOO_LONG = [
    ((SMALL,), 100, 901, 901, 900),
    ((SMALL,), 64000, 1500, 1500, 800),
    ((MIDDLE, SMALL), 2000, 2001, 2001, 2000),
]


@pytest.mark.parametrize("models, max_tokens, counted, tokens_said, limit_said", TOO_LONG)
def test_no_target_holds_it_prompt_is_too_long(models, max_tokens, counted, tokens_said, limit_said):
    with pytest.raises(errors.PromptTooLong) as caught:
        fit_window(decision(*models), max_tokens, counted)
    exc = caught.value
    assert (exc.status, exc.error_type) == (400, "invalid_request_error")
    assert exc.message == f"prompt is too long: {tokens_said} tokens > {limit_said} maximum"


def test_the_room_is_what_the_smallest_window_holds_beside_the_reserve():
    # SMALL holds 1000 tokens: 1000 - 100 of input beside max_tokens 100, 1000 - 200 beside 64000
    # (its output reserve is capped at its max_output_tokens)
    assert input_room(decision(SMALL), 100) == 900
    assert input_room(decision(SMALL), 64000) == 800
    assert input_room(decision(LARGE, SMALL), 100) == 900          # every target must hold it


BODIES = [
    {"messages": [{"role": "user", "content": "hi"}]},
    {"messages": [{"role": "user", "content": "déjà vu — 日本語のテキスト " * 40}]},
    {"system": "be brief", "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}]}]},
    {"messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}}]}]},
    {"tools": [{"name": "t"}, {"name": "u", "input_schema": {"type": "object"}}],
     "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": [
         {"type": "tool_use", "id": "a", "name": "t", "input": {}}]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a", "content": "ok"}]}]},
    {"messages": [{"role": "user", "content": "\n\n\n{}[]!!" * 500}]},
]


@pytest.mark.parametrize("body", BODIES)
def test_the_byte_bound_is_never_below_the_count(body):
    raw = orjson.dumps(body)
    assert tokens.upper_bound(raw) >= tokens.count_request(body)
    for room in (0, len(raw), 10 * len(raw)):
        assert tokens.input_bound(raw, room) >= tokens.upper_bound(raw)


@pytest.mark.parametrize("body", BODIES)
def test_the_bound_from_the_shape_check_is_never_below_the_count(body):
    media = messages_shape.validate_count({"model": "m", **body})
    assert tokens.shaped_bound(len(orjson.dumps(body)), len(body.get("tools", ())), media) >= tokens.count_request(body)


def test_the_shape_check_counts_media_wherever_the_count_does():
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}
    text = {"type": "text", "text": "t"}
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}}
    cases = [
        ({"messages": [{"role": "user", "content": "hi"}]}, 0),
        ({"messages": [{"role": "user", "content": [text, image, pdf]}]}, 2),
        ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a",
                                                      "content": [image, {"type": "tool_result", "tool_use_id": "b",
                                                                          "content": [image]}]}]}]}, 2),
        ({"messages": [{"role": "user", "content": [{"type": "document", "source": {
            "type": "content", "content": [text, image, image]}}]}]}, 3),      # the document and its two
        ({"messages": [{"role": "user", "content": [{"type": "search_result", "title": "s", "source": "u",
                                                      "content": [text, image]}]}]}, 1),
        ({"system": [text, image], "messages": [{"role": "user", "content": "hi"}]}, 1),
    ]
    for body, media in cases:
        assert messages_shape.validate_count({"model": "m", **body}) == media
        assert tokens.shaped_bound(len(orjson.dumps(body)), 0, media) >= tokens.count_request(body)


_TEXT = st.text(max_size=40)
_SOURCE = st.one_of(
    st.fixed_dictionaries({"type": st.just("base64"), "media_type": st.just("image/png"), "data": _TEXT}),
    st.fixed_dictionaries({"type": st.just("text"), "media_type": st.just("text/plain"), "data": _TEXT}))
_JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | _TEXT,     # what orjson reads
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3), max_leaves=8)


def _blocks(depth: int):
    leaf = st.one_of(
        st.fixed_dictionaries({"type": st.just("text"), "text": _TEXT}),
        st.fixed_dictionaries({"type": st.just("image"), "source": _SOURCE}),
        st.fixed_dictionaries({"type": st.just("document"), "source": _SOURCE}),
        st.fixed_dictionaries({"type": st.just("thinking"), "thinking": _TEXT, "signature": _TEXT}),
        st.fixed_dictionaries({"type": st.just("tool_use"), "id": _TEXT, "name": _TEXT,
                               "input": st.dictionaries(_TEXT, _JSON, max_size=3)}))
    if depth == 0:
        return st.lists(leaf, max_size=4)
    inner = _blocks(depth - 1)
    return st.lists(st.one_of(
        leaf,
        st.fixed_dictionaries({"type": st.just("tool_result"), "tool_use_id": _TEXT,
                               "content": st.one_of(_TEXT, inner)}),
        st.fixed_dictionaries({"type": st.just("search_result"), "title": _TEXT, "source": _TEXT, "content": inner}),
        st.fixed_dictionaries({"type": st.just("document"),
                               "source": st.fixed_dictionaries({"type": st.just("content"), "content": inner})})),
        max_size=4)


_BODIES = st.fixed_dictionaries(
    {"messages": st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]),
                                                 "content": st.one_of(_TEXT, _blocks(2))}), max_size=4)},
    optional={"system": st.one_of(_TEXT, _blocks(0)),
              "tools": st.lists(st.fixed_dictionaries({"name": st.text(min_size=1, max_size=40)}, optional={
                  "description": _TEXT, "input_schema": st.dictionaries(_TEXT, _JSON, max_size=3)}), max_size=3)})


@given(_BODIES)
def test_the_bound_from_the_shape_check_holds_for_any_request(body):
    # the body as orjson writes it: the bound's terms (tokens.shaped_bound) are that a value
    # count_request writes again comes back no longer than the client wrote it
    media = messages_shape.validate_count({"model": "m", **body})
    bound = tokens.shaped_bound(len(orjson.dumps(body)), len(body.get("tools", ())), media)
    assert bound >= tokens.count_request(body)


@given(st.lists(st.sampled_from([b'"name"', b'"image"', b'"document"', b"x", b'"', b"{}"]), max_size=60),
       st.integers(min_value=0, max_value=4000))
def test_the_input_bound_holds_whatever_the_marks_and_the_room(pieces, room):
    raw = b"".join(pieces)
    bound = tokens.input_bound(raw, room)
    assert bound >= tokens.upper_bound(raw)
    if bound > room:                    # it says "count" only when the scanned bound says so too
        assert tokens.upper_bound(raw) > room


def test_a_request_far_from_its_window_is_not_scanned_and_one_near_it_is():
    raw = orjson.dumps(BODIES[0])
    assert tokens.input_bound(raw, 10 * len(raw)) == len(raw) * tokens.BOUND_PER_BYTE   # unscanned
    assert tokens.input_bound(raw, len(raw)) == tokens.upper_bound(raw)                 # near: scanned
    image = orjson.dumps(BODIES[2])
    assert tokens.input_bound(image, 10**9) == tokens.upper_bound(image) >= tokens.IMAGE_TOKENS


# A provider's own overflow error -> PromptTooLong (400, "prompt is too long: ..."), in each way
# one says it; other 400s stay what they were.
OVERFLOWS = [
    (400, {"error": {"message": "This model's maximum context length is 128000 tokens. However, your messages "
                                "resulted in 130000 tokens.", "type": "invalid_request_error",
                     "code": "context_length_exceeded"}}, True),                                  # OpenAI
    (400, {"error": {"message": "Input tokens exceed the configured limit of 272000 tokens.",
                     "code": "context_length_exceeded"}}, True),                                  # OpenAI (code only)
    (400, {"object": "error", "message": "This model's maximum context length is 8192 tokens. However, you "
                                         "requested 9000 tokens", "code": 400}, True),            # vLLM
    (400, {"error": {"code": 400, "message": "the request exceeds the available context size, try increasing it",
                     "type": "exceed_context_size_error"}}, True),                                # llama.cpp
    (413, {"error": {"message": "prompt is too long: 210000 tokens > 200000 maximum"}}, True),   # a gateway
    (400, {"code": "Client specified an invalid argument", "error": "This model's maximum prompt length is "
                                                                    "131072 but the request contains 140000 tokens."},
     True),                                                       # xAI (the wording: cline/cline#3120)
    (400, {"code": "Client specified an invalid argument", "error": "Failed to start sampling: [input_too_large] "
           "Current message (1149677 tokens) exceeds budget (975424 tokens)"}, True),   # UKGovernmentBEIS/inspect_ai#5208
    (400, {"error": {"message": "Please reduce the length of the messages or completion.", "type":
                     "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}},
     True),                                                       # Groq (OpenHands/OpenHands#1902)
    (400, {"error": {"message": "temperature: must be at most 2", "code": "invalid_value"}}, False),
    (400, {"error": {"message": "input length and `max_tokens` exceed context limit: 188059 + 20000 > 200000, "
                                "decrease input length or `max_tokens` and try again"}}, False),  # Claude Code adjusts

]


@pytest.mark.parametrize("status, body, overflow", OVERFLOWS)
def test_provider_overflow_errors_map_to_prompt_is_too_long(status, body, overflow):
    exc = upstream_errors.from_upstream(status, orjson.dumps(body), provider="prov")
    assert isinstance(exc, errors.PromptTooLong) is overflow
    assert exc.status == 400 and exc.error_type == "invalid_request_error"
    assert exc.message.startswith("prompt is too long: ") is overflow
    assert not exc.message.startswith("prompt is too long: prompt is too long")


# The numbers Claude Code reads (/prompt is too long[^0-9]*(\d+)\s*tokens?\s*>\s*(\d+)/, its
# strings) come first when the provider's words give them; its words follow.
NUMBERED = [
    ({"error": {"message": "This model's maximum context length is 128000 tokens. However, your messages resulted "
                           "in 130000 tokens.", "code": "context_length_exceeded"}},
     "prompt is too long: 130000 tokens > 128000 maximum (This model's maximum context length is 128000 tokens. "
     "However, your messages resulted in 130000 tokens. (provider 'prov', HTTP 400))"),
    ({"code": "Client specified an invalid argument", "error": "This model's maximum prompt length is 131072 but the "
                                                              "request contains 136973 tokens."},
     "prompt is too long: 136973 tokens > 131072 maximum (This model's maximum prompt length is 131072 but the "
     "request contains 136973 tokens. (provider 'prov', HTTP 400))"),
    ({"error": {"message": "Failed to start sampling: [input_too_large] Current message (1149677 tokens) exceeds "
                           "budget (975424 tokens)"}},
     "prompt is too long: 1149677 tokens > 975424 maximum (Failed to start sampling: [input_too_large] Current "
     "message (1149677 tokens) exceeds budget (975424 tokens) (provider 'prov', HTTP 400))"),
    ({"error": {"message": "prompt is too long: 210000 tokens > 200000 maximum"}},
     "prompt is too long: 210000 tokens > 200000 maximum (provider 'prov', HTTP 400)"),
]


@pytest.mark.parametrize("body, message", NUMBERED)
def test_a_providers_numbers_lead_the_answer(body, message):
    exc = upstream_errors.from_upstream(400, orjson.dumps(body), provider="prov")
    assert exc.message == message
    found = re.search(r"prompt is too long[^0-9]*(\d+)\s*tokens?\s*>\s*(\d+)", exc.message, re.I)
    assert (int(found.group(1)), int(found.group(2))) == (exc.tokens, exc.limit)


def test_an_in_stream_overflow_maps_to_prompt_is_too_long():
    exc = upstream_errors.from_stream_error({"type": "error", "error": {
        "type": "invalid_request_error", "code": "context_length_exceeded",
        "message": "Your input exceeds the context window of this model."}})
    assert isinstance(exc, errors.PromptTooLong)
    assert exc.message == "prompt is too long: Your input exceeds the context window of this model."


# /v1/models/ID of the daemon -> what `ccproxyd claude` sets, and the note it prints
WINDOW_ENV = [
    ({"id": "claude-opus-5-5", "max_input_tokens": 128000, "max_tokens": 16384}, {},
     {"CLAUDE_CODE_MAX_CONTEXT_TOKENS": "128000", "CLAUDE_CODE_AUTO_COMPACT_WINDOW": "111616"}, False),
    ({"id": "claude-opus-5-5", "max_input_tokens": 1000000, "max_tokens": 384000}, {},
     {"CLAUDE_CODE_MAX_CONTEXT_TOKENS": "1000000", "CLAUDE_CODE_AUTO_COMPACT_WINDOW": "616000"}, False),
    ({"id": "claude-small", "max_input_tokens": 32768, "max_tokens": 8192}, {},
     {"CLAUDE_CODE_MAX_CONTEXT_TOKENS": "32768", "CLAUDE_CODE_AUTO_COMPACT_WINDOW": "100000"},
     True),                                            # under Claude Code's floor: capped by the window above
    ({"id": "claude-opus-5-5", "max_input_tokens": 128000, "max_tokens": 16384},
     {"CLAUDE_CODE_AUTO_COMPACT_WINDOW": "90000", "CLAUDE_CODE_MAX_CONTEXT_TOKENS": "100000"}, {}, False),
    ({"id": "x"}, {}, {}, False),
]


@pytest.mark.parametrize("routed, env, expected, noted", WINDOW_ENV)
def test_ccproxyd_claude_tells_claude_code_the_routed_window(routed, env, expected, noted):
    learned, note = window_env(routed, env)
    assert learned == expected
    assert (note is not None) is noted


# ------------------------------------------------------------ through the daemon

ROUTES = """
providers:
  mock: {{base_url: "{url}", api_key_env: MOCK_KEY}}
models:
  tiny: {{provider: mock, upstream: tiny-up, context_window: 3000, max_output_tokens: 1000}}
  roomy: {{provider: mock, upstream: roomy-up, context_window: 100000, max_output_tokens: 8000}}
routes:
  - {{match: "claude-tiny*", model: tiny}}
  - {{match: "claude-spill*", model: tiny, fallbacks: [roomy]}}
  - {{match: "*", model: roomy}}
"""
# 4,000 words: at least 4,000 tokens however they split, so input + reserve > 3,000 for tiny
LONG = [{"role": "user", "content": "word " * 4000}]


@pytest.fixture(scope="module")
def windowed(upstream, tmp_path_factory):
    path = tmp_path_factory.mktemp("windows") / "routes.yaml"
    path.write_text(ROUTES.format(url=upstream.url))
    d = Daemon(path)
    yield d
    d.stop()


@pytest.mark.parametrize("stream", [True, False])
def test_an_over_window_request_gets_the_400_and_no_upstream_call(windowed, fake, stream):
    client = anthropic.Anthropic(base_url=windowed.url, api_key="k", max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as caught:
        if stream:
            with client.messages.stream(model="claude-tiny-1", max_tokens=500, messages=LONG) as s:
                s.get_final_message()
        else:
            client.messages.create(model="claude-tiny-1", max_tokens=500, messages=LONG)
    error = caught.value.body["error"]
    assert error["type"] == "invalid_request_error"
    found = re.fullmatch(r"prompt is too long: (\d+) tokens > 2500 maximum", error["message"])  # 3000 - 500
    assert found and int(found.group(1)) >= 4000
    assert fake.requests == []


def test_a_request_that_fits_still_goes_upstream(windowed, fake):
    fake.push(text_script("small enough"))
    client = anthropic.Anthropic(base_url=windowed.url, api_key="k", max_retries=0)
    message = client.messages.create(model="claude-tiny-1", max_tokens=500,
                                     messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text == "small enough"
    assert [r["body"]["model"] for r in fake.requests] == ["tiny-up"]


def test_an_over_window_request_goes_to_the_fallback_whose_window_fits(windowed, fake):
    fake.push(text_script("answered by the roomy one"))
    client = anthropic.Anthropic(base_url=windowed.url, api_key="k", max_retries=0)
    message = client.messages.create(model="claude-spill-1", max_tokens=500, messages=LONG)
    assert message.content[0].text == "answered by the roomy one"
    assert [r["body"]["model"] for r in fake.requests] == ["roomy-up"]


def test_a_providers_overflow_error_reaches_the_client_as_prompt_is_too_long(windowed, fake):
    from .fake_upstream import Script
    fake.push(Script(status=400, body={"error": {
        "message": "This model's maximum context length is 100000 tokens. However, your messages resulted in "
                   "100100 tokens.", "type": "invalid_request_error", "code": "context_length_exceeded"}}))
    client = anthropic.Anthropic(base_url=windowed.url, api_key="k", max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="claude-other", max_tokens=500, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["error"]["message"] == (
        "prompt is too long: 100100 tokens > 100000 maximum (This model's maximum context length is 100000 tokens. "
        "However, your messages resulted in 100100 tokens. (provider 'mock', HTTP 400))")
