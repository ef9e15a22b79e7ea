"""OpenAI's and xAI's own recorded Responses answers (tests/corpus/responses, PROVENANCE.md there),
replayed through the translator and through the daemon.  The expected values were read off the
recorded files by hand: the provider's error text, the cited URLs and the titles the citations
give them."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import anthropic
import pytest

from ccproxyd.translate.response import accumulate
from ccproxyd.translate.responses import ResponsesTranslator

from .conftest import sdk_message
from .fake_upstream import Script
from .grammar import check_stream

CORPUS = Path(__file__).parent / "corpus" / "responses"
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

QUOTA = ("You exceeded your current quota, please check your plan and billing details. For more information on "
         "this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.")

# openai-web-search-tool.1.chunks.txt: the 7 distinct URLs its message cites (each recorded with
# ?utm_source=openai) and the titles of their url_citation annotations.
STREAM_CITED = {
    "https://techcrunch.com/2025/12/05/petco-confirms-security-lapse-exposed-customers-personal-data/":
        "Petco confirms security lapse exposed customers’ personal data | TechCrunch",
    "https://techcrunch.com/2025/12/05/the-new-york-times-is-suing-perplexity-for-copyright-infringement/":
        "The New York Times is suing Perplexity for copyright infringement | TechCrunch",
    "https://techcrunch.com/2025/12/05/meta-signs-commercial-ai-data-agreements-with-publishers-to-offer-real-time-"
    "news-on-meta-ai/": "Meta signs commercial AI data agreements with publishers to offer real-time news on Meta AI"
                        " | TechCrunch",
    "https://techcrunch.com/2025/12/05/netflix-to-acquire-warner-bros-in-a-disruptive-deal-valued-at-82-7b/":
        "Netflix to acquire Warner Bros. in a disruptive deal valued at $82.7B | TechCrunch",
    "https://www.wired.com/story/the-big-interview-2025-recap": "Check Out Highlights From WIRED's Big Interview Event",
    "https://techstartups.com/2025/12/05/technology-news-today-the-latest-in-tech-ai-startup-news-december-5-2025/":
        "Technology News Today – The Latest in Tech, AI & Startup News, December 5, 2025 - Tech Startups",
    "https://finance.yahoo.com/news/ai-coding-startup-vercel-raises-163055044.html":
        "AI coding startup Vercel raises $300 million, valued at $9.3 billion",
}
STREAM_QUERIES = ["tech news today December 5 2025", 'site:theverge.com "December 5, 2025" "technology"']

# openai-web-search-tool.1.json: the 7 distinct URLs its 10 citations name (two recorded with
# ?utm_source=openai), all among its one search's sources, which come without titles.
WHOLE_CITED = {
    "https://www.theverge.com/podcast/838932/openai-chatgpt-code-red-vergecast":
        "Why OpenAI declared a code red for ChatGPT | The Verge",
    "https://techstartups.com/2025/12/05/technology-news-today-the-latest-in-tech-ai-startup-news-december-5-2025/":
        "Technology News Today – The Latest in Tech, AI & Startup News, December 5, 2025 - Tech Startups",
    "https://www.investopedia.com/5-things-to-know-before-the-stock-market-opens-december-5-2025-11862701":
        "5 Things to Know Before the Stock Market Opens",
    "https://vercel.com/blog/series-f": "Towards the AI Cloud: Our Series F - Vercel",
    "https://www.sentinelone.com/vulnerability-database/cve-2025-49826/":
        "CVE-2025-49826: Vercel Next.js Cache Poisoning DOS Flaw",
    "https://www.wired.com/story/the-big-interview-2025-recap":
        "Check Out Highlights From WIRED’s 2025 Big Interview Event | WIRED",
    "https://www.bloomberg.com/news/articles/2025-09-30/vercel-notches-9-3-billion-valuation-in-latest-ai-funding-round":
        "Vercel Notches $9.3 Billion Valuation in Latest AI Funding Round - Bloomberg",
}

# xai-web-search-tool.1.chunks.txt: xAI's citations carry a URL only, so the URL is its title.
XAI_CITED = ["https://en.wikipedia.org/wiki/XAI_%28company%29", "https://x.ai/company",
             "https://www.ibm.com/think/topics/explainable-ai", "https://www.owkin.com/a-z-of-ai-for-healthcare/xai",
             "https://x.ai/"]

SEARCH_REQUEST = dict(model="claude-responses-1", max_tokens=4000,
                      thinking={"type": "enabled", "budget_tokens": 2000},
                      tools=[{"type": "web_search_20250305", "name": "web_search"}],
                      messages=[{"role": "user", "content": "What is in the tech news today?"}])


def chunks(name: str) -> list[dict]:
    return [json.loads(line) for line in (CORPUS / name).read_text().splitlines() if line.strip()]


def translator(provider: str = "openai") -> ResponsesTranslator:
    return ResponsesTranslator("claude-x", provider=provider, upstream_model="recorded", thinking="summarized")


def replay(name: str, provider: str = "openai") -> list[tuple[str, dict]]:
    t = translator(provider)
    events = t.start()
    for event in chunks(name):
        events += t.feed(event)
    return events + t.finish(True)


def titles_found(content: list[dict]) -> dict[str, str]:
    """{url: title} over every web_search_tool_result of a message."""
    return {r["url"]: r["title"] for block in content if block["type"] == "web_search_tool_result"
            for r in block["content"]}


def cited_urls(content: list[dict]) -> set[str]:
    return {c["url"] for block in content if block["type"] == "text" for c in block.get("citations") or ()}


def test_openai_in_stream_error_passes_on_the_providers_message():
    t = translator()
    events = t.start()
    with pytest.raises(Exception) as caught:
        for event in chunks("openai-error.1.chunks.txt"):
            events += t.feed(event)
    assert t.fail(caught.value) == [("error", {"type": "error", "error": {"type": "billing_error", "message": QUOTA}})]


def test_openai_web_search_with_reasoning_streams_every_cited_url_as_a_result_with_its_title():
    events = replay("openai-web-search-tool.1.chunks.txt")
    assert check_stream(events) == "complete"
    content = accumulate(events)["content"]
    kinds = [b["type"] for b in content]
    # 7 reasoning items (one before each of the 6 calls and one before the message) go out as they
    # come; the 2 searches wait for the message (the 4 page actions belong to them)
    assert kinds[:11] == ["thinking"] * 7 + ["server_tool_use", "web_search_tool_result"] * 2
    assert set(kinds[11:]) == {"text"}
    assert [b["input"]["query"] for b in content if b["type"] == "server_tool_use"] == STREAM_QUERIES
    found = titles_found(content)
    assert {url: found.get(url) for url in STREAM_CITED} == STREAM_CITED
    assert cited_urls(content) == set(STREAM_CITED)
    assert not [url for url in found if "utm_source" in url]


def test_openai_web_search_as_a_whole_answer_lists_every_cited_url_with_its_title():
    t = translator()
    events = t.start() + t.whole(json.loads((CORPUS / "openai-web-search-tool.1.json").read_text()))
    events += t.finish(True)
    content = accumulate(events)["content"]
    assert [b["type"] for b in content][:6] == ["thinking"] * 4 + ["server_tool_use", "web_search_tool_result"]
    found = titles_found(content)
    assert {url: found.get(url) for url in WHOLE_CITED} == WHOLE_CITED
    assert cited_urls(content) == set(WHOLE_CITED)


def test_xai_web_search_lists_every_cited_url():
    events = replay("xai-web-search-tool.1.chunks.txt", provider="xai")
    assert check_stream(events) == "complete"
    content = accumulate(events)["content"]
    assert [b["type"] for b in content][:2] == ["server_tool_use", "web_search_tool_result"]
    assert content[0]["input"] == {"query": "what is xAI"}
    found = titles_found(content)
    assert {url: found.get(url) for url in XAI_CITED} == {url: url for url in XAI_CITED}


# ------------------------------------------------------------ through the daemon

def test_openai_in_stream_error_reaches_the_client_with_the_providers_message(daemon, fake):
    fake.push(Script(events=chunks("openai-error.1.chunks.txt"), done=False))
    client = anthropic.Anthropic(base_url=daemon.url, api_key="k", max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as caught:
        with client.messages.stream(model="claude-responses-1", max_tokens=100,
                                    messages=[{"role": "user", "content": "hi"}]) as stream:
            for _ in stream:
                pass
    assert caught.value.body["error"] == {"type": "billing_error", "message": QUOTA}


@pytest.mark.parametrize("stream", [True, False])
def test_openai_web_search_with_thinking_reaches_the_client_with_every_cited_source(daemon, fake, stream):
    fake.push(Script(events=chunks("openai-web-search-tool.1.chunks.txt"), done=False))
    client = anthropic.Anthropic(base_url=daemon.url, api_key="k", max_retries=0)
    message = sdk_message(client, stream, **SEARCH_REQUEST).model_dump()
    found = titles_found(message["content"])
    assert {url: found.get(url) for url in STREAM_CITED} == STREAM_CITED
    assert cited_urls(message["content"]) == set(STREAM_CITED)


def test_openai_web_search_whole_json_answer_reaches_the_client_with_every_cited_source(daemon, fake):
    fake.push(Script(body=json.loads((CORPUS / "openai-web-search-tool.1.json").read_text()),
                     headers={"content-type": "application/json"}))
    client = anthropic.Anthropic(base_url=daemon.url, api_key="k", max_retries=0)
    message = sdk_message(client, False, **SEARCH_REQUEST).model_dump()
    found = titles_found(message["content"])
    assert {url: found.get(url) for url in WHOLE_CITED} == WHOLE_CITED


# ------------------------------------------------------------ reasoning, replayed on the next turn

def first_response(name: str) -> list[dict]:
    """The events of the first Response in a file that holds several turns' streams."""
    events: list[dict] = []
    for event in chunks(name):
        if event["type"] == "response.created" and events:
            break
        events.append(event)
    return events


