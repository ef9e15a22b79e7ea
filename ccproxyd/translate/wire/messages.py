"""The shape of an Anthropic Messages request, checked before anything else reads it.

Pure (no I/O).  `check_body(raw)` parses the bytes and bounds their nesting; `validate(body)` and
`validate_count(body)` walk the fields that ccproxyd reads and raise InvalidRequest naming the
field and what it must be, so that no odd value reaches translation as a 500.  Fields ccproxyd
does not read pass through unchecked, as Anthropic's own API accepts new fields over time.
"""

from __future__ import annotations

import orjson

from ...errors import InvalidRequest
from .known_tools import Known, KnownTools

WRITE_LIMIT = 254            # the deepest orjson writes (it refuses 255 levels; it reads 1024)
HEADROOM = 4                 # levels translation may put above a client's value (a tool's schema
                             # goes under function.parameters), so that what it writes stays written
MAX_NESTING = WRITE_LIMIT - HEADROOM     # levels of arrays and objects in a request body


KNOWN_TOOLS = Known()        # this process's tool lists, known by their bytes


def read(raw: bytes) -> tuple[dict, int]:
    """A /v1/messages body, parsed (check_body) and checked (validate), and its image and document
    blocks; its tools are known by their bytes from now on."""
    body = check_body(raw)
    media = validate(body)
    KNOWN_TOOLS.learn(raw, body)
    return body, media


def check_body(raw: bytes) -> dict:
    """The request body as a dict, at most MAX_NESTING levels deep.  Tools known by their bytes
    are not parsed again (known_tools): their nesting was checked when they were learnt."""
    known = KNOWN_TOOLS.parse(raw)
    if known is not None:
        body, tools = known
        if not _within(body):
            raise InvalidRequest(f"request body is nested more than {MAX_NESTING} levels deep")
        body["tools"] = tools
        return body
    try:
        body = orjson.loads(raw or b"")
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    if not _within(body):
        raise InvalidRequest(f"request body is nested more than {MAX_NESTING} levels deep")
    return body


def _within(body: dict) -> bool:
    """Whether no array or object lies more than MAX_NESTING levels deep: orjson (in C, a quarter
    of a walk in Python) writes the body under HEADROOM levels, or refuses it."""
    wrapped = body
    for _ in range(HEADROOM):
        wrapped = [wrapped]
    try:
        orjson.dumps(wrapped)
    except TypeError as exc:            # a parsed body holds JSON values only: depth is the one way
        if not deeper_than_written(exc):
            raise
        return False
    return True


def deeper_than_written(exc: TypeError) -> bool:
    """Whether orjson refused to write a value for its depth (its other TypeError: not JSON)."""
    return "Recursion limit" in str(exc)


def _kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _fail(field: str, wanted: str, value) -> InvalidRequest:
    return InvalidRequest(f"{field}: must be {wanted}, got {_kind(value)}")


def _is_str(value) -> bool:
    return isinstance(value, str)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _optional(body: dict, field: str, ok, wanted: str, where: str = "", null_ok: bool = True) -> None:
    """A field that may be absent (or null, when `null_ok`), and otherwise must pass `ok`."""
    if field in body and not (null_ok and body[field] is None) and not ok(body[field]):
        raise _fail(f"{where}{field}", wanted, body[field])


# What each content block field must be, by block type (the fields translation reads): the
# types it may have, and the words an error says.
BLOCK_FIELDS: dict[str, tuple[tuple[str, tuple, str], ...]] = {
    "text": (("text", (str,), "a string"),),
    "thinking": (("thinking", (str,), "a string"),
                 ("signature", (str,), "a string")),
    "redacted_thinking": (("data", (str,), "a string"),),
    "tool_use": (("id", (str,), "a string"), ("name", (str,), "a string"),
                 ("input", (dict,), "an object")),
    "tool_result": (("tool_use_id", (str,), "a string"),
                    ("is_error", (bool,), "a boolean")),
    "image": (("source", (dict,), "an object"),),
    "document": (("source", (dict,), "an object"),
                 ("title", (str,), "a string")),
}
NESTED = frozenset(("tool_result", "mid_conv_system"))   # blocks whose `content` is content again
# blocks that tokens.count_request counts IMAGE_TOKENS for, whatever their bytes (an image, a
# document), or that may hold such blocks where this check does not look (a search result)
MEDIA = ("image", "document")
HOLDS_MEDIA = frozenset((*MEDIA, "search_result"))
COUNTED = HOLDS_MEDIA | set(NESTED)                  # the kinds whose media _media_in finds
_ABSENT = object()


