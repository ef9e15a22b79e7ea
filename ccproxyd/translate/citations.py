"""Pure: a provider's web sources and `url_citation` annotations -> Anthropic's search blocks.

Every provider that searches reports what it found as `url_citation` annotations on the answer's
text: flat in the Responses API (OpenAI, xAI: `{type, url, title, start_index, end_index}`),
nested in OpenRouter's Chat Completions (`{type, url_citation: {url, title, content,
start_index, end_index}}`).  Anthropic sends the same answer as a `server_tool_use` block, a
`web_search_tool_result` with one `web_search_result` per distinct source, then text blocks whose
cited spans carry `web_search_result_location` citations.  This module builds those blocks as
stream events; the translators decide when.

`encrypted_content` and `encrypted_index` are opaque strings Anthropic requires (the SDK types
mark them required): here the base64 of the source's snippet and of the source's URL and its
index among the results, so that nothing is invented and nothing secret is carried.
"""

from __future__ import annotations

import base64
import secrets
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

CITED_TEXT_LIMIT = 150              # Anthropic's cited_text is at most 150 characters of the source


# Query parameters a provider adds to the URLs its answer cites, which are no part of the source's
# address: OpenAI's web search tags each cited URL `utm_source=openai` (`chatgpt.com` in 2025's
# answers; vercel/ai packages/openai/src/responses/__fixtures__/openai-web-search-tool.1.json and
# issue-22343-live-web-search-store-false.json).  Its search sources mostly come untagged, so a
# citation matches its source only without them.
TRACKING = {("utm_source", "openai"), ("utm_source", "chatgpt.com")}


def canonical(url: str) -> str:
    """`url` without the providers' tracking parameters (TRACKING); any other URL as it is."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    kept = [pair for pair in pairs if pair not in TRACKING]
    if len(kept) == len(pairs):
        return url
    return urlunsplit(parts._replace(query=urlencode(kept)))


def normalize(annotation) -> dict | None:
    """One annotation in either shape -> {url, title, content, start, end}; None if it is not a
    URL citation with a URL."""
    if not isinstance(annotation, dict) or annotation.get("type") != "url_citation":
        return None
    inner = annotation.get("url_citation") if isinstance(annotation.get("url_citation"), dict) else annotation
    url = inner.get("url")
    if not isinstance(url, str) or not url:
        return None
    start, end = inner.get("start_index"), inner.get("end_index")
    return {"url": canonical(url), "title": inner.get("title") if isinstance(inner.get("title"), str) else None,
            "content": inner.get("content") if isinstance(inner.get("content"), str) else None,
            "start": start if isinstance(start, int) else None, "end": end if isinstance(end, int) else None}


def _b64(data: str) -> str:
    return base64.b64encode(data.encode()).decode()


def results(sources: list[dict], cited: list[dict]) -> list[dict]:
    """`web_search_result` blocks: the searches' own sources first (in order), then each cited URL
    they did not list; one per distinct URL, with the best title and snippet any of them gave."""
    merged: dict[str, dict] = {}
    for source in [*sources, *cited]:
        url = canonical(source["url"])
        entry = merged.setdefault(url, {"title": None, "content": None, "page_age": None})
        for key in ("title", "content", "page_age"):
            if not entry[key] and source.get(key):
                entry[key] = source[key]
    return [{"type": "web_search_result", "url": url, "title": entry["title"] or url,
             "encrypted_content": _b64(entry["content"] or ""), "page_age": entry["page_age"]}
            for url, entry in merged.items()]


def segments(text: str, cited: list[dict]) -> list[tuple[str, list[dict]]]:
    """The text cut at the cited spans: [(piece, citations)], in order, pieces joining to `text`.
    A span outside the text, empty, or overlapping an earlier one cites nothing (its URL is still
    among the results)."""
    spans: dict[tuple[int, int], list[dict]] = {}
    for c in cited:
        start, end = c["start"], c["end"]
        if start is None or end is None or not 0 <= start < end <= len(text):
            continue
        spans.setdefault((start, end), []).append(c)
    out: list[tuple[str, list[dict]]] = []
    at = 0
    for (start, end), group in sorted(spans.items()):
        if start < at:
            continue                            # overlaps the previous span
        if start > at:
            out.append((text[at:start], []))
        out.append((text[start:end], [citation(c, text[start:end], i) for i, c in enumerate(group)]))
        at = end
    if at < len(text) or not out:
        out.append((text[at:], []))
    return out


def citation(c: dict, span: str, index: int) -> dict:
    return {"type": "web_search_result_location", "url": c["url"], "title": c["title"] or c["url"],
            "cited_text": (c["content"] or span)[:CITED_TEXT_LIMIT],
            "encrypted_index": _b64(orjson.dumps([c["url"], index]).decode())}


def tool_id(upstream_id=None) -> str:
    """A server tool call id (`srvtoolu_…`), from the provider's call id when it has one."""
    clean = "".join(ch for ch in str(upstream_id or "") if ch.isalnum() or ch in "_-")
    return "srvtoolu_" + (clean or secrets.token_hex(12))


