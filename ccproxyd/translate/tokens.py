"""Token counting with tiktoken encodings shipped as package data (no network, SHA256-checked)."""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from importlib import resources

import orjson
import tiktoken

from ..errors import EncodingError

# Split patterns copied from tiktoken_ext.openai_public (data, not code to fetch).
_PATTERNS = {
    "o200k_base": "|".join([
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]),
    "cl100k_base": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
}
_SPECIAL = {
    "o200k_base": {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
    "cl100k_base": {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                    "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276},
}
IMAGE_TOKENS = 1600          # Anthropic's rough cost of one ~1.15 MP image
MESSAGE_OVERHEAD = 3


_LOADED: dict[str, tiktoken.Encoding] = {}
_LOADING = threading.Lock()


def encoding(name: str = "o200k_base") -> tiktoken.Encoding:
    """The encoding, loaded the first time something counts (about 45 MB for o200k_base, in
    0.3 to 0.5 s): callers on the event loop count in a thread.  Loaded once, whichever thread
    asks first."""
    found = _LOADED.get(name)
    if found is None:
        with _LOADING:
            found = _LOADED.get(name)
            if found is None:
                found = _LOADED[name] = _load(name)
    return found


def _load(name: str) -> tiktoken.Encoding:
    if name not in _PATTERNS:
        raise EncodingError(f"unknown encoding {name!r} (bundled: {', '.join(_PATTERNS)})")
    data = resources.files("ccproxyd").joinpath("data")
    raw = data.joinpath(f"{name}.tiktoken").read_bytes()
    sums = dict(reversed(line.split()) for line in data.joinpath("SHA256SUMS").read_text().splitlines() if line)
    digest = hashlib.sha256(raw).hexdigest()
    if sums.get(f"{name}.tiktoken") != digest:
        raise EncodingError(f"ccproxyd/data/{name}.tiktoken: SHA256 {digest} does not match SHA256SUMS")
    ranks = {base64.b64decode(tok): int(rank) for tok, rank in (line.split() for line in raw.splitlines() if line)}
    enc = tiktoken.Encoding(name=name, pat_str=_PATTERNS[name], mergeable_ranks=ranks,
                            special_tokens=_SPECIAL[name])
    # The Rust core has its own copy of the ranks; tiktoken keeps the Python dict only to pickle
    # the Encoding, which ccproxyd never does.  Dropping it frees about 27 MB for o200k_base.
    enc._mergeable_ranks = {}
    return enc


def _source_texts(source) -> tuple[list[str], int]:
    """A document's source: its text (plain or content blocks), else one page-image's worth."""
    source = source if isinstance(source, dict) else {}
    if source.get("type") == "text":
        return [str(source.get("data", ""))], 0
    if source.get("type") == "content":
        return _texts(source.get("content"))
    return [], 1


# Block type -> the text it is billed for (every billed kind; images and PDFs count as images).
BLOCK_TEXT = {
    "text": lambda b: [str(b.get("text", ""))],
    "thinking": lambda b: [str(b.get("thinking", ""))],
    "redacted_thinking": lambda b: [str(b.get("data", ""))],
    "tool_use": lambda b: [str(b.get("name", "")), orjson.dumps(b.get("input", {})).decode()],
    "server_tool_use": lambda b: [str(b.get("name", "")), orjson.dumps(b.get("input", {})).decode()],
    "tool_reference": lambda b: [str(b.get("tool_name", ""))],
    "search_result": lambda b: [str(b.get("title", "")), str(b.get("source", ""))],
    "web_search_tool_result": lambda b: [orjson.dumps(b.get("content")).decode()],
}
NESTED = ("tool_result", "mid_conv_system", "search_result")     # blocks that hold content blocks


def _texts(content) -> tuple[list[str], int]:
    """Text pieces and image count of a content value (string or block list), recursively."""
    if isinstance(content, str):
        return [content], 0
    texts: list[str] = []
    images = 0
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        texts += BLOCK_TEXT.get(kind, lambda b: [])(block)
        if kind == "image":
            images += 1
        elif kind == "document":
            sub, n = _source_texts(block.get("source"))
            texts, images = texts + sub, images + n
        if kind in NESTED:
            sub, n = _texts(block.get("content"))
            texts, images = texts + sub, images + n
    return texts, images


def count_request(body: dict, encoding_name: str = "o200k_base") -> int:
    """Estimated input tokens of an Anthropic request: system + tools + messages."""
    enc = encoding(encoding_name)
    texts, images = _texts(body.get("system"))
    n_messages = 0
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            sub, n = _texts(message.get("content"))
            texts += sub
            images += n
            n_messages += 1
    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            texts.append(orjson.dumps({k: tool.get(k) for k in ("name", "description", "input_schema")}).decode())
    tokens = sum(len(t) for t in enc.encode_ordinary_batch(texts)) if texts else 0
    return tokens + images * IMAGE_TOKENS + n_messages * MESSAGE_OVERHEAD


# What `upper_bound` adds for each mark it finds in the raw JSON: an image, or a document counted
# as an image, is IMAGE_TOKENS however few bytes it takes; a tool is counted from its name,
# description and input_schema re-serialised, and the keys a client left out come back as
# `"description":null` and `"input_schema":null` (36 bytes, fewer tokens), found by its `"name"`.
_MARKS = re.compile(rb'"(?:image|document|name)"')
MARK_TOKENS = {b'"image"': IMAGE_TOKENS, b'"document"': IMAGE_TOKENS, b'"name"': 48}


def upper_bound(raw: bytes) -> int:
    """A bound no lower than `count_request` of the request whose JSON is `raw`, from its bytes
    alone (one scan: 58 us for 120 KB, about an orjson.loads of it, where the count takes 15 to
    30 ms; measured 2026-12-07 on the project's 2-core VM): every o200k token stands for at
    least one byte of the text it encodes, a text is no longer than its JSON spelling, and the
    marks (MARK_TOKENS) cover what is counted beyond the bytes."""
    return len(raw) + sum(MARK_TOKENS[mark] for mark in _MARKS.findall(raw))


def shaped_bound(size: int, tools: int, media: int) -> int:
    """upper_bound without a scan, from what the shape check counted (translate.wire.messages:
    `media`, the image and document blocks, and the request's `tools`): its bytes, MARK_TOKENS'
    tokens a tool and IMAGE_TOKENS a medium.  No lower than count_request, for the same reasons
    and on the same terms: the values count_request writes again (tool inputs and schemas) come
    back no longer than the client wrote them, which holds for JSON from JavaScript and nearly so
    from Python (1e-05 comes back as 0.00001); a request built to defeat it (floats such as 1e15,
    lists where Anthropic takes strings) reaches its provider, whose overflow error is answered
    as the same 400."""
    return size + MARK_TOKENS[b'"name"'] * tools + IMAGE_TOKENS * media


# upper_bound adds at most 48 tokens for a 6-byte `"name"`: 9 tokens a byte in all, images aside
BOUND_PER_BYTE = 1 + MARK_TOKENS[b'"name"'] // len(b'"name"')


def input_bound(raw: bytes, room: int) -> int:
    """A bound no lower than upper_bound's, made as cheaply as tells whether the request fits in
    `room` tokens: BOUND_PER_BYTE tokens a byte, unscanned, when that fits and no image or
    document is in the request (most requests are far from their window); else upper_bound's one
    scan (the media check costs as much again on a long request: 125 us for 125 KB)."""
    rough = len(raw) * BOUND_PER_BYTE
    if rough <= room and b'"image"' not in raw and b'"document"' not in raw:
        return rough
    return upper_bound(raw)


def count_text(text: str, encoding_name: str = "o200k_base") -> int:
    """Tokens of a plain text (an answer ccproxyd counts itself because the upstream did not)."""
    return len(encoding(encoding_name).encode_ordinary(text)) if text else 0
