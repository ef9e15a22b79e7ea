"""Pure: Anthropic tool definitions and tool_choice -> OpenAI functions, and the names they go by.

An Anthropic tool name may not fit OpenAI's function-name grammar; `upstream_tool_name` maps it to
one that does, and every converter records the mapping in `names` (upstream name -> the client's
name) so that the answer's calls are named as the client named them."""

from __future__ import annotations

import hashlib
import re

import orjson

from ..errors import InvalidRequest
from . import schema_subset
from .wire.known_tools import KnownTools

_NAME_OK = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_NAME_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_-]")

TOOL_CHOICE = {"auto": "auto", "any": "required", "none": "none"}
# Anthropic server tools (web search, code execution, …) have no function equivalent: dropped.
SERVER_TOOL_PREFIXES = ("web_search_", "web_fetch_", "code_execution_", "bash_", "text_editor_",
                        "memory_", "tool_search_tool_", "computer_")
SCHEMA_DROP = ("$schema", "$id", "$comment")
SCHEMA_DIALECTS = {"json_schema": lambda schema: schema, "gemini": schema_subset.to_gemini}


def upstream_tool_name(name: str) -> str:
    """A name the OpenAI function schema accepts: ≤64 chars of [a-zA-Z0-9_-]."""
    if _NAME_OK.match(name):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{_NAME_BAD_CHARS.sub('_', name)[:55]}_{digest}"


def object_schema(schema) -> dict:
    schema = dict(schema) if isinstance(schema, dict) else {}
    for key in SCHEMA_DROP:
        schema.pop(key, None)
    schema.setdefault("type", "object")
    if schema["type"] == "object":
        schema.setdefault("properties", {})
    return schema


def loaded_tools(messages: list) -> set[str]:
    """Names of the deferred tools the conversation has loaded: each `tool_reference` block in a
    tool result (what Claude Code's ToolSearch returns) names one."""
    loaded = set()
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        for block in content if isinstance(content, list) else ():
            if isinstance(block, dict) and block.get("type") == "tool_result" and isinstance(block.get("content"), list):
                loaded.update(str(b.get("tool_name")) for b in block["content"]
                              if isinstance(b, dict) and b.get("type") == "tool_reference")
    return loaded


# Claude Code sends the same tools on every turn of a session: their conversions are kept, keyed
# by the tools' JSON (about 6 us where converting 20 tools takes 21 us), the oldest dropped first
# once more than CONVERTED_KEPT or more than CONVERTED_BYTES of tools' JSON are kept (a kept
# conversion holds about three times its JSON); tools larger than CONVERTED_ONE are not kept.
_CONVERTED: dict[tuple, tuple[list[dict], dict[str, str]]] = {}
CONVERTED_KEPT = 64
CONVERTED_BYTES = 4 << 20
CONVERTED_ONE = 512 << 10
_KEPT_BYTES = [0]                       # bytes of tools' JSON in _CONVERTED's keys


def convert_tools(tools: list, names: dict[str, str], loaded: set[str] = frozenset(),
                  dialect: str = "json_schema") -> list[dict]:
    """Custom tools as functions (a list shared by every request with the same tools: read only).
    A `defer_loading` tool is offered only once a tool reference in the conversation has loaded it
    (the flag stays set after that), so the placeholder that keeps Claude Code's tool search on
    is never callable."""
    if not tools:
        return []
    key = (tools.raw if type(tools) is KnownTools else orjson.dumps(tools), dialect, frozenset(loaded))
    found = _CONVERTED.get(key)
    if found is None:
        converted: dict[str, str] = {}
        found = (_convert_tools(tools, converted, loaded, dialect), converted)
        if len(key[0]) <= CONVERTED_ONE:
            _CONVERTED[key] = found
            _KEPT_BYTES[0] += len(key[0])
            while len(_CONVERTED) > CONVERTED_KEPT or _KEPT_BYTES[0] > CONVERTED_BYTES:
                oldest = next(iter(_CONVERTED), None)
                if oldest is None or _CONVERTED.pop(oldest, None) is None:
                    break
                _KEPT_BYTES[0] -= len(oldest[0])
    names.update(found[1])
    return found[0]


class Converted(list):
    """A request's tools as functions, shared by the requests that send the same tools (read
    only), and their JSON as orjson writes it (`written`, once flow.proxy.payload wrote it)."""

    __slots__ = ("written",)


def _convert_tools(tools: list, names: dict[str, str], loaded: set[str], dialect: str) -> list[dict]:
    out = Converted()
    for tool in tools:
        if not isinstance(tool, dict) or not tool.get("name"):
            raise InvalidRequest("tools: every tool needs a name")
        kind = tool.get("type")
        if kind not in (None, "custom") and kind.startswith(SERVER_TOOL_PREFIXES):
            continue
        if tool.get("defer_loading") and tool["name"] not in loaded:
            continue
        name = upstream_tool_name(tool["name"])
        names[name] = tool["name"]
        fn = {"name": name, "parameters": SCHEMA_DIALECTS[dialect](object_schema(tool.get("input_schema")))}
        if tool.get("description"):
            fn["description"] = tool["description"]
        out.append({"type": "function", "function": fn})
    out.written = None
    return out


def convert_tool_choice(choice: dict, names: dict[str, str]):
    kind = choice.get("type")
    if kind == "tool":
        name = upstream_tool_name(str(choice.get("name", "")))
        names[name] = str(choice.get("name", ""))
        return {"type": "function", "function": {"name": name}}
    if kind in TOOL_CHOICE:
        return TOOL_CHOICE[kind]
    raise InvalidRequest(f"tool_choice.type: expected auto, any, tool or none, got {kind!r}")
