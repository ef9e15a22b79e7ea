"""Web search and fetch on providers that run them: OpenRouter's server tools, xAI's and OpenAI's
Responses `web_search`, each answer as Anthropic sends it (server_tool_use, web_search_tool_result,
text with citations), streamed and not, parsed by the official SDK; the pure mappings as tables."""

from __future__ import annotations

import json
import time

import anthropic
import httpx2
import pytest

from ccproxyd.config import table as config
from ccproxyd.money import catalog
from ccproxyd.money.charge import charge
from ccproxyd.money.compare import CLAUDE_WEB_SEARCH_PER_1K
from ccproxyd.money.rates import parse_prices
from ccproxyd.config.table import Model
from ccproxyd.translate import citations, server_tools

from .conftest import sdk_message
from .fake_search import (CHANGES, FIRST, NOTES, SECOND, TEXT, openrouter_stream, openrouter_whole,
                          responses_search, spans, xai_earlier_whole)
from .grammar import check_stream, parse_sse

SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 8}
FETCH = {"type": "web_fetch_20250910", "name": "web_fetch", "max_uses": 3, "allowed_domains": ["example.org"]}
ASK = [{"role": "user", "content": "Perform a web search for the query: ccproxyd 2.0"}]
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def model(web_search: str, api: str = "chat_completions") -> Model:
    return Model(name="m", provider="p", upstream="m-up", context_window=1000, max_output_tokens=100,
                 api=api, web_search=web_search)


# ------------------------------------------------------------ pure mappings

@pytest.mark.parametrize("annotation,expected", [
    ({"type": "url_citation", "url_citation": {"url": "https://a", "title": "A", "content": "snip",
                                               "start_index": 1, "end_index": 4}},
     {"url": "https://a", "title": "A", "content": "snip", "start": 1, "end": 4}),
    ({"type": "url_citation", "url": "https://b", "start_index": 0, "end_index": 2},
     {"url": "https://b", "title": None, "content": None, "start": 0, "end": 2}),
    ({"type": "url_citation", "url": "https://c"}, {"url": "https://c", "title": None, "content": None,
                                                    "start": None, "end": None}),
    ({"type": "file_citation", "file_id": "f"}, None),
    ({"type": "url_citation", "url_citation": {"title": "no url"}}, None),
    ("not an object", None),
])
def test_annotations_in_both_shapes(annotation, expected):
    assert citations.normalize(annotation) == expected


def _cite(url, start, end, content=None):
    return {"url": url, "title": None, "content": content, "start": start, "end": end}


@pytest.mark.parametrize("text,cited,pieces", [
    ("abcdef", [], [("abcdef", [])]),
    ("abcdef", [_cite("u", 0, 3)], [("abc", ["u"]), ("def", [])]),
    ("abcdef", [_cite("u", 2, 4)], [("ab", []), ("cd", ["u"]), ("ef", [])]),
    ("abcdef", [_cite("u", 2, 4), _cite("v", 2, 4)], [("ab", []), ("cd", ["u", "v"]), ("ef", [])]),
    ("abcdef", [_cite("u", 1, 4), _cite("v", 3, 6)], [("a", []), ("bcd", ["u"]), ("ef", [])]),   # overlap
    ("abcdef", [_cite("u", 0, 0), _cite("v", 4, 99), _cite("w", None, None)], [("abcdef", [])]),
    ("", [_cite("u", 0, 1)], [("", [])]),
])
def test_text_is_cut_at_the_cited_spans(text, cited, pieces):
    got = citations.segments(text, cited)
    assert [(piece, [c["url"] for c in group]) for piece, group in got] == pieces
    assert "".join(piece for piece, _ in got) == text


def test_a_citation_quotes_the_source_or_else_the_span():
    with_content = citations.citation(_cite("u", 0, 3, content="x" * 400), "abc", 0)
    assert with_content["cited_text"] == "x" * 150 and with_content["type"] == "web_search_result_location"
    assert citations.citation(_cite("u", 0, 3), "abc", 0)["cited_text"] == "abc"
    assert isinstance(with_content["encrypted_index"], str) and with_content["encrypted_index"]


