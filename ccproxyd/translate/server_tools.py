"""Anthropic server tools (web search, web fetch) on routes whose model cannot run them.

Pure.  Claude Code's WebSearch is a request of its own whose only tool is the `web_search` server
tool, with a system prompt asking the model to search and summarise; whatever text comes back is
handed to the main conversation as the search results.  Sent upstream without the tool, the model
would answer from memory and Claude Code would present that as search results.  So a request
whose tools are all server tools, on a model whose `web_search` is `none`, is answered here: the
`server_tool_use` block Anthropic would send, its result as the `unavailable` error, and a line
of text saying why, so that the model waiting on it knows no search took place.
"""

from __future__ import annotations

import re
import secrets

import orjson

from ..config import Model
from .stream import StreamTranslator

SEARCH_PREFIXES = {"web_search_": "web_search", "web_fetch_": "web_fetch"}
_QUERY = re.compile(r"query:\s*(.+)", re.S)


def server_tool(tool: dict) -> str | None:
    """'web_search' or 'web_fetch' for such a server tool definition, else None."""
    kind = tool.get("type") if isinstance(tool, dict) else None
    if isinstance(kind, str):
        for prefix, name in SEARCH_PREFIXES.items():
            if kind.startswith(prefix):
                return name
    return None


def unanswerable(body: dict, model: Model) -> str | None:
    """The server tool a request needs and the model cannot run, when the request offers no
    other tool (so the answer could only be a guess): 'web_search' or 'web_fetch'."""
    tools = body.get("tools") or []
    kinds = [server_tool(t) for t in tools]
    if not tools or None in kinds:
        return None
    if "web_search" in kinds and model.web_search == "none":
        return "web_search"                     # `openai`: the Responses API searches (translate.responses)
    if "web_fetch" in kinds and "web_search" not in kinds:
        return "web_fetch"                      # no provider mapping for fetch yet
    return None


def _last_user_text(body: dict) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        return " ".join(b.get("text", "") for b in content or [] if isinstance(b, dict) and b.get("type") == "text")
    return ""


def unavailable_events(translator: StreamTranslator, body: dict, tool: str, model: Model,
                       provider: str) -> list[tuple[str, dict]]:
    """A whole answer: the tool call, its `unavailable` result, and a sentence for the model."""
    text = _last_user_text(body).strip()
    match = _QUERY.search(text)
    query = (match.group(1) if match else text).strip()[:500]
    tool_id = "srvtoolu_" + secrets.token_hex(12)
    argument = {"query": query} if tool == "web_search" else {"url": query}
    result_type = f"{tool}_tool_result"
    note = (f"No {tool.replace('_', ' ')} took place: ccproxyd sends this request to {model.upstream} at "
            f"{provider}, which has no {tool.replace('_', ' ')} tool. Nothing was fetched from the web; "
            "answer without web results or tell the user.")
    events = translator.start()
    events += [
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
            "type": "server_tool_use", "id": tool_id, "name": tool, "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
            "type": "input_json_delta", "partial_json": orjson.dumps(argument).decode()}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
            "type": result_type, "tool_use_id": tool_id,
            "content": {"type": f"{result_type}_error", "error_code": "unavailable"}}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        ("content_block_start", {"type": "content_block_start", "index": 2, "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 2, "delta": {"type": "text_delta", "text": note}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 2}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"input_tokens": translator.input_estimate, "output_tokens": 0,
                                     "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                                     "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0}}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return events

