"""Pure Anthropic Messages <-> OpenAI Responses API (docs/PROTOCOL.md §6), for models with `api: responses`.

The request is first translated to Chat Completions (every content, tool and pairing rule lives
there), then reshaped into Responses input items.  Reasoning items come back encrypted
(`include: reasoning.encrypted_content`, `store: false`); each rides in the signature of the
thinking block it produced and is handed back on the next turn, so GPT-5 keeps its reasoning
across tool calls.  The stream translator reuses StreamTranslator's blocks, tool buffering, stop
reasons and usage; only the upstream event grammar differs.  The same API serves OpenAI's and
xAI's own web search (`web_search: openai` / `xai`): a `web_search_call` item is held until the
message that cites it is done, then both go out as Anthropic's search blocks and cited text
(translate.citations).
"""

from __future__ import annotations

import orjson

from ..config.table import Model
from ..errors import Untranslatable
from .provider_errors import from_stream_error
from . import request as treq
from . import signature
from . import citations, server_tools
from .stream import StreamTranslator, _Tool

_PART = {"text": "input_text", "image_url": "input_image", "file": "input_file"}
# web_search_call actions that look inside a page the search found rather than search again
# (OpenAI's recorded answers: vercel/ai packages/openai/src/responses/__fixtures__/
# openai-web-search-tool.1.chunks.txt): folded into that search, as one more of its sources.
PAGE_ACTIONS = ("open_page", "find_in_page")


def to_responses(body: dict, model: Model) -> tuple[dict, dict[str, str]]:
    """Anthropic request body -> (Responses request body, {upstream tool name: client tool name})."""
    chat, names = treq.to_openai(body, model)
    out: dict = {"model": chat["model"], "stream": True, "store": False}
    messages = chat["messages"]
    if messages and messages[0]["role"] == "system":
        out["instructions"] = messages.pop(0)["content"]
    out["input"] = [item for message in messages for item in _items(message)]
    limit = chat.get("max_completion_tokens", chat.get("max_tokens"))
    if limit is not None:
        out["max_output_tokens"] = limit
    for key in ("temperature", "top_p", "parallel_tool_calls", "user", "prompt_cache_key"):
        if key in chat:
            out[key] = chat[key]
    if chat.get("tools"):
        out["tools"] = [{"type": "function", "name": t["function"]["name"],
                         "description": t["function"].get("description", ""),
                         "parameters": t["function"]["parameters"], "strict": False} for t in chat["tools"]]
    choice = chat.get("tool_choice")
    if choice is not None:
        out["tool_choice"] = choice if isinstance(choice, str) else {"type": "function", "name": choice["function"]["name"]}
    if model.reasoning:
        reasoning = {"summary": "auto"}
        if chat.get("reasoning_effort"):
            reasoning["effort"] = chat["reasoning_effort"]
        out["reasoning"] = reasoning
        out["include"] = ["reasoning.encrypted_content"]
    search, max_uses = server_tools.responses_search(body, model)           # OpenAI's or xAI's own search
    if search is not None:
        out["tools"] = [*out.get("tools", ()), search]
        if model.web_search == "openai":
            out["include"] = [*out.get("include", ()), "web_search_call.action.sources"]
        if max_uses:
            out["max_tool_calls"] = max_uses
    fmt = chat.get("response_format")
    if fmt:
        spec = fmt.get("json_schema") or {}
        out["text"] = {"format": {"type": "json_schema", "name": spec.get("name", "structured_output"),
                                  "schema": spec.get("schema", {}), "strict": False}
                       if fmt["type"] == "json_schema" else {"type": "json_object"}}
    return out, names


def _items(message: dict) -> list[dict]:
    role = message["role"]
    if role == "tool":
        return [{"type": "function_call_output", "call_id": message["tool_call_id"], "output": message["content"]}]
    if role == "assistant":
        items = list(message.get("reasoning_items") or ())
        if message.get("content"):                   # the "easy" message form: no output item ids needed
            items.append({"role": "assistant", "content": message["content"]})
        items += [{"type": "function_call", "call_id": c["id"], "name": c["function"]["name"],
                   "arguments": c["function"]["arguments"]} for c in message.get("tool_calls", ())]
        return items
    content = message["content"]
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
    return [{"role": role, "content": [_input_part(p) for p in parts]}]


def _input_part(part: dict) -> dict:
    kind = _PART[part["type"]]
    if kind == "input_text":
        return {"type": kind, "text": part["text"]}
    if kind == "input_image":
        return {"type": kind, "image_url": part["image_url"]["url"], "detail": "auto"}
    return {"type": kind, "filename": part["file"]["filename"], "file_data": part["file"]["file_data"]}


