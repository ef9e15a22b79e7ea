"""Pure Anthropic Messages request -> OpenAI Chat Completions request (docs/PROTOCOL.md §5.1, §5.2).

No I/O.  `to_openai(body, model)` returns the upstream body and the tool-name map needed to turn
shortened tool names back into the client's names.
"""

from __future__ import annotations

import hashlib
import re

import orjson

from ..config.table import EFFORTS, Model
from ..errors import InvalidRequest
from . import attribution, citations, prompt_cache, reasoning_details, signature
from .tools import object_schema, convert_tool_choice, convert_tools, loaded_tools, upstream_tool_name

INTERRUPTED_RESULT = "Tool call was interrupted; no result."
EMPTY_RESULT = "(no output)"
TOOL_LOADED = "Tool loaded, now callable as a function:"
# Gemini's documented stand-in for a function call that has no thought signature of its own
# (history written by another model): https://ai.google.dev/gemini-api/docs/thought-signatures
GEMINI_NO_SIGNATURE = "skip_thought_signature_validator"
# reasoning_replay modes that send the thinking inside the assistant's `content`, before its answer
# (reasoning, answer -> content).  Cerebras' "Reasoning Context Retention" (it answers 400 to a
# `reasoning_content` field), https://inference-docs.cerebras.ai/capabilities/reasoning: "Use the same
# format the model outputs: for GLM and Qwen, include reasoning in <think>...</think> tags; for
# GPT-OSS, prepend reasoning text directly before the answer", with the examples "I need to multiply
# 25 by 4. 25 * 4 = 100. The answer is 100." and "<think>I need to multiply 25 by 4. 25 * 4 =
# 100.</think>The answer is 100." (a space before GPT-OSS's answer, none after </think>).
REASONING_IN_CONTENT = {
    "prepend_to_content": lambda reasoning, answer: f"{reasoning} {answer}" if answer else reasoning,
    "think_tags_in_content": lambda reasoning, answer: f"<think>{reasoning}</think>{answer}",
}


def budget_to_effort(budget: int) -> str:
    if budget <= 1024:
        return "low"
    if budget <= 8192:
        return "medium"
    return "high"


def clamp_effort(wanted: str, allowed: tuple[str, ...]) -> str:
    """The strongest allowed effort not above `wanted`, else the weakest allowed one."""
    rank = EFFORTS.index(wanted) if wanted in EFFORTS else EFFORTS.index("medium")
    below = [e for e in allowed if EFFORTS.index(e) <= rank]
    return max(below, key=EFFORTS.index) if below else min(allowed, key=EFFORTS.index)


def requested_effort(body: dict) -> str | None:
    """Effort the client asked for, from thinking and output_config; None = no preference."""
    thinking = body.get("thinking") if isinstance(body.get("thinking"), dict) else {}
    config_effort = (body.get("output_config") or {}).get("effort") if isinstance(body.get("output_config"), dict) else None
    kind = thinking.get("type")
    if kind == "disabled":
        return "none"
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        return config_effort or budget_to_effort(budget if isinstance(budget, int) else 0)
    if kind == "adaptive":
        return config_effort or "medium"
    return config_effort


# ---------------------------------------------------------------- content

def _text_of(content) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(b.get("text", "") for b in content or [] if isinstance(b, dict) and b.get("type") == "text")


def _image_part(block: dict, model: Model) -> dict:
    source = block.get("source") or {}
    if not model.vision:
        return {"type": "text", "text": "[image omitted: the model has no vision]"}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    elif source.get("type") == "url":
        url = source.get("url", "")
    else:
        raise InvalidRequest(f"image source type {source.get('type')!r} is not supported")
    return {"type": "image_url", "image_url": {"url": url}}


def _document_part(block: dict, model: Model) -> dict:
    source = block.get("source") or {}
    kind = source.get("type")
    title = f"{block['title']}\n" if block.get("title") else ""
    if kind == "base64" and model.documents == "text":    # the server takes no file parts (Kimi)
        return {"type": "text", "text": f"[document omitted: {block.get('title') or 'document.pdf'} "
                                        f"({source.get('media_type', 'application/pdf')}); "
                                        f"{model.upstream} is not sent files]"}
    if kind == "base64":
        return {"type": "file", "file": {"filename": block.get("title") or "document.pdf",
                                         "file_data": f"data:{source.get('media_type', 'application/pdf')};base64,{source.get('data', '')}"}}
    if kind == "text":
        return {"type": "text", "text": title + str(source.get("data", ""))}
    if kind == "content":
        return {"type": "text", "text": title + _text_of(source.get("content"))}
    if kind == "url":
        return {"type": "text", "text": f"{title}[document: {source.get('url', '')}]"}
    raise InvalidRequest(f"document source type {kind!r} is not supported")


