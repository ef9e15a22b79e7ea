"""Opaque signatures for thinking blocks that ccproxyd makes, recognisable when Claude Code
replays them (PROTOCOL.md §5.8)."""

from __future__ import annotations

import base64

import orjson

PREFIX = "ccpx1."


def make(provider: str, upstream_model: str) -> str:
    payload = orjson.dumps({"p": provider, "m": upstream_model})
    return PREFIX + base64.urlsafe_b64encode(payload).decode().rstrip("=")


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
