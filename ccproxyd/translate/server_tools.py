"""Anthropic server tools (web search, web fetch): the provider's own tools for them, and the
answer on routes whose model cannot run them.

Pure.  A model's `web_search` setting names its provider's search: `openai` and `xai` (the
Responses API `web_search` tool, `responses_search`; answers read in translate.responses),
`openrouter` (its `openrouter:web_search` / `openrouter:web_fetch` server tools,
`openrouter_tools`; answers read in translate.openrouter), or `none`.  Claude Code's WebSearch is a request of its own whose only tool is the `web_search` server
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

from ..config.table import Model
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
    if not tools or server_tool(tools[0]) is None:      # the usual case, a function tool first: no scan
        return None
    kinds = [server_tool(t) for t in tools]
    if None in kinds:
        return None
    if "web_search" in kinds and model.web_search == "none":
        return "web_search"                     # openai, xai: translate.responses; openrouter: below
    if "web_fetch" in kinds and "web_search" not in kinds and model.web_search not in FETCHES:
        return "web_fetch"                      # only OpenRouter has a fetch tool
    return None


# ------------------------------------------------------------ the provider's own tools

FETCHES = ("openrouter",)                       # `web_search` settings whose provider can fetch too
SEARCH_KEY, FETCH_KEY = "\x00web_search", "\x00web_fetch"   # in the tool-name map: never a tool name
RESULTS_PER_SEARCH = 5                          # OpenRouter's default max_results per search


def _definitions(body: dict) -> dict[str, dict]:
    """{'web_search': its definition, 'web_fetch': …} for the server tools the request offers."""
    found: dict[str, dict] = {}
    for tool in body.get("tools") or ():
        kind = server_tool(tool)
        if kind is not None:
            found.setdefault(kind, tool)
    return found


def _domains(tool: dict, key: str) -> list[str] | None:
    value = tool.get(key)
    return [d for d in value if isinstance(d, str)] if isinstance(value, list) and value else None


def _location(tool: dict) -> dict | None:
    location = tool.get("user_location")
    if not isinstance(location, dict):
        return None
    return {k: v for k, v in location.items() if k in ("type", "city", "region", "country", "timezone") and v}


def openrouter_tools(body: dict, model: Model) -> list[dict]:
    """OpenRouter's `openrouter:web_search` / `openrouter:web_fetch` server tools for the
    Anthropic ones the request offers (model `web_search: openrouter`).  `max_uses` of a search
    bounds the results instead (OpenRouter counts results, not searches): max_uses x 5."""
    if model.web_search != "openrouter":
        return []
    found = _definitions(body)
    out = []
    search = found.get("web_search")
    if search is not None:
        parameters: dict = {}
        if isinstance(search.get("max_uses"), int):
            parameters["max_total_results"] = search["max_uses"] * RESULTS_PER_SEARCH
        for ours, theirs in (("allowed_domains", "allowed_domains"), ("blocked_domains", "excluded_domains")):
            if _domains(search, ours):
                parameters[theirs] = _domains(search, ours)
        if _location(search):
            parameters["user_location"] = _location(search)
        out.append({"type": "openrouter:web_search", **({"parameters": parameters} if parameters else {})})
    fetch = found.get("web_fetch")
    if fetch is not None:
        parameters = {k: fetch[k] for k in ("max_uses", "max_content_tokens") if isinstance(fetch.get(k), int)}
        for key in ("allowed_domains", "blocked_domains"):
            if _domains(fetch, key):
                parameters[key] = _domains(fetch, key)
        out.append({"type": "openrouter:web_fetch", **({"parameters": parameters} if parameters else {})})
    return out


def responses_search(body: dict, model: Model) -> tuple[dict | None, int | None]:
    """The Responses API `web_search` tool (model `web_search: openai` or `xai`) for the request's
    Anthropic one, and its `max_uses` (the answer's `max_tool_calls`); (None, None) without one."""
    if model.web_search not in ("openai", "xai"):
        return None, None
    search = _definitions(body).get("web_search")
    if search is None:
        return None, None
    tool: dict = {"type": "web_search"}
    allowed, blocked = _domains(search, "allowed_domains"), _domains(search, "blocked_domains")
    if model.web_search == "openai":            # OpenAI: an allow-list and a location; no block-list
        if allowed:
            tool["filters"] = {"allowed_domains": allowed}
        if _location(search):
            tool["user_location"] = _location(search)
    else:                                       # xAI: allowed or excluded domains (up to 5)
        if allowed:
            tool["allowed_domains"] = allowed[:5]
        elif blocked:
            tool["excluded_domains"] = blocked[:5]
    limit = search.get("max_uses")
    return tool, limit if isinstance(limit, int) and limit > 0 else None


def with_openrouter(chat: dict, names: dict[str, str], body: dict, model: Model) -> tuple[dict, dict[str, str]]:
    """A Chat Completions request with OpenRouter's server tools added, and the tool-name map
    carrying what the answer's translator needs (translate.openrouter): the query or URL the
    request is about, under keys no tool name can take."""
    tools = openrouter_tools(body, model)
    if not tools:
        return chat, names
    chat = dict(chat, tools=[*chat.get("tools", ()), *tools])
    names = dict(names)
    kinds = [t["type"] for t in tools]
    if "openrouter:web_search" in kinds:
        names[SEARCH_KEY] = query_of(body)
    elif "openrouter:web_fetch" in kinds:
        names[FETCH_KEY] = query_of(body)
    return chat, names


def query_of(body: dict) -> str:
    """What the request asks to search for: Claude Code's WebSearch says "…query: X"; otherwise
    the user's last text."""
    text = _last_user_text(body).strip()
    match = _QUERY.search(text)
    return (match.group(1) if match else text).strip()[:500]


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
    query = query_of(body)
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