def test_results_one_per_url_with_the_best_title():
    found = citations.results([{"url": "https://a"}, {"url": "https://b", "title": "B"}],
                              [_cite("https://a", 0, 1) | {"title": "A"}, _cite("https://c", 0, 1)])
    assert [(r["url"], r["title"]) for r in found] == [("https://a", "A"), ("https://b", "B"),
                                                       ("https://c", "https://c")]
    assert all(r["type"] == "web_search_result" and isinstance(r["encrypted_content"], str) for r in found)


@pytest.mark.parametrize("block,expected", [
    ({"type": "server_tool_use", "id": "s", "name": "web_search", "input": {"query": "q"}}, "\n[web search: q]\n"),
    ({"type": "web_search_tool_result", "tool_use_id": "s", "content": [
        {"type": "web_search_result", "url": "https://a", "title": "A", "encrypted_content": ""},
        {"type": "web_search_result", "url": "https://b", "title": "", "encrypted_content": ""}]},
     "[web search results:\n- A <https://a>\n- https://b <https://b>]\n"),
    ({"type": "web_search_tool_result", "tool_use_id": "s",
      "content": {"type": "web_search_tool_result_error", "error_code": "unavailable"}}, "[web search failed: unavailable]\n"),
    ({"type": "web_fetch_tool_result", "tool_use_id": "s", "content": {"type": "web_fetch_result", "url": "https://a",
      "content": {"type": "document", "title": "A", "source": {"type": "text", "media_type": "text/plain", "data": "page"}}}},
     "[fetched https://a: A]\npage\n"),
    ({"type": "tool_use", "id": "t", "name": "Read", "input": {}}, ""),
])
def test_search_blocks_in_history_become_text(block, expected):
    assert citations.history_text(block) == expected


def test_a_searched_turn_in_history_keeps_its_sources_for_the_model():
    """An SDK client sends the searched answer back as history: the model upstream sees what was
    searched and found, and the cited text whole (the space between two cited spans included)."""
    from ccproxyd.translate.request import to_openai
    turn = [{"type": "server_tool_use", "id": "s", "name": "web_search", "input": {"query": "q"}},
            {"type": "web_search_tool_result", "tool_use_id": "s", "content": [
                {"type": "web_search_result", "url": NOTES, "title": "Notes", "encrypted_content": ""}]},
            {"type": "text", "text": FIRST, "citations": [{"type": "web_search_result_location", "url": NOTES,
                                                           "title": "Notes", "cited_text": "x", "encrypted_index": "e"}]},
            {"type": "text", "text": " "}, {"type": "text", "text": SECOND}]
    body = {"model": "m", "max_tokens": 10, "messages": [*ASK, {"role": "assistant", "content": turn},
                                                         {"role": "user", "content": "Which sources?"}]}
    sent, _ = to_openai(body, model("none"))
    assert sent["messages"][1] == {"role": "assistant", "content":
                                   f"\n[web search: q]\n[web search results:\n- Notes <{NOTES}>]\n{TEXT}"}


@pytest.mark.parametrize("tools,expected", [
    ([SEARCH], [{"type": "openrouter:web_search", "parameters": {"max_total_results": 40}}]),
    ([{"type": "web_search_20250305", "name": "web_search"}], [{"type": "openrouter:web_search"}]),
    ([dict(SEARCH, allowed_domains=["a.org"], user_location={"type": "approximate", "city": "Oslo"})],
     [{"type": "openrouter:web_search", "parameters": {"max_total_results": 40, "allowed_domains": ["a.org"],
                                                       "user_location": {"type": "approximate", "city": "Oslo"}}}]),
    ([dict(SEARCH, max_uses=None, blocked_domains=["spam.example"])],
     [{"type": "openrouter:web_search", "parameters": {"excluded_domains": ["spam.example"]}}]),
    ([FETCH], [{"type": "openrouter:web_fetch", "parameters": {"max_uses": 3, "allowed_domains": ["example.org"]}}]),
    ([{"name": "Read", "input_schema": {}}], []),
])
def test_openrouter_tools_for_anthropic_server_tools(tools, expected):
    assert server_tools.openrouter_tools({"tools": tools}, model("openrouter")) == expected
    assert server_tools.openrouter_tools({"tools": tools}, model("none")) == []


