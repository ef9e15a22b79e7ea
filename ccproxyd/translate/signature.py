"""Opaque signatures for thinking blocks that ccproxyd makes, recognisable when Claude Code
replays them (docs/PROTOCOL.md §5.8)."""

from __future__ import annotations

import base64
from functools import lru_cache

import orjson

PREFIX = "ccpx1."


def make(provider: str, upstream_model: str, reasoning: dict | None = None, details: dict | None = None) -> str:
    """`reasoning`: an OpenAI Responses reasoning item (id, encrypted_content, summary); `details`:
    a block's `reasoning_details` items as translate.reasoning_details packs them.  Either is
    carried so that the next turn can hand it back to the model that wrote it."""
    fields: dict = {"p": provider, "m": upstream_model}
    if reasoning:
        fields["r"] = {k: reasoning[k] for k in ("id", "encrypted_content", "summary") if reasoning.get(k) is not None}
    if details:
        fields["d"] = details
    return PREFIX + base64.urlsafe_b64encode(orjson.dumps(fields)).decode().rstrip("=")


@lru_cache(maxsize=256)                 # a model's from the routing table: the same for every answer
def plain(provider: str, upstream_model: str) -> str:
    """`make` without a reasoning item or details."""
    return make(provider, upstream_model)


def is_ours(sig) -> bool:
    return isinstance(sig, str) and sig.startswith(PREFIX)


def decode(sig: str) -> dict | None:
    if not is_ours(sig):
        return None
    raw = sig[len(PREFIX):]
    try:
        return orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        return None


def bound(sig, provider: str, upstream_model: str) -> dict | None:
    """A signature's fields if ccproxyd made it for this provider and model, else None: what a
    model wrote into its reasoning (encrypted, signed) is only read by that model."""
    fields = decode(sig) if is_ours(sig) else None
    if not isinstance(fields, dict) or fields.get("p") != provider or fields.get("m") != upstream_model:
        return None
    return fields


def reasoning_item(sig, provider: str, upstream_model: str) -> dict | None:
    """The Responses reasoning item a signature carries, if the same provider and model wrote it."""
    fields = bound(sig, provider, upstream_model)
    if fields is None:
        return None
    item = fields.get("r")
    if not isinstance(item, dict) or not item.get("encrypted_content"):
        return None
    return {"type": "reasoning", **item, "summary": item.get("summary") or []}


# A provider's signature for a tool call (Gemini's `extra_content.google.thought_signature`,
# https://ai.google.dev/gemini-api/docs/thought-signatures) rides in the tool_use id Claude Code
# echoes back, base64url-encoded after THOUGHT_MARK: ids allow [a-zA-Z0-9_-], and this needs no state.
THOUGHT_MARK = "__ccpxts_"


def tool_id_with_thought(tool_id: str, thought: str) -> str:
    return tool_id + THOUGHT_MARK + base64.urlsafe_b64encode(thought.encode()).decode().rstrip("=")


def split_tool_id(tool_id: str) -> tuple[str, str | None]:
    """(the provider's tool call id, the thought signature it carried, if any)."""
    head, mark, tail = tool_id.partition(THOUGHT_MARK)
    if not mark:
        return tool_id, None
    try:
        return head, base64.urlsafe_b64decode(tail + "=" * (-len(tail) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return tool_id, None                     # not ours after all: the id goes on as it is
