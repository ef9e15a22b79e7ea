"""No-I/O state machine: OpenAI chat.completion.chunk objects -> Anthropic stream events.

One `StreamTranslator` per request.  `start()` gives message_start; `feed(chunk)` gives the events
one upstream chunk produces; `finish(done)` closes the message; `fail(exc)` gives the error event.
Events are `(name, payload)` pairs; `sse.encode` turns them into bytes.

Text and thinking stream live.  With `live_tools` (streaming clients), a tool call's argument
fragments go out as they arrive once its name is known and its arguments open an object; a
second call goes live only once the first one's arguments are a complete object, so calls whose
fragments interleave are buffered per upstream `index` and emitted whole at the end, as every
call is without `live_tools` (docs/PROTOCOL.md E23, E24, E26).
"""

from __future__ import annotations

import re
import secrets

import orjson

from ..errors import ApiError, ClientFacingError, Untranslatable, error_body
from .provider_errors import from_stream_error
from .reasoning_details import Details
from . import signature

FINISH_TO_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
    # Z.AI GLM's own finish reason for an answer cut at the context window; Anthropic has the same
    "model_context_window_exceeded": "model_context_window_exceeded",
}
UNKNOWN_FINISH_STOP = "end_turn"      # explicit path for finish reasons not in the table
_TOOL_ID_OK = re.compile(r"^[a-zA-Z0-9_-]+$")
_TOOL_ID_BAD = re.compile(r"[^a-zA-Z0-9_-]")


def message_id() -> str:
    return "msg_" + secrets.token_hex(12)


def anthropic_tool_id(upstream_id) -> str:
    if isinstance(upstream_id, str) and upstream_id:
        return upstream_id if _TOOL_ID_OK.match(upstream_id) else _TOOL_ID_BAD.sub("_", upstream_id)
    return "toolu_" + secrets.token_hex(12)


def _client_tool_id(tool) -> str:
    """The tool_use id the client sees: the upstream id, with its thought signature if it had one."""
    tool_id = anthropic_tool_id(tool.id)
    return signature.tool_id_with_thought(tool_id, tool.thought) if tool.thought else tool_id


def parse_arguments(raw: str) -> dict | None:
    """Tool arguments -> an input object; None if they are not JSON (E22)."""
    if not raw.strip():
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else {"value": value}


# Where each provider reports the prompt tokens it read from its cache, first match wins:
# OpenAI-style `prompt_tokens_details.cached_tokens` (OpenAI, xAI, Z.AI, Qwen, Gemini, Groq,
# OpenRouter), DeepSeek's `prompt_cache_hit_tokens` (https://api-docs.deepseek.com/api/create-chat-completion),
# Moonshot's top-level `cached_tokens` (Kimi).
CACHED_FIELDS = (("prompt_tokens_details", "cached_tokens"), ("prompt_cache_hit_tokens",), ("cached_tokens",))
# cache writes: OpenRouter's and OpenAI's cache_write_tokens; Alibaba Model Studio's explicit cache
# reports cache_creation_input_tokens (https://www.alibabacloud.com/help/en/model-studio/context-cache)
WRITTEN_FIELDS = (("prompt_tokens_details", "cache_write_tokens"), ("prompt_tokens_details", "cache_creation_tokens"),
                  ("prompt_tokens_details", "cache_creation_input_tokens"))


def _first_count(u: dict, paths: tuple) -> int:
    for path in paths:
        value = u
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int) and value > 0:
            return value
    return 0


def map_usage(u: dict) -> dict:
    """OpenAI usage -> Anthropic usage (docs/PROTOCOL.md §5.6)."""
    prompt = int(u.get("prompt_tokens") or 0)
    completion = int(u.get("completion_tokens") or 0)
    cached = _first_count(u, CACHED_FIELDS)
    written = _first_count(u, WRITTEN_FIELDS)
    output = completion
    total = u.get("total_tokens")
    if isinstance(total, int) and total > prompt + completion:      # xAI: reasoning outside completion
        output += total - prompt - completion
    return {"input_tokens": max(prompt - cached - written, 0), "output_tokens": output,
            "cache_creation_input_tokens": written, "cache_read_input_tokens": cached}