@pytest.mark.parametrize("provider,tool,expected", [
    ("openai", SEARCH, ({"type": "web_search"}, 8)),
    ("openai", dict(SEARCH, allowed_domains=["a.org"], blocked_domains=None, max_uses=None,
                    user_location={"type": "approximate", "country": "NO"}),
     ({"type": "web_search", "filters": {"allowed_domains": ["a.org"]},
       "user_location": {"type": "approximate", "country": "NO"}}, None)),
    ("openai", dict(SEARCH, blocked_domains=["b.org"]), ({"type": "web_search"}, 8)),    # no block-list
    ("xai", dict(SEARCH, blocked_domains=["b.org"]), ({"type": "web_search", "excluded_domains": ["b.org"]}, 8)),
    ("xai", dict(SEARCH, allowed_domains=[f"{n}.org" for n in "abcdefg"]),
     ({"type": "web_search", "allowed_domains": [f"{n}.org" for n in "abcde"]}, 8)),
    ("none", SEARCH, (None, None)),
    ("openai", FETCH, (None, None)),
])
def test_responses_search_tool(provider, tool, expected):
    assert server_tools.responses_search({"tools": [tool]}, model(provider, "responses")) == expected


@pytest.mark.parametrize("text,problem", [
    ("models: {m: {provider: p, context_window: 1, max_output_tokens: 1, web_search: xai}}",
     "web_search: xai searches through the Responses API"),
    ("models: {m: {provider: p, context_window: 1, max_output_tokens: 1, api: responses, web_search: openrouter}}",
     "web_search: openrouter searches through Chat Completions"),
])
def test_web_search_settings_need_the_right_api(text, problem):
    with pytest.raises(config.ConfigError, match=problem):
        config.load(f'providers: {{p: {{base_url: "http://127.0.0.1:1/v1"}}}}\n{text}\nroutes: [{{match: "*", model: m}}]\n')


def test_searches_are_priced_and_claude_charges_ten_dollars_per_thousand():
    def priced(**rates):
        return parse_prices(rates, model="m", origin="t", source="t")[0]
    usage = {"input_tokens": 1000, "output_tokens": 500, "server_tool_use": {"web_search_requests": 3}}
    when = 1_796_000_000.0                               # 2026-11-30 (UTC)
    assert charge(priced(input=1.0, output=2.0, web_search_per_1k=4.0), usage, when).usd == \
        pytest.approx((1000 * 1.0 + 500 * 2.0) / 1e6 + 3 * 4.0 / 1000)
    assert charge(priced(input=1.0, output=2.0), usage, when).usd == pytest.approx((1000 * 1.0 + 500 * 2.0) / 1e6)
    opus = catalog.packaged().claude("claude-opus-5-5")   # $4 in / $20 out per Mtok
    reference = charge(opus, usage, when, search_default=CLAUDE_WEB_SEARCH_PER_1K).usd
    assert reference == pytest.approx((1000 * 4 + 500 * 20) / 1e6 + 3 * 10 / 1000)


# ------------------------------------------------------------ through the daemon

@pytest.fixture
def client(daemon):
    return anthropic.Anthropic(base_url=daemon.url, api_key="k", max_retries=0)


def raw_sse(daemon, **body) -> list:
    r = httpx2.post(daemon.url + "/v1/messages", json={"max_tokens": 4000, "stream": True, **body}, timeout=30)
    assert r.status_code == 200, r.text
    events = parse_sse(r.content)
    assert check_stream(events) == "complete"
    return events


def assert_cited_answer(message, query: str, urls: list[tuple[str, str]], snippets: bool = True):
    """The searched answer as Anthropic sends it: the call, one result per distinct URL, then
    the text cut at the cited spans, each span citing its sources (quoting the source's snippet
    where the provider gives one, as OpenRouter does; else the cited span)."""
    kinds = [b.type for b in message.content]
    assert kinds == ["server_tool_use", "web_search_tool_result", "text", "text", "text"], kinds
    call, result, first, space, second = message.content
    assert call.name == "web_search" and call.input == {"query": query} and call.id.startswith("srvtoolu_")
    assert result.tool_use_id == call.id
    assert [(r.url, r.title) for r in result.content] == urls
    assert all(isinstance(r.encrypted_content, str) for r in result.content)
    assert (first.text, space.text, second.text) == (FIRST, " ", SECOND)
    assert [(c.url, c.title, c.cited_text) for c in first.citations] == [
        (NOTES, "Release notes", "ccproxyd 2.0 was released on 12 May." if snippets else FIRST)]
    assert not space.citations
    assert [(c.url, c.title, c.cited_text) for c in second.citations] == [
        (CHANGES, "Changelog", SECOND), (NOTES, "Release notes", SECOND)]
    assert all(c.type == "web_search_result_location" and c.encrypted_index for c in first.citations + second.citations)
    assert message.usage.server_tool_use.web_search_requests == 1