def _user_parts(blocks: list, model: Model) -> list[dict]:
    parts = []
    for block in blocks:
        kind = block.get("type")
        if kind == "text":
            if str(block.get("text", "")).strip():
                parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            parts.append(_image_part(block, model))
        elif kind == "document":
            parts.append(_document_part(block, model))
        elif kind == "tool_reference":            # a tool ToolSearch loaded: offered from now on
            name = upstream_tool_name(str(block.get("tool_name", "")))
            parts.append({"type": "text", "text": f"{TOOL_LOADED} {name}"})
        elif kind == "search_result":
            parts.append({"type": "text", "text": f"{block.get('title', '')}\n{block.get('source', '')}\n"
                                                  f"{_text_of(block.get('content'))}".strip()})
        # thinking blocks in a user turn are invalid on Anthropic too; other kinds carry nothing usable
    return parts


def _user_message(parts: list[dict]) -> dict:
    if all(p["type"] == "text" for p in parts):
        return {"role": "user", "content": "\n\n".join(p["text"] for p in parts)}
    return {"role": "user", "content": parts}


def _tool_result(block: dict, model: Model) -> tuple[dict, list[dict]]:
    """One `tool` message (text only) and the media parts that must follow in a user message."""
    content = block.get("content")
    if isinstance(content, str):            # most results: a string, or one text block
        text, media = content, []
    elif isinstance(content, list) and len(content) == 1 and isinstance(content[0], dict) \
            and content[0].get("type") == "text":
        text, media = str(content[0].get("text", "")), []
    else:
        parts = _user_parts([b for b in content or [] if isinstance(b, dict)], model)
        text = "\n".join(p["text"] for p in parts if p["type"] == "text")
        media = [p for p in parts if p["type"] != "text"]
    if not text.strip():
        text = "(see the attached content below)" if media else EMPTY_RESULT
    if block.get("is_error"):
        text = f"Error: {text}"
    call_id = signature.split_tool_id(str(block.get("tool_use_id", "")))[0]
    return {"role": "tool", "tool_call_id": call_id, "content": text}, media


def _assistant_message(blocks: list, model: Model, names: dict[str, str]) -> dict:
    # cited text comes as several blocks (" " between two cited spans is one): joined as they are
    pieces: list[str] = []
    calls: list[dict] = []
    for b in blocks:
        kind = b.get("type")
        if kind == "text":
            pieces.append(str(b.get("text", "")))
        elif kind != "tool_use":
            pieces.append(citations.history_text(b))
        else:
            name = upstream_tool_name(str(b.get("name", "")))
            names[name] = str(b.get("name", ""))
            args = b.get("input") if isinstance(b.get("input"), dict) else {}
            call_id, thought = signature.split_tool_id(str(b.get("id", "")))
            call = {"id": call_id, "type": "function",
                    "function": {"name": name, "arguments": orjson.dumps(args).decode()}}
            if model.thought_signatures == "gemini" and (thought or not calls):   # the first call needs one
                call["extra_content"] = {"google": {"thought_signature": thought or GEMINI_NO_SIGNATURE}}
            calls.append(call)
    text = "".join(pieces)
    text = text if text.strip() else ""
    # No `content` at all beside tool calls: OpenAI and vLLM take null or absence, but strict
    # servers (llama-cpp-python: `content: NotRequired[str]`) reject null.
    msg: dict = {"role": "assistant"}
    if text or not calls:
        msg["content"] = text
    if calls:
        msg["tool_calls"] = calls
    if model.api == "responses":              # consumed by translate.responses
        items = (signature.reasoning_item(b.get("signature"), model.provider, model.upstream)
                 for b in blocks if b.get("type") == "thinking")
        msg["reasoning_items"] = [item for item in items if item]
    elif model.reasoning_replay != "none" or model.reasoning_details:
        ours = [b for b in blocks if b.get("type") == "thinking" and signature.is_ours(b.get("signature"))]
        details: list[dict] = []
        if model.reasoning_details:           # this model's own items, as it sent them
            details, ours = reasoning_details.replayed(ours, model.provider, model.upstream)
            if details:
                msg["reasoning_details"] = details
        if model.reasoning_replay != "none":  # thinking from elsewhere (another model, another route)
            reasoning = "".join(b.get("thinking", "") for b in ours)
            in_content = REASONING_IN_CONTENT.get(model.reasoning_replay)
            if in_content is not None:
                if reasoning:
                    msg["content"] = in_content(reasoning, msg.get("content", ""))
            elif reasoning or (calls and not details and model.reasoning_replay == "reasoning_content"):
                msg[model.reasoning_replay] = reasoning
    return msg


