"""Fake upstream answers in each provider's web search format, for the fake upstream to play.

OpenRouter (Chat Completions with the `openrouter:web_search` server tool): the text streams, then
the `url_citation` annotations arrive in a delta of their own (nested `url_citation` objects), and
usage may count the searches in `server_tool_use`.  xAI and OpenAI (Responses API): a
`web_search_call` item (its query and sources), then the message, whose citations come as
`response.output_text.annotation.added` events and again on the finished item (flat objects).
xAI's earlier form gave the query only as the call's JSON `arguments`, with no sources.
"""

from __future__ import annotations

import json

from .fake_upstream import Script, chunk, usage

TEXT = "ccproxyd 2.0 shipped in May. It adds web search."
FIRST, SECOND = "ccproxyd 2.0 shipped in May.", "It adds web search."
NOTES, CHANGES = "https://example.org/notes", "https://example.org/changelog"


def spans() -> list[dict]:
    """Citations of TEXT: the first sentence cites NOTES, the second cites CHANGES and NOTES."""
    first, second = TEXT.index(FIRST), TEXT.index(SECOND)
    return [{"url": NOTES, "title": "Release notes", "content": "ccproxyd 2.0 was released on 12 May.",
             "start_index": first, "end_index": first + len(FIRST)},
            {"url": CHANGES, "title": "Changelog", "start_index": second, "end_index": second + len(SECOND)},
            {"url": NOTES, "title": "Release notes", "start_index": second, "end_index": second + len(SECOND)}]


def openrouter_stream(text: str = TEXT, cited: list[dict] | None = None, searches: int | None = 1) -> Script:
    """An OpenRouter stream: text in pieces, then the annotations, the finish and the usage."""
    cited = spans() if cited is None else cited
    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": text[i:i + 12]}) for i in range(0, len(text), 12)]
    events.append(chunk({"content": "", "annotations": [{"type": "url_citation", "url_citation": c} for c in cited]}))
    events.append(chunk(finish="stop"))
    use = usage(10, 5)
    if searches is not None:
        use["server_tool_use"] = {"web_search_requests": searches}
    events.append(chunk(choices=False, usage=use))
    return Script(events=events)


def openrouter_whole(text: str = TEXT, cited: list[dict] | None = None) -> Script:
    """The same answer as one chat.completion (the upstream did not stream), no search count."""
    cited = spans() if cited is None else cited
    body = {"id": "gen-1", "object": "chat.completion", "model": "or-search-up", "choices": [{
        "index": 0, "finish_reason": "stop", "message": {
            "role": "assistant", "content": text,
            "annotations": [{"type": "url_citation", "url_citation": c} for c in cited]}}],
            "usage": usage(10, 5)}
    return Script(body=body)


def responses_search(query: str, sources: list[str], text: str = TEXT, cited: list[dict] | None = None,
                     xai_usage: bool = False) -> Script:
    """A Responses stream (OpenAI's or xAI's current form): the search, then the cited message."""
    cited = spans() if cited is None else cited
    flat = [{"type": "url_citation", **{k: v for k, v in c.items() if k != "content"}} for c in cited]
    call = {"type": "web_search_call", "id": "ws_1", "status": "completed",
            "action": {"type": "search", "query": query, "sources": [{"type": "url", "url": u} for u in sources]}}
    message = {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
               "content": [{"type": "output_text", "text": text, "annotations": flat}]}
    events = [{"type": "response.created", "response": {"id": "resp_s", "status": "in_progress"}},
              {"type": "response.output_item.added", "output_index": 0,
               "item": dict(call, status="in_progress", action={"type": "search", "query": "", "sources": []})},
              {"type": "response.web_search_call.searching", "output_index": 0, "item_id": "ws_1"},
              {"type": "response.output_item.done", "output_index": 0, "item": call},
              {"type": "response.output_item.added", "output_index": 1, "item": dict(message, content=[])}]
    events += [{"type": "response.output_text.delta", "output_index": 1, "delta": text[i:i + 10]}
               for i in range(0, len(text), 10)]
    events += [{"type": "response.output_text.annotation.added", "output_index": 1, "annotation_index": n,
                "annotation": a} for n, a in enumerate(flat)]
    events.append({"type": "response.output_item.done", "output_index": 1, "item": message})
    use = {"input_tokens": 40, "output_tokens": 20}
    if xai_usage:
        use.update(num_server_side_tools_used=1, server_side_tool_usage_details={"web_search_calls": 1})
    events.append({"type": "response.completed", "response": {"id": "resp_s", "object": "response",
                                                              "status": "completed", "usage": use}})
    return Script(events=events, done=False)


def xai_earlier_whole(query: str, urls: list[str], text: str = TEXT) -> Script:
    """xAI's earlier whole response: the query only in the call's `arguments`, no sources; the
    citations carry URLs and no spans."""
    body = {"id": "resp_x", "object": "response", "status": "completed", "model": "grok-search-up", "output": [
        {"type": "web_search_call", "id": "fc_x_0", "call_id": "", "name": "web_search", "status": "completed",
         "arguments": json.dumps({"query": query, "num_results": 5})},
        {"type": "message", "id": "msg_x", "role": "assistant", "status": "completed", "content": [
            {"type": "output_text", "text": text, "annotations": [{"type": "url_citation", "url": u} for u in urls]}]}],
        "usage": {"input_tokens": 40, "output_tokens": 20, "num_server_side_tools_used": 1}}
    return Script(body=body)