def access_lines(daemon, count: int) -> list[dict]:
    deadline = time.monotonic() + 10
    while True:
        lines = [json.loads(line.split("ccproxyd.access: ", 1)[1]) for line in daemon.log_path.read_text().splitlines()
                 if "ccproxyd.access: " in line]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


@pytest.mark.parametrize("stream", [True, False])
def test_openrouter_search_comes_back_as_anthropic_sends_it(daemon, client, fake, stream):
    fake.push(openrouter_stream())
    before = len(access_lines(daemon, 0))
    message = sdk_message(client, stream, model="claude-or-search-1", max_tokens=4000, messages=ASK,
                          tools=[dict(SEARCH, allowed_domains=["example.org"])])
    assert_cited_answer(message, "ccproxyd 2.0", [(NOTES, "Release notes"), (CHANGES, "Changelog")])
    sent = fake.requests[-1]["body"]
    assert sent["tools"] == [{"type": "openrouter:web_search",
                              "parameters": {"max_total_results": 40, "allowed_domains": ["example.org"]}}]
    assert "tool_choice" not in sent
    line = access_lines(daemon, before + 1)[-1]               # 10 in at $1/M, 5 out at $2/M, 1 search at $4/1k
    assert line["cost_usd"] == pytest.approx((10 * 1.0 + 5 * 2.0) / 1e6 + 4.0 / 1000)
    assert line["web_searches"] == 1


def test_openrouter_search_from_a_whole_completion_counts_the_cited_search(client, fake):
    fake.push(openrouter_whole())
    message = client.messages.create(model="claude-or-search-1", max_tokens=4000, messages=ASK, tools=[SEARCH])
    assert_cited_answer(message, "ccproxyd 2.0", [(NOTES, "Release notes"), (CHANGES, "Changelog")])


def test_openrouter_search_streams_with_valid_grammar_and_citation_deltas(daemon, fake):
    fake.push(openrouter_stream())
    events = raw_sse(daemon, model="claude-or-search-1", messages=ASK, tools=[SEARCH])
    deltas = [d["delta"]["type"] for n, d in events if n == "content_block_delta"]
    assert deltas.count("citations_delta") == 3
    first = next(i for i, (n, d) in enumerate(events) if n == "content_block_delta" and d["delta"]["type"] == "citations_delta")
    assert events[first + 1][1]["delta"] == {"type": "text_delta", "text": FIRST}      # citation, then its text


def test_openrouter_answer_without_citations_is_plain_text(client, fake):
    """The model chose not to search (no annotations, no searches counted): no search blocks."""
    fake.push(openrouter_stream(text="I know this one.", cited=[], searches=0))
    message = client.messages.create(model="claude-or-search-1", max_tokens=4000, messages=ASK, tools=[SEARCH])
    assert [b.type for b in message.content] == ["text"] and message.content[0].text == "I know this one."
    assert message.usage.server_tool_use is None


@pytest.mark.parametrize("stream", [True, False])
def test_xai_search_comes_back_as_anthropic_sends_it(daemon, client, fake, stream):
    fake.push(responses_search("ccproxyd 2.0", [NOTES, CHANGES], xai_usage=True))
    message = sdk_message(client, stream, model="claude-grok-search-1", max_tokens=4000, messages=ASK,
                          tools=[dict(SEARCH, blocked_domains=["spam.example"])])
    assert_cited_answer(message, "ccproxyd 2.0", [(NOTES, "Release notes"), (CHANGES, "Changelog")], snippets=False)
    sent = fake.requests[-1]
    assert sent["path"].endswith("/responses")
    assert {"type": "web_search", "excluded_domains": ["spam.example"]} in sent["body"]["tools"]
    assert sent["body"]["max_tool_calls"] == 8 and "web_search_call.action.sources" not in sent["body"].get("include", [])