def _blocks(message: dict, i: int) -> list[dict]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [b for b in content if isinstance(b, dict)]
    raise InvalidRequest(f"messages.{i}.content: expected a string or a list of content blocks")


def convert_messages(body: dict, model: Model, names: dict[str, str]) -> list[dict]:
    """The conversation as Chat Completions messages, with one system message first: the
    `system` field, then every system-role message that comes before the first assistant turn
    (Claude Code 2.1.3xx sends its whole system prompt that way).  A system-role message later in
    the conversation becomes a `<system-reminder>` user message, which strict templates accept."""
    out: list[dict] = []
    system = body.get("system")
    instructions = []
    if system:
        instructions.append(system if isinstance(system, str) else "\n\n".join(
            b.get("text", "") for b in system if isinstance(b, dict) and b.get("type") == "text" and b.get("text")))
    leading = True
    for i, message in enumerate(body["messages"]):
        if not isinstance(message, dict):
            raise InvalidRequest(f"messages.{i}: expected an object")
        role = message.get("role")
        blocks = _blocks(message, i)
        if role == "system":
            text = "\n".join(_text_of(b.get("content")) if b.get("type") == "mid_conv_system" else b.get("text", "")
                             for b in blocks)
            if not text.strip():
                continue
            if leading:
                instructions.append(text)
            else:
                out.append({"role": "user", "content": f"<system-reminder>\n{text}\n</system-reminder>"})
        elif role == "user":
            media: list[dict] = []
            rest: list[dict] = []
            for b in blocks:
                if b.get("type") == "tool_result":
                    tool_msg, carried = _tool_result(b, model)
                    out.append(tool_msg)
                    media += carried
                else:
                    rest.append(b)
            parts = media + _user_parts(rest, model) if rest else media
            if parts:
                out.append(_user_message(parts))
        elif role == "assistant":
            leading = False
            out.append(_assistant_message(blocks, model, names))
        else:
            raise InvalidRequest(f"messages.{i}.role: expected 'user' or 'assistant', got {role!r}")
    text = "\n\n".join(t for t in instructions if t)
    if text:
        out.insert(0, {"role": "system", "content": text})
    return _pair_tool_calls(out)


def _pair_tool_calls(messages: list[dict]) -> list[dict]:
    """Every assistant tool call answered right after it; stray tool results become user text."""
    out: list[dict] = []
    pending: list[str] = []
    answered: set[str] = set()

    def close_pending() -> None:
        for call_id in pending:
            if call_id not in answered:
                out.append({"role": "tool", "tool_call_id": call_id, "content": INTERRUPTED_RESULT})
        pending.clear()

    for msg in messages:
        if msg["role"] == "tool":
            if msg["tool_call_id"] in pending and msg["tool_call_id"] not in answered:
                answered.add(msg["tool_call_id"])
                out.append(msg)
            else:
                out.append({"role": "user", "content": f"[tool result {msg['tool_call_id']}]\n{msg['content']}"})
            continue
        close_pending()
        answered.clear()
        out.append(msg)
        if msg["role"] == "assistant":
            pending.extend(c["id"] for c in msg.get("tool_calls", ()))
    close_pending()
    return out


# ---------------------------------------------------------------- the request

STRUCTURED_OUTPUT_NOTE = "Answer with one JSON object, and nothing else, that matches this JSON schema:\n"