def _chat_usage(usage: dict) -> dict:
    """Responses usage in Chat Completions' shape, for the shared usage mapping."""
    return {"prompt_tokens": usage.get("input_tokens") or 0, "completion_tokens": usage.get("output_tokens") or 0,
            "prompt_tokens_details": {"cached_tokens": (usage.get("input_tokens_details") or {}).get("cached_tokens") or 0},
            "completion_tokens_details": {"reasoning_tokens":
                                          (usage.get("output_tokens_details") or {}).get("reasoning_tokens") or 0}}


class ResponsesTranslator(StreamTranslator):
    """Responses API stream events -> Anthropic stream events."""

    def __init__(self, requested_model: str, *, provider: str, upstream_model: str, **kwargs) -> None:
        super().__init__(requested_model, provider=provider, upstream_model=upstream_model, **kwargs)
        self.plain_signature = self.signature
        self.summary_parts = 0                   # summary parts seen in the current reasoning item
        self.searched = False                    # a web search ran: the text that follows is held
        self.pending: list[tuple[str, str, list[dict]]] = []   # searches not yet sent: (id, query, sources)
        self.message_text: list[str] = []
        self.cited: list[dict] = []

    def feed(self, event: dict) -> list[tuple[str, dict]]:
        kind = event.get("type")
        out: list[tuple[str, dict]] = []
        if kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            self._delta(out, "thinking", event.get("delta") or "")
        elif kind == "response.reasoning_summary_part.added":
            if self.summary_parts and self.open_kind == "thinking":
                self._delta(out, "thinking", "\n\n")
            self.summary_parts += 1
        elif kind in ("response.output_text.delta", "response.refusal.delta"):
            self._delta(out, "text", event.get("delta") or "")
        elif kind == "response.output_text.annotation.added":
            self._cite(event.get("annotation"))
        elif kind == "response.output_item.added":
            self._item_added(event.get("output_index", 0), event.get("item") or {})
        elif kind == "response.function_call_arguments.delta":
            tool = self.tools.get(event.get("output_index", 0))
            if tool is not None:
                tool.args.append(event.get("delta") or "")
        elif kind == "response.output_item.done":
            self._item_done(out, event.get("output_index", 0), event.get("item") or {})
        elif kind in ("response.completed", "response.incomplete"):
            self._completed(event.get("response") or {})
        elif kind == "response.failed":
            error = (event.get("response") or {}).get("error") or {"message": "the upstream response failed"}
            raise from_stream_error({"error": error})
        elif kind == "error":                    # OpenAI nests message and code under `error`
            raise from_stream_error(event if isinstance(event.get("error"), dict) else {"error": event})
        return out

    def whole(self, response: dict) -> list[tuple[str, dict]]:
        """A whole (non-streamed) Response object, as the events its stream would have carried."""
        if response.get("object") != "response":
            raise Untranslatable("upstream answer is not a Responses API response")
        out: list[tuple[str, dict]] = []
        for index, item in enumerate(response.get("output") or ()):
            self._item_added(index, item)
            if item.get("type") == "reasoning":
                for part in item.get("summary") or ():
                    out += self.feed({"type": "response.reasoning_summary_part.added"})
                    self._delta(out, "thinking", part.get("text", ""))
            elif item.get("type") == "message":
                for part in item.get("content") or ():
                    self._delta(out, "text", part.get("text") or part.get("refusal") or "")
            self._item_done(out, index, item)
        status = response.get("status")
        out += self.feed({"type": "response.failed" if status == "failed" else
                          "response.incomplete" if status == "incomplete" else "response.completed",
                          "response": response})
        return out

    # ------------------------------------------------------------ pieces

    def _delta(self, out: list, kind: str, text: str) -> None:
        if not text:
            return
        if kind == "thinking":
            self._thinking(out, text)
            return
        if self.searched:                    # held for its citations until the message is done
            self.message_text.append(text)
            self.output_parts.append(text)
            return
        self._open(out, kind)
        out.append(("content_block_delta", {"type": "content_block_delta", "index": self.next_index - 1,
                                            "delta": {"type": "text_delta", "text": text}}))
        self.output_parts.append(text)

    def _item_added(self, index: int, item: dict) -> None:
        if item.get("type") == "function_call":
            tool = self.tools[index] = _Tool()
            tool.id, tool.name = item.get("call_id") or item.get("id"), item.get("name") or ""
        elif item.get("type") == "reasoning":
            self.summary_parts = 0

    def _item_done(self, out: list, index: int, item: dict) -> None:
        kind = item.get("type")
        if kind == "function_call" and index in self.tools:
            if isinstance(item.get("arguments"), str):       # the whole arguments: trust them over fragments
                self.tools[index].args = [item["arguments"]]
        elif kind == "web_search_call":
            self._web_search(item)
        elif kind == "message" and self.searched:
            for part in item.get("content") or ():
                for annotation in part.get("annotations") or () if isinstance(part, dict) else ():
                    self._cite(annotation)
            if not self.message_text:                # a whole response: the text is in the item
                self.message_text = [p.get("text") or "" for p in item.get("content") or () if isinstance(p, dict)]
            self._flush_searches(out, self.cited)
            events, self.next_index = citations.text_events(self.next_index, "".join(self.message_text), self.cited)
            out += events
            self.message_text, self.cited = [], []
        elif kind == "reasoning" and self.thinking != "none":
            # the thinking block (empty when no summary came) carries the item to the next turn
            self._open(out, "thinking")
            self.signature = signature.make(self.provider, self.upstream_model, item)
            self._close(out)
            self.signature = self.plain_signature

    def _web_search(self, item: dict) -> None:
        """OpenAI's or xAI's own search: held until the text that cites it (or any block but
        thinking) comes, so that its results carry the titles the citations give.  URLs are
        compared without the providers' tracking parameters (citations.canonical)."""
        action = item.get("action") if isinstance(item.get("action"), dict) else {}
        query = action.get("query") if isinstance(action.get("query"), str) else ""
        if not query and isinstance(item.get("arguments"), str):          # xAI's earlier form
            try:
                arguments = orjson.loads(item["arguments"])
            except orjson.JSONDecodeError:
                arguments = {}
            query = arguments.get("query") if isinstance(arguments, dict) and isinstance(arguments.get("query"), str) else ""
        sources = [{"url": citations.canonical(s["url"]), "title": s.get("title")} for s in action.get("sources") or ()
                   if isinstance(s, dict) and isinstance(s.get("url"), str)]
        self.web_searches += 1
        if action.get("type") in PAGE_ACTIONS and isinstance(action.get("url"), str):
            page = {"url": citations.canonical(action["url"]), "title": None}
            if self.pending:                         # a page of the search before it: one of its sources
                if page["url"] not in {source["url"] for source in self.pending[-1][2]}:
                    self.pending[-1][2].append(page)
                return
            sources = [page]
        self.pending.append((citations.tool_id(item.get("id")), query, sources))
        self.searched = True

    def _cite(self, annotation) -> None:
        cited = citations.normalize(annotation)
        if cited is not None and cited not in self.cited:
            self.cited.append(cited)

    def _flush_searches(self, out: list, cited: list[dict]) -> None:
        """The held searches as Anthropic's blocks; a cited URL no search listed goes to the last."""
        if not self.pending:
            return
        self._close(out)
        listed = {source["url"] for _, _, sources in self.pending for source in sources}
        pending, self.pending = self.pending, []
        for number, (call_id, query, sources) in enumerate(pending):
            urls = {source["url"] for source in sources}
            mine = [c for c in cited if c["url"] in urls or (number == len(pending) - 1 and c["url"] not in listed)]
            out += citations.search_events(self.next_index, call_id, query, citations.results(sources, mine))
            self.next_index += 2

    def _open(self, out: list, kind: str) -> None:
        # Reasoning between searches (GPT-5 thinks before each one) goes out as it comes; the
        # searches wait for the message whose citations give their results' titles.
        if self.pending and self.open_kind != kind and kind != "thinking":
            self._flush_searches(out, [])
        super()._open(out, kind)

    def finish(self, saw_done: bool) -> list[tuple[str, dict]]:
        out: list[tuple[str, dict]] = []
        if saw_done or self.finish_reason is not None:
            self._flush_searches(out, self.cited)
            if self.message_text:                    # a message cut short: its text, uncited
                events, self.next_index = citations.text_events(self.next_index, "".join(self.message_text), self.cited)
                out += events
                self.message_text = []
        return out + super().finish(saw_done)

    def _completed(self, response: dict) -> None:
        if response.get("usage"):
            self.usage = _chat_usage(response["usage"])
        if response.get("status") == "incomplete":
            reason = (response.get("incomplete_details") or {}).get("reason")
            self.finish_reason = "length" if reason == "max_output_tokens" else "content_filter"
        else:
            self.finish_reason = "tool_calls" if self.tools else "stop"