def reasoning_tokens(u: dict | None) -> int:
    """The reasoning tokens an OpenAI usage reports: part of completion_tokens
    (`completion_tokens_details.reasoning_tokens`), or, for xAI, beyond it in total_tokens."""
    if not u:
        return 0
    reported = (u.get("completion_tokens_details") or {}).get("reasoning_tokens")
    if isinstance(reported, int):
        return max(reported, 0)
    prompt, completion, total = int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0), u.get("total_tokens")
    return total - prompt - completion if isinstance(total, int) and total > prompt + completion else 0


def reasoning_text(delta: dict) -> str:
    """Reasoning from any of the channels upstreams use (E31)."""
    text = delta.get("reasoning_content") or delta.get("reasoning")
    if isinstance(text, str):
        return text
    details = delta.get("reasoning_details")
    if isinstance(details, list):
        return "".join(d.get("text") or d.get("summary") or "" for d in details if isinstance(d, dict))
    return ""


def completion_as_chunk(completion: dict) -> dict:
    """A whole chat.completion as the one stream chunk that would carry the same content."""
    if completion.get("error") or completion.get("object") == "error":
        return completion                     # the translator raises the mapped error
    choices = completion.get("choices")
    if not choices or not isinstance(choices[0], dict):
        raise Untranslatable("upstream answer has no choices")
    choice = choices[0]
    message = choice.get("message") or {}
    if not message.get("content") and message.get("refusal"):
        message = dict(message, content=message["refusal"])
    return {"choices": [{"index": 0, "delta": message, "finish_reason": choice.get("finish_reason") or "stop"}],
            "usage": completion.get("usage")}


def thought_signature(call: dict) -> str | None:
    """Gemini's signature on a tool call (`extra_content.google.thought_signature`)."""
    extra = call.get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    value = google.get("thought_signature") if isinstance(google, dict) else None
    return value if isinstance(value, str) and value else None


class _Tool:
    __slots__ = ("id", "name", "args", "block", "opens", "thought")

    def __init__(self) -> None:
        self.thought: str | None = None        # a provider signature to hand back with the call
        self.id: str | None = None
        self.name = ""
        self.args: list[str] = []
        self.block: int | None = None          # its content block index, once it went out live
        self.opens: bool | None = None         # whether its arguments start an object (once known)

    def complete(self) -> bool:
        """Whether the arguments so far are a whole JSON object (nothing may follow it)."""
        return isinstance(parse_arguments("".join(self.args)), dict) and "".join(self.args).strip() != ""