def _output_schema(body: dict) -> dict | None:
    """The JSON schema of `output_config.format` (or the beta `output_format`), if any."""
    config = body.get("output_config") if isinstance(body.get("output_config"), dict) else {}
    fmt = config.get("format") or body.get("output_format")
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return None
    return object_schema(fmt.get("schema"))


def _structured_output(body: dict, model: Model, messages: list[dict]) -> dict:
    """Structured output -> `response_format`, in the form the model's server takes.
    `strict` stays off: strict mode rejects schemas that leave properties optional."""
    schema = _output_schema(body)
    if schema is None or model.structured_output == "none":
        return {}
    if model.structured_output == "json_object":     # the schema goes into the prompt instead
        note = STRUCTURED_OUTPUT_NOTE + orjson.dumps(schema).decode()
        if messages and messages[0]["role"] == "system":
            messages[0] = dict(messages[0], content=messages[0]["content"] + "\n\n" + note)
        else:
            messages.insert(0, {"role": "system", "content": note})
        return {"response_format": {"type": "json_object"}}
    return {"response_format": {"type": "json_schema",
                                "json_schema": {"name": "structured_output", "schema": schema, "strict": False}}}


# reasoning_control -> (thinking on, thinking off) for the servers that think unless told not to.
# A request that asks for no thinking gets "off", as Anthropic would not think either.
THINKING_TOGGLE = {
    # https://api-docs.deepseek.com/guides/thinking_mode (on by default; effort rides beside it)
    "deepseek": ({"thinking": {"type": "enabled"}}, {"thinking": {"type": "disabled"}}),
    # the bare toggle of hybrid models such as GLM-5 to 5.2 (https://docs.z.ai/guides/llm/glm-4.5
    # documents it; GLM-5.3 and later always think and take reasoning_effort instead)
    "thinking": ({"thinking": {"type": "enabled"}}, {"thinking": {"type": "disabled"}}),
    # MiniMax: thinking is adaptive or disabled; reasoning_split puts it in reasoning_details
    # rather than <think> tags in content (https://platform.minimax.io/docs/guides/text-generation)
    "minimax": ({"thinking": {"type": "adaptive"}, "reasoning_split": True},
                {"thinking": {"type": "disabled"}, "reasoning_split": True}),
}
EFFORT_WITH_TOGGLE = ("deepseek",)


def _reasoning_fields(body: dict, model: Model, forced_tool: bool = False) -> dict:
    if not model.reasoning or model.reasoning_control == "none":
        return {}
    wanted = requested_effort(body)
    if model.reasoning_control in THINKING_TOGGLE:
        on, off = THINKING_TOGGLE[model.reasoning_control]
        if wanted in (None, "none") or (forced_tool and model.forced_tool_choice == "thinking_off"):
            return dict(off)
        if model.reasoning_control in EFFORT_WITH_TOGGLE:
            return {**on, "reasoning_effort": clamp_effort(wanted, model.efforts)}
        return dict(on)
    if wanted is None:
        return {}
    effort = clamp_effort(wanted, model.efforts)
    if model.reasoning_control == "openrouter":
        return {"reasoning": {"effort": effort}}
    return {"reasoning_effort": effort}


FORCED_TOOL_NOTE = {"required": "Answer by calling one of the functions.",
                    "function": "Answer by calling the function {name}."}


def _instruct_tool_choice(out: dict) -> None:
    """A forced tool_choice the server refuses (GLM, MiniMax: auto only) becomes `auto` and an
    instruction that says the same, so the request still asks for the call."""
    choice = out["tool_choice"]
    note = (FORCED_TOOL_NOTE["required"] if choice == "required"
            else FORCED_TOOL_NOTE["function"].format(name=choice["function"]["name"]))
    out["tool_choice"] = "auto"
    out["messages"].append({"role": "user", "content": f"<system-reminder>\n{note}\n</system-reminder>"})


def to_openai(body: dict, model: Model) -> tuple[dict, dict[str, str]]:
    """Anthropic request body -> (OpenAI request body, {upstream tool name: client tool name}).
    A field of the wrong type anywhere is the client's error (400), never ours."""
    try:
        return _to_openai(body, model)
    except (TypeError, AttributeError, KeyError, ValueError) as exc:
        raise InvalidRequest(f"request body has a field of the wrong type or shape ({type(exc).__name__}: {exc})") from None