def test_xai_earlier_form_query_from_arguments(client, fake):
    fake.push(xai_earlier_whole("ccproxyd news", [NOTES, CHANGES]))
    message = client.messages.create(model="claude-grok-search-1", max_tokens=4000, messages=ASK, tools=[SEARCH])
    assert [b.type for b in message.content] == ["server_tool_use", "web_search_tool_result", "text"]
    assert message.content[0].input == {"query": "ccproxyd news"}
    assert [r.url for r in message.content[1].content] == [NOTES, CHANGES]
    assert message.content[2].text == TEXT and not message.content[2].citations


def test_openai_search_answer_carries_citations(daemon, fake):
    fake.push(responses_search("ccproxyd 2.0", [NOTES]))
    events = raw_sse(daemon, model="claude-responses-1", messages=ASK, tools=[SEARCH])
    from ccproxyd.translate.response import accumulate
    message = anthropic.types.Message.model_validate(accumulate(events))
    assert_cited_answer(message, "ccproxyd 2.0", [(NOTES, "Release notes"), (CHANGES, "Changelog")], snippets=False)


@pytest.mark.parametrize("stream", [True, False])
def test_openrouter_fetch_comes_back_as_web_fetch_blocks(client, fake, stream):
    page = {"url": NOTES, "title": "Release notes", "content": "ccproxyd 2.0 was released on 12 May."}
    fake.push(openrouter_stream(text="It was released in May.", cited=[page], searches=None))
    message = sdk_message(client, stream, model="claude-or-search-1", max_tokens=4000, tools=[FETCH],
                          messages=[{"role": "user", "content": f"Fetch {NOTES} and summarise it"}])
    assert [b.type for b in message.content] == ["server_tool_use", "web_fetch_tool_result", "text"]
    call, result, text = message.content
    assert call.name == "web_fetch" and call.input == {"url": NOTES} and result.tool_use_id == call.id
    assert result.content.type == "web_fetch_result" and result.content.url == NOTES
    assert result.content.content.source.data == page["content"] and result.content.content.title == "Release notes"
    assert text.text == "It was released in May."
    assert message.usage.server_tool_use.web_fetch_requests == 1
    assert fake.requests[-1]["body"]["tools"] == [
        {"type": "openrouter:web_fetch", "parameters": {"max_uses": 3, "allowed_domains": ["example.org"]}}]


@pytest.mark.parametrize("stream", [True, False])
def test_fetch_on_a_model_that_cannot_fetch_says_so(client, fake, stream):
    message = sdk_message(client, stream, model="claude-responses-1", max_tokens=4000, tools=[FETCH],
                          messages=[{"role": "user", "content": f"Fetch {NOTES}"}])
    assert [b.type for b in message.content] == ["server_tool_use", "web_fetch_tool_result", "text"]
    assert message.content[1].content.error_code == "unavailable"
    assert "No web fetch took place" in message.content[2].text
    assert fake.requests == []


def test_a_stored_cited_answer_replays_its_citations():
    from ccproxyd.flow.cache import message_events
    from ccproxyd.translate.response import accumulate
    cite = {"type": "web_search_result_location", "url": NOTES, "title": "n", "cited_text": "c", "encrypted_index": "e"}
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "stop_reason": "end_turn",
               "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 2},
               "content": [{"type": "text", "text": "cited", "citations": [cite]}, {"type": "text", "text": " plain"}]}
    events = message_events(message)
    assert check_stream(events) == "complete"
    assert accumulate(events)["content"] == message["content"]


def test_spans_of_the_fixture_text():
    """The fixture's spans name the sentences they cite (guards the expectations above)."""
    assert [TEXT[c["start_index"]:c["end_index"]] for c in spans()] == [FIRST, SECOND, SECOND]


def test_a_search_never_falls_back_to_a_model_that_cannot_search(daemon, fake):
    """The searching primary is down and its fallback's model cannot search: the client gets the
    primary's error, not the fallback's guess dressed as search results.  Without the search the
    same route falls back as usual."""
    body = {"model": "claude-dead-search-1", "max_tokens": 100, "messages": ASK}
    searched = httpx2.post(daemon.url + "/v1/messages", json=dict(body, tools=[SEARCH]), timeout=30)
    assert searched.status_code >= 500 and searched.json()["type"] == "error", searched.text
    assert fake.requests == []                           # the fallback (gpt-mock) was never asked
    plain = httpx2.post(daemon.url + "/v1/messages", json=body, timeout=30)
    assert plain.status_code == 200 and [r["body"]["model"] for r in fake.requests] == ["gpt-mock"]