def _content(content, where) -> int:
    """A message's (or a tool result's) content: a string or an array of typed blocks.  `where`
    is the field's path, a tuple, made into text only for an error (this runs for every block of
    every request).  Returns the image and document blocks in it, nested ones too: what a bound
    on its tokens needs beside its bytes (tokens.shaped_bound)."""
    if isinstance(content, str):
        return 0
    if not isinstance(content, list):
        raise _fail(_path(where), "a string or an array of content blocks", content)
    media = 0
    for j, block in enumerate(content):
        if not isinstance(block, dict):
            raise _fail(_path(where, j), "a content block object", block)
        kind = block.get("type")
        if not isinstance(kind, str):
            raise _fail(_path(where, j, "type"), "a string", kind)
        if kind == "text":                      # most blocks: its one field, without the loop
            if not isinstance(block.get("text", ""), str):
                raise _fail(_path(where, j, "text"), "a string", block["text"])
            continue
        for field, types, wanted in BLOCK_FIELDS.get(kind, ()):
            value = block.get(field, _ABSENT)
            if value is not _ABSENT and not isinstance(value, types):
                raise _fail(_path(where, j, field), wanted, value)
        if kind in NESTED:
            if block.get("content") is not None:
                media += _content(block["content"], (*where, j, "content"))
        elif kind in HOLDS_MEDIA:
            source = block.get("source")
            if kind in MEDIA and isinstance(source, dict):      # what translation reads of a source
                for key in ("type", "media_type", "url"):
                    _optional(source, key, _is_str, "a string", _path(where, j, "source") + ".")
            media += _media_in(block)
    return media


def _media_in(value) -> int:
    """Image and document blocks anywhere in `value`, unchecked (a document's content source, a
    search result's content, a system prompt's blocks); counting too many only loosens the bound."""
    if isinstance(value, list):
        return sum(_media_in(item) for item in value)
    if isinstance(value, dict):
        return (value.get("type") in MEDIA) + sum(_media_in(item) for item in value.values()
                                                  if isinstance(item, (list, dict)))
    return 0


def _path(where: tuple, *more) -> str:
    return ".".join(str(part) for part in (*where, *more))


def _objects(value, field: str, what: str):
    """(index, item) of an array whose every item must be an object."""
    if not isinstance(value, list):
        raise _fail(field, f"an array of {what}s", value)
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise _fail(f"{field}.{i}", f"a {what} object", item)
        yield i, item


def _system(system) -> int:
    if system is None or isinstance(system, str):
        return 0
    if not isinstance(system, list):
        raise _fail("system", "a string or an array of text blocks", system)
    media = 0
    for i, block in _objects(system, "system", "text block"):
        kind = block.get("type")
        if kind is not None and not isinstance(kind, str):
            raise _fail(f"system.{i}.type", "a string", kind)
        text = block.get("text")
        if text is not None and not isinstance(text, str):
            raise _fail(f"system.{i}.text", "a string", text)
        if kind in COUNTED:                             # not a system block, but counted if sent
            media += _media_in(block)
    return media


def _messages(messages) -> int:
    if messages is None:
        raise InvalidRequest("messages: field required (an array of messages)")
    if not isinstance(messages, list):
        raise _fail("messages", "an array of messages", messages)
    media = 0
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _fail(f"messages.{i}", "a message object", message)
        role = message.get("role")
        if role not in ("user", "assistant", "system"):
            raise InvalidRequest(f"messages.{i}.role: must be 'user' or 'assistant', got {role!r}"[:300])
        if "content" not in message:
            raise InvalidRequest(f"messages.{i}.content: field required")
        media += _content(message["content"], ("messages", i, "content"))
    return media