def search_events(index: int, call_id: str, query: str, found: list[dict]) -> list[tuple[str, dict]]:
    """A search as Anthropic streams it: the call (its input in one delta) and its whole result."""
    return [("content_block_start", {"type": "content_block_start", "index": index, "content_block": {
                "type": "server_tool_use", "id": call_id, "name": "web_search", "input": {}}}),
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {
                "type": "input_json_delta", "partial_json": orjson.dumps({"query": query}).decode()}}),
            ("content_block_stop", {"type": "content_block_stop", "index": index}),
            ("content_block_start", {"type": "content_block_start", "index": index + 1, "content_block": {
                "type": "web_search_tool_result", "tool_use_id": call_id, "content": found}}),
            ("content_block_stop", {"type": "content_block_stop", "index": index + 1})]


def fetch_events(index: int, call_id: str, source: dict) -> list[tuple[str, dict]]:
    """A fetch as Anthropic streams it: the call with its URL, and the page as a text document."""
    document = {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                               "data": source.get("content") or ""},
                "title": source.get("title") or source["url"]}
    return [("content_block_start", {"type": "content_block_start", "index": index, "content_block": {
                "type": "server_tool_use", "id": call_id, "name": "web_fetch", "input": {}}}),
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {
                "type": "input_json_delta", "partial_json": orjson.dumps({"url": source["url"]}).decode()}}),
            ("content_block_stop", {"type": "content_block_stop", "index": index}),
            ("content_block_start", {"type": "content_block_start", "index": index + 1, "content_block": {
                "type": "web_fetch_tool_result", "tool_use_id": call_id, "content": {
                    "type": "web_fetch_result", "url": source["url"], "retrieved_at": None, "content": document}}}),
            ("content_block_stop", {"type": "content_block_stop", "index": index + 1})]


def text_events(index: int, text: str, cited: list[dict]) -> tuple[list[tuple[str, dict]], int]:
    """The answer's text as Anthropic streams cited text: a plain block for each uncited piece, and
    for each cited span a block whose citations come (as `citations_delta`) before its text.
    Returns the events and the next free index."""
    out: list[tuple[str, dict]] = []
    for piece, group in segments(text, cited):
        if not piece:
            continue
        out.append(("content_block_start", {"type": "content_block_start", "index": index,
                                            "content_block": {"type": "text", "text": ""}}))
        out += [("content_block_delta", {"type": "content_block_delta", "index": index,
                                         "delta": {"type": "citations_delta", "citation": c}}) for c in group]
        out.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                            "delta": {"type": "text_delta", "text": piece}}))
        out.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1
    return out, index


def history_text(block: dict) -> str:
    """A search or fetch block of an earlier assistant turn, as text for a model that cannot take
    Anthropic's blocks (docs/PROTOCOL.md E18): what was searched or fetched and what came back, so
    that a follow-up question about the sources can be answered.  '' for any other block."""
    kind = block.get("type")
    content = block.get("content")
    if kind == "server_tool_use" and block.get("name") in ("web_search", "web_fetch"):
        arguments = block.get("input") if isinstance(block.get("input"), dict) else {}
        return f"\n[{block['name'].replace('_', ' ')}: {arguments.get('query') or arguments.get('url') or ''}]\n"
    if kind == "web_search_tool_result":
        if isinstance(content, list):
            lines = [f"- {r.get('title') or r.get('url')} <{r.get('url')}>" for r in content if isinstance(r, dict)]
            return "[web search results:\n" + "\n".join(lines) + "]\n"
        return f"[web search failed: {(content or {}).get('error_code', 'error')}]\n"
    if kind == "web_fetch_tool_result" and isinstance(content, dict):
        if content.get("type") != "web_fetch_result":
            return f"[web fetch failed: {content.get('error_code', 'error')}]\n"
        document = content.get("content") if isinstance(content.get("content"), dict) else {}
        source = document.get("source") if isinstance(document.get("source"), dict) else {}
        data = source.get("data") if source.get("type") == "text" and isinstance(source.get("data"), str) else ""
        return f"[fetched {content.get('url')}: {document.get('title') or ''}]\n{data}\n"
    return ""