def _to_openai(body: dict, model: Model) -> tuple[dict, dict[str, str]]:
    names: dict[str, str] = {}
    if model.attribution == "strip":
        body = attribution.strip(body)               # Claude Code's per-session first line: not upstream
    out: dict = {"model": model.upstream, "messages": convert_messages(body, model, names),
                 "stream": True, "stream_options": {"include_usage": True}}
    out[model.max_tokens_field] = min(body["max_tokens"], model.max_output_tokens)
    declared = body.get("tools") or []
    deferred = any(isinstance(tool, dict) and tool.get("defer_loading") for tool in declared)
    tools = convert_tools(declared, names, loaded_tools(body["messages"]) if deferred else frozenset(), model.tool_schema)
    if model.max_tools is not None and len(tools) > model.max_tools:
        raise InvalidRequest(f"tools: {model.upstream} takes at most {model.max_tools} tools in a request, and this "
                             f"one offers {len(tools)}: leave some MCP servers or tools out, or route to another model")
    if tools:
        out["tools"] = tools
    choice = body.get("tool_choice")
    forced = False
    if isinstance(choice, dict) and tools:
        out["tool_choice"] = convert_tool_choice(choice, names)
        forced = out["tool_choice"] not in ("auto", "none")
        if forced and model.forced_tool_choice == "instruct":     # the server takes only auto
            _instruct_tool_choice(out)
        if choice.get("disable_parallel_tool_use"):
            out["parallel_tool_calls"] = False
    stops = body.get("stop_sequences")
    if stops and model.stop_sequences:
        out["stop"] = list(stops)[:4]
    if model.sampling:
        for key in ("temperature", "top_p"):
            if isinstance(body.get(key), (int, float)):
                out[key] = body[key]
    out.update(_reasoning_fields(body, model, forced))
    out.update(_structured_output(body, model, out["messages"]))
    user_id = (body.get("metadata") or {}).get("user_id") if isinstance(body.get("metadata"), dict) else None
    if user_id:
        out["user"] = _hashed(identity_of(str(user_id)))     # the same in every session: OpenAI buckets by it
    prompt_cache.apply(out, body, model)             # prompt_cache_key, cache_control breakpoints
    return out, names


def _hashed(value) -> str:
    """Identities only ever leave hashed, within OpenAI's 64-character limit."""
    return "ccpx-" + hashlib.sha256(str(value).encode()).hexdigest()[:32]


_LEGACY_SESSION = re.compile(r"_session_([0-9a-fA-F-]+)$")


def session_of_metadata(body: dict) -> str | None:
    """The Claude Code session a request belongs to, from `metadata.user_id`, when it carries one
    (never the user id itself: that may name a person)."""
    metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    user_id = metadata.get("user_id")
    if not isinstance(user_id, str) or not user_id:
        return None
    session = session_of(user_id)
    return session if session != user_id else None


def _json_object(text: str):
    """`text` parsed when it looks like a JSON object (2.x user ids); None without trying otherwise
    (1.x ids and plain strings: an exception per request costs more than the check)."""
    if not text.startswith("{"):
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def identity_of(user_id: str) -> str:
    """Who is asking, without the session: Claude Code's user_id less its `session_id` (2.x JSON,
    as sorted compact JSON) or its `_session_<uuid>` tail (1.x); otherwise the whole value.
    OpenAI uses `user` to bucket requests for its prompt cache ("Used to boost cache hit rates by
    better bucketing similar requests", https://platform.openai.com/docs/api-reference/chat/create),
    so a per-session value would split one developer's sessions across caches."""
    parsed = _json_object(user_id)
    if isinstance(parsed, dict) and "session_id" in parsed:
        return orjson.dumps({k: v for k, v in parsed.items() if k != "session_id"}, option=orjson.OPT_SORT_KEYS).decode()
    return _LEGACY_SESSION.sub("", user_id)


def session_of(user_id: str) -> str:
    """Claude Code's session id inside metadata.user_id: a JSON object with `session_id` (2.x) or
    `user_<hash>_account_<uuid>_session_<uuid>` (1.x); otherwise the whole value."""
    parsed = _json_object(user_id)
    if isinstance(parsed, dict) and parsed.get("session_id"):
        return str(parsed["session_id"])
    legacy = _LEGACY_SESSION.search(user_id)
    return legacy.group(1) if legacy else user_id