def test_openai_reasoning_and_tool_call_come_back_and_the_reasoning_goes_back_next_turn():
    """openai-reasoning-encrypted-content.1.chunks.txt, first turn (gpt-5.1-codex-max, store false):
    a reasoning item with a summary and encrypted content, then a calculator call."""
    from ccproxyd.translate.responses import to_responses
    from .support import GPT5
    recorded = first_response("openai-reasoning-encrypted-content.1.chunks.txt")
    reasoning = next(e["item"] for e in recorded if e["type"] == "response.output_item.done"
                     and e["item"]["type"] == "reasoning")
    t = translator()
    events = t.start()
    for event in recorded:
        events += t.feed(event)
    events += t.finish(True)
    assert check_stream(events) == "complete"
    message = accumulate(events)
    thinking, call = message["content"]
    assert thinking["thinking"] == ("**Calculating step-by-step using calculator**\n\nI'll compute 12 plus 7, then "
                                    "multiply the result by 3, and finally multiply that by 10, reporting the final "
                                    "product.")
    assert (call["type"], call["id"], call["name"], call["input"]) == (
        "tool_use", "call_AB6AaRZ1FYZB2RwS6A5vbdqn", "calculator", {"a": 12, "b": 7, "op": "add"})
    assert message["stop_reason"] == "tool_use"
    assert (message["usage"]["input_tokens"], message["usage"]["output_tokens"]) == (134, 28)
    body = {"model": "claude-x", "max_tokens": 1000, "thinking": {"type": "enabled", "budget_tokens": 500},
            "tools": [{"name": "calculator", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": "12 plus 7, times 3, times 10"},
                         {"role": "assistant", "content": message["content"]},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"],
                                                       "content": "19"}]}]}
    sent, _ = to_responses(body, replace(GPT5, upstream="recorded"))     # the model that reasoned
    replayed = [item for item in sent["input"] if item.get("type") == "reasoning"]
    assert [(r["id"], r["encrypted_content"]) for r in replayed] == [(reasoning["id"], reasoning["encrypted_content"])]


def test_xai_reasoning_text_and_cached_usage():
    """xai-text-with-reasoning-streaming-store-false.1.chunks.txt (grok-code-fast-1): a reasoning
    summary of 754 characters, an answer of 2,786, and usage 216 input tokens of which 192 cached,
    831 output."""
    events = replay("xai-text-with-reasoning-streaming-store-false.1.chunks.txt", provider="xai")
    assert check_stream(events) == "complete"
    message = accumulate(events)
    thinking, text = message["content"]
    assert len(thinking["thinking"]) == 754 and thinking["thinking"].startswith('First, the question is: "What')
    assert len(text["text"]) == 2786 and text["text"].startswith("### Overview of Sonoran Cuisine\n")
    usage = message["usage"]
    assert (usage["input_tokens"], usage["cache_read_input_tokens"], usage["output_tokens"]) == (216 - 192, 192, 831)