class StreamTranslator:
    """`input_estimate` is message_start's input count.  When the upstream reports no usage, the
    caller sets `input_estimate` (if it was a guess) and `output_tokens` (counted once, over
    `output_text()`) before `finish`, and the final usage is marked `usage_estimated`.
    With `details` (the model's `reasoning_details` flag), the `reasoning_details` items that
    come with the reasoning ride in the signature of the thinking block they came in
    (translate.reasoning_details), made once when the block closes."""

    def __init__(self, requested_model: str, *, provider: str, upstream_model: str,
                 tool_names: dict[str, str] | None = None, input_estimate: int = 0,
                 thinking: str = "summarized", live_tools: bool = False, details: bool = False) -> None:
        self.requested_model = requested_model
        self.thinking = thinking                   # config.routing.THINKING_DISPLAY: what it asked to see
        self.tool_names = tool_names or {}
        self.input_estimate = input_estimate
        self.output_tokens: int | None = None      # counted by the caller when no usage came
        self.provider, self.upstream_model = provider, upstream_model
        self.signature = signature.plain(provider, upstream_model)
        self.details = Details() if details and thinking != "none" else None
        self.block_text: list[str] = []            # with details: the open thinking block's text as shown
        self.id = message_id()
        self.next_index = 0
        self.open_kind: str | None = None          # "text" | "thinking" | None
        self.tools: dict[int, _Tool] = {}
        self.last_tool: int | None = None          # for fragments that carry no index
        self.live_tools = live_tools
        self.live: _Tool | None = None             # the tool call whose block is open
        self.held: list[tuple[str, str]] = []      # (kind, text) that came while a live call was incomplete
        self.finish_reason: str | None = None
        self.usage: dict | None = None
        self.output_parts: list[str] = []          # output text, joined and counted once at the end
        self.emitted_tool = False
        self.web_searches = 0                      # the provider's own searches and fetches
        self.web_fetches = 0
        self.closed = False
        self.final_usage: dict | None = None
        self.usage_estimated = False
        self.cut = False                           # ended before its usage: final_usage set by flow.cuts.charge_cut

    # ------------------------------------------------------------ public

    def start(self) -> list[tuple[str, dict]]:
        usage = {"input_tokens": self.input_estimate, "output_tokens": 1,
                 "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        return [("message_start", {"type": "message_start", "message": {
            "id": self.id, "type": "message", "role": "assistant", "model": self.requested_model,
            "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage}})]

    def feed(self, chunk: dict) -> list[tuple[str, dict]]:
        """Events for one upstream chunk; raises ClientFacingError for an in-stream error."""
        if chunk.get("error") or chunk.get("object") == "error":
            raise from_stream_error(chunk)
        out: list[tuple[str, dict]] = []
        usage = chunk.get("usage")
        if usage:
            self.usage = usage
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            if isinstance(choice.get("usage"), dict) and choice["usage"]:
                self.usage = choice["usage"]       # Moonshot reports usage inside the finishing choice
            delta = choice.get("delta") or {}
            thinking = reasoning_text(delta)
            if thinking:
                self._thinking(out, thinking)
            if self.details is not None and delta.get("reasoning_details"):
                self._details(out, delta["reasoning_details"])
            text = delta.get("content") or delta.get("refusal")
            if text and isinstance(text, str):
                self.output_parts.append(text)
                self._text(out, text)
            for call in delta.get("tool_calls") or ():
                self._tool_fragment(out, call)
            reason = choice.get("finish_reason")
            if reason == "error":
                raise from_stream_error(choice if choice.get("error") else {"error": {"message": "upstream error"}})
            if reason and self.finish_reason is None:
                self.finish_reason = reason
        return out

    def texts(self, pieces: list[str]) -> list[tuple[str, dict]]:
        """Events for a run of chunks that each carry only text (text_chunks.plain_text): what
        feed gives for them one by one, their deltas joined into one as sse.coalesce joins them."""
        out: list[tuple[str, dict]] = []
        if self.live is not None:              # rare: text during a live tool call, held piece by piece
            for text in pieces:
                self.output_parts.append(text)
                self._text(out, text)
            return out
        text = pieces[0] if len(pieces) == 1 else "".join(pieces)
        self.output_parts.append(text)
        self._text(out, text)
        return out

    def whole(self, completion: dict) -> list[tuple[str, dict]]:
        """Events for an upstream that answered with one JSON object instead of a stream."""
        return self.feed(completion_as_chunk(completion))

    def finish(self, saw_done: bool) -> list[tuple[str, dict]]:
        """Close the message at the end of the upstream stream.

        Raises ApiError when the upstream ended without `[DONE]` and without a finish reason: a
        truncated answer must end in an error event, never in a clean message_stop.
        """
        if not saw_done and self.finish_reason is None:
            raise ApiError("upstream stream ended before the answer was complete")
        out: list[tuple[str, dict]] = []
        self._close(out)
        truncated = self.finish_reason == "length"
        if self.live is not None:
            if not truncated and not self.live.complete():
                raise Untranslatable(f"the model's arguments for {self.live.name} are not a JSON object, "
                               "and part of them went out already")
            out.append(("content_block_stop", {"type": "content_block_stop", "index": self.live.block}))
            self.live = None
        for key in sorted(self.tools):
            if self.tools[key].block is None:
                self._emit_tool(out, self.tools[key], drop_invalid=truncated)
        self._flush_held(out)
        if self.details:                        # items that came while no thinking block could open
            self._open(out, "thinking")
            self._close(out)
        stop = FINISH_TO_STOP.get(self.finish_reason, UNKNOWN_FINISH_STOP) if self.finish_reason else "end_turn"
        if stop == "tool_use" and not self.emitted_tool:
            stop = "end_turn"
        elif stop == "end_turn" and self.emitted_tool:
            stop = "tool_use"
        if self.usage:
            usage = map_usage(self.usage)
        else:                                   # counted by ccproxyd: the same count message_start had
            output = self.output_tokens if self.output_tokens is not None else len(self.output_text()) // 4
            usage = {"input_tokens": self.input_estimate, "output_tokens": max(1, output),
                     "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
            self.usage_estimated = True
        if self.web_searches or self.web_fetches:
            usage = dict(usage, server_tool_use={"web_search_requests": self.web_searches,
                                                 "web_fetch_requests": self.web_fetches})
        self.final_usage = usage
        out.append(("message_delta", {"type": "message_delta",
                                      "delta": {"stop_reason": stop, "stop_sequence": None}, "usage": usage}))
        out.append(("message_stop", {"type": "message_stop"}))
        self.closed = True
        return out

    def output_text(self) -> str:
        """Everything the answer said (text, thinking, tool arguments), for counting its tokens."""
        return "".join(self.output_parts)

    def fail(self, exc: ClientFacingError) -> list[tuple[str, dict]]:
        self.closed = True
        return [("error", error_body(exc))]

    # ------------------------------------------------------------ blocks

    def _thinking(self, out: list, text: str) -> None:
        """Reasoning becomes a thinking block only when the request asked for thinking; with
        `display: omitted` the block carries its signature and no text.  It counts as output
        either way."""
        self.output_parts.append(text)
        if self.thinking == "none":
            return
        if self.live is not None and not self._end_live(out):
            self.held.append(("thinking", text))   # rare: reasoning in the middle of a live tool call
            return
        self._thinking_delta(out, text)

    def _thinking_delta(self, out: list, text: str) -> None:
        """`text` in the thinking block (opened if it is not), shown when the client asked to see it."""
        self._open(out, "thinking")
        if self.thinking == "summarized":
            if self.details is not None:
                self.block_text.append(text)
            out.append(("content_block_delta", {"type": "content_block_delta", "index": self.next_index - 1,
                                                "delta": {"type": "thinking_delta", "thinking": text}}))

    def _details(self, out: list, items) -> None:
        """A chunk's `reasoning_details`: kept for the thinking block they belong to, which they
        open if none is (an item with no text, such as an encrypted one, still needs a block)."""
        if not isinstance(items, list):
            return
        self.details.add(items)
        if self.open_kind != "thinking" and self.live is None:
            self._open(out, "thinking")

    def _open(self, out: list, kind: str) -> None:
        if self.open_kind == kind:
            return
        self._close(out)
        block = {"type": "text", "text": ""} if kind == "text" else {"type": "thinking", "thinking": "", "signature": ""}
        out.append(("content_block_start", {"type": "content_block_start", "index": self.next_index,
                                            "content_block": block}))
        self.open_kind = kind
        self.next_index += 1

    def _close(self, out: list) -> None:
        if self.open_kind is None:
            return
        index = self.next_index - 1
        if self.open_kind == "thinking":
            sig = self.signature
            if self.details is not None:
                if self.details:
                    shown = "".join(self.block_text) if self.thinking == "summarized" else None
                    sig = signature.make(self.provider, self.upstream_model, details=self.details.pack(shown))
                self.block_text.clear()
            out.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                                "delta": {"type": "signature_delta", "signature": sig}}))
        out.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        self.open_kind = None

    def _tool_fragment(self, out: list, call: dict) -> None:
        key = call.get("index")
        if not isinstance(key, int):               # servers that send no index: a new id is a new call
            last = self.tools.get(self.last_tool) if self.last_tool is not None else None
            new_call = last is None or (call.get("id") and last.id and call["id"] != last.id)
            key = max(self.tools, default=-1) + 1 if new_call else self.last_tool
        self.last_tool = key
        tool = self.tools.get(key)
        if tool is None:
            tool = self.tools[key] = _Tool()
        if not tool.id and call.get("id"):
            tool.id = call["id"]
        if tool.thought is None:
            tool.thought = thought_signature(call)
        fn = call.get("function") or {}
        if not tool.name and fn.get("name"):
            tool.name = fn["name"]
        if fn.get("arguments"):
            tool.args.append(fn["arguments"])
        if self.live_tools:
            self._live_fragment(out, tool, fn.get("arguments") or "")

    def _live_fragment(self, out: list, tool: _Tool, fragment: str) -> None:
        if tool is self.live:
            if fragment:
                self._json_delta(out, tool.block, fragment)
            return
        if tool.block is not None:                 # more for a call whose object was complete
            if fragment.strip():
                raise Untranslatable(f"the model sent more arguments for {tool.name} after they were complete")
            return                                 # an empty fragment or a repeated id: nothing to add
        if self.live is not None and not self._end_live(out):
            return                                 # interleaved with an unfinished call: buffered
        if tool.opens is None and fragment.strip():
            tool.opens = "".join(tool.args).lstrip().startswith("{")      # decided once, at its first text
        if not tool.name or not tool.opens or any(t is not tool and t.block is None for t in self.tools.values()):
            return                                 # not yet (or never) live: emitted whole at the end
        self._close(out)
        tool.block = self.next_index
        self.next_index += 1
        self.emitted_tool = True
        self.live = tool
        out.append(("content_block_start", {"type": "content_block_start", "index": tool.block, "content_block": {
            "type": "tool_use", "id": _client_tool_id(tool), "name": self.tool_names.get(tool.name, tool.name),
            "input": {}}}))
        self._json_delta(out, tool.block, "".join(tool.args))

    def _end_live(self, out: list) -> bool:
        """Close the live call's block if its arguments are complete, then send what was held
        while it was open; whether it was closed."""
        if not self.live.complete():
            return False
        out.append(("content_block_stop", {"type": "content_block_stop", "index": self.live.block}))
        self.live = None
        self._flush_held(out)
        return True

    def _text(self, out: list, text: str) -> None:
        if self.live is not None and not self._end_live(out):
            self.held.append(("text", text))       # rare: text in the middle of a live tool call
            return
        self._open(out, "text")
        out.append(("content_block_delta", {"type": "content_block_delta", "index": self.next_index - 1,
                                            "delta": {"type": "text_delta", "text": text}}))

    def _flush_held(self, out: list) -> None:
        held, self.held = self.held, []
        for kind, text in held:
            if kind == "text":
                self._text(out, text)
            else:
                self._thinking_delta(out, text)
        self._close(out)

    def _json_delta(self, out: list, index: int, fragment: str) -> None:
        self.output_parts.append(fragment)
        out.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                            "delta": {"type": "input_json_delta", "partial_json": fragment}}))

    def _emit_tool(self, out: list, tool: _Tool, *, drop_invalid: bool) -> None:
        raw = "".join(tool.args)
        arguments = parse_arguments(raw)
        if not tool.name or (arguments is None and drop_invalid):
            return                    # a call cut off by max_tokens, or one that never got a name
        if arguments is None:
            arguments = {"raw_arguments": raw}
        self.output_parts.append(raw)
        index = self.next_index
        self.next_index += 1
        self.emitted_tool = True
        out.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": {
            "type": "tool_use", "id": _client_tool_id(tool), "name": self.tool_names.get(tool.name, tool.name),
            "input": {}}}))
        out.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                            "delta": {"type": "input_json_delta",
                                                      "partial_json": orjson.dumps(arguments).decode()}}))
        out.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