def _tools(tools) -> None:
    if tools is None or type(tools) is KnownTools:      # known lists passed when they were learnt
        return
    for i, tool in _objects(tools, "tools", "tool"):
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise _fail(f"tools.{i}.name", "a non-empty string", tool.get("name"))
        for field, kind, wanted in TOOL_FIELDS:      # as _optional, the name formatted only for an error
            value = tool.get(field)
            if value is not None and not isinstance(value, kind):
                raise _fail(f"tools.{i}.{field}", wanted, value)


TOOL_FIELDS = (("type", str, "a string"), ("description", str, "a string"), ("input_schema", dict, "an object"))


TOP_LEVEL: tuple[tuple[str, object, str], ...] = (
    ("stream", lambda v: isinstance(v, bool), "a boolean"),
    ("temperature", _is_number, "a number"),
    ("top_p", _is_number, "a number"),
    ("top_k", _is_int, "an integer"),
    ("stop_sequences", lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v), "an array of strings"),
    ("tool_choice", lambda v: isinstance(v, dict) and isinstance(v.get("type"), str), "an object with a string type"),
    ("metadata", lambda v: isinstance(v, dict) and (v.get("user_id") is None or isinstance(v["user_id"], str)),
     "an object whose user_id is a string"),
    ("thinking", lambda v: isinstance(v, dict) and isinstance(v.get("type"), str)
     and (v.get("budget_tokens") is None or _is_int(v["budget_tokens"])),
     "an object with a string type and an integer budget_tokens"),
    ("output_config", lambda v: isinstance(v, dict), "an object"),
    ("output_format", lambda v: isinstance(v, dict), "an object"),
    ("service_tier", _is_str, "a string"),
)


THREAD_KEYS = {"create": ("type",), "continue": ("type", "previous_message_id")}


def _thread(body: dict) -> None:
    """`thread` (beta message-threads-2026-08-12): {"type": "create"}, or {"type": "continue",
    "previous_message_id": "msg_…"} without `system` and `tools`, which the thread keeps."""
    thread = body.get("thread")
    if thread is None:
        return
    if not isinstance(thread, dict):
        raise _fail("thread", "an object", thread)
    kind = thread.get("type")
    if kind not in THREAD_KEYS:
        raise InvalidRequest(f"thread.type: must be 'create' or 'continue', got {kind!r}"[:300])
    for key in thread:
        if key not in THREAD_KEYS[kind]:
            raise InvalidRequest(f"thread.{key}: not a field of a thread of type {kind!r}"[:300])
    if kind == "continue":
        previous = thread.get("previous_message_id")
        if previous is None:
            raise InvalidRequest("thread.previous_message_id: field required (a string) with type 'continue'")
        if not isinstance(previous, str) or not previous:
            raise _fail("thread.previous_message_id", "a non-empty string", previous)
        for field in ("system", "tools"):
            if body.get(field) is not None:
                raise InvalidRequest(f"{field}: must not be sent with thread.type 'continue': the thread keeps "
                                     f"the {field} it was created with")


def validate(body: dict) -> int:
    """A /v1/messages body: the fields every request needs, and the types of those ccproxyd reads.
    Returns the image and document blocks in it (validate_count)."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise (_fail("model", "a non-empty string", body["model"]) if body.get("model") is not None
               else InvalidRequest("model: field required (a string)"))
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise InvalidRequest("max_tokens: field required (an integer >= 0)")
    if not _is_int(max_tokens) or max_tokens < 0:
        raise _fail("max_tokens", "an integer >= 0", max_tokens) if not _is_int(max_tokens) else \
            InvalidRequest(f"max_tokens: must be an integer >= 0, got {max_tokens}")
    media = validate_count(body)
    for field, ok, wanted in TOP_LEVEL:
        if field in body:
            _optional(body, field, ok, wanted)
    _thread(body)
    return media


def validate_count(body: dict) -> int:
    """A /v1/messages/count_tokens body: model, messages, system and tools.  Returns the image and
    document blocks in its system and messages (wherever tokens.count_request counts one), for
    tokens.shaped_bound."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequest("model: field required (a string)")
    media = _messages(body.get("messages"))
    media += _system(body.get("system"))
    _tools(body.get("tools"))
    return media
