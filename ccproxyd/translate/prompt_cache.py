"""Pure: what the upstream body says to the provider's prompt cache.

Two model flags (config.Model):

- `prompt_cache_key: true` (OpenAI and the servers that copy it): the key is a hash of the shared
  prefix's head, the translated system message (the tool definitions when there is none), so
  every session and subagent that sends the same system prompt is routed to the same cache, not
  one cache per session, and a tool that ToolSearch loads mid-session (appended to the tools) does
  not move the session to another cache.
  OpenAI routes on a hash of the prompt's first ~256 tokens combined with the key, and a
  prefix+key combination that gets more than about 15 requests per minute overflows to other
  machines (https://developers.openai.com/api/docs/guides/prompt-caching; OpenAI staff on the
  ~15 RPM spill-over: https://community.openai.com/t/prompt-cache-routing-the-user-parameter/1267103).
  `KeyHeat` keeps a key under that rate: when a key had more than PER_KEY_RPM requests in the last
  minute, a session is given one of ceil(rate / PER_KEY_RPM) buckets (at most MAX_BUCKETS), chosen
  by a hash of its session id, and the key gets `-<bucket>` appended: a session stays on its
  bucket while the rate holds, and buckets after the first exist only while the key is hot.
- `cache_control: true` (OpenRouter for anthropic/* and google/* models, which cache only what a
  breakpoint marks): Claude Code's `cache_control` breakpoints go upstream in OpenRouter's shape,
  a text part of the message content carrying `cache_control`
  (https://openrouter.ai/docs/features/prompt-caching): one on the system message when a system
  block of the client's carried one, and one on the last user message when the client's last
  message did.  Two breakpoints at most (Anthropic takes four; Gemini uses the last one).
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from typing import Callable

import orjson

PER_KEY_RPM = 15             # OpenAI: about 15 requests per minute per prefix + key combination
MAX_BUCKETS = 8
WINDOW = 60.0                # seconds


def prefix_key(chat: dict) -> str | None:
    """`ccpx-` and 32 hex digits of SHA-256 over the system message's content as it goes upstream,
    in compact JSON (over the tools when there is no system message); None without either."""
    messages = chat.get("messages") or []
    system = messages[0]["content"] if messages and messages[0].get("role") == "system" else None
    head = system if system is not None else chat.get("tools")
    if not head:
        return None
    return f"ccpx-{hashlib.sha256(orjson.dumps(head)).hexdigest()[:32]}"


def _breakpoint(body: dict) -> tuple[dict | None, dict | None]:
    """The client's cache_control on its system prompt (system field or a leading system-role
    message) and on its last message's last block, as given."""
    system = None
    blocks = body.get("system") if isinstance(body.get("system"), list) else []
    for message in body.get("messages") or []:
        if not isinstance(message, dict) or message.get("role") != "system":
            if isinstance(message, dict) and message.get("role") == "assistant":
                break
            continue
        content = message.get("content")
        blocks = [*blocks, *(content if isinstance(content, list) else [])]
    for block in blocks:
        if isinstance(block, dict) and isinstance(block.get("cache_control"), dict):
            system = block["cache_control"]
    last = None
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") != "system"]
    content = messages[-1].get("content") if messages else None
    if isinstance(content, list) and content and isinstance(content[-1], dict) \
            and isinstance(content[-1].get("cache_control"), dict):
        last = content[-1]["cache_control"]
    return system, last


def _marked(message: dict, control: dict) -> dict:
    content = message["content"]
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else [dict(p) for p in content]
    parts[-1]["cache_control"] = {k: v for k, v in control.items() if k in ("type", "ttl")}
    return {**message, "content": parts}


def breakpoints(chat: dict, body: dict) -> None:
    """Claude Code's breakpoints onto the translated messages (in place)."""
    system, last = _breakpoint(body)
    messages = chat["messages"]
    if system is not None and messages and messages[0]["role"] == "system":
        messages[0] = _marked(messages[0], system)
    if last is not None:
        for i in range(len(messages) - 1, 0, -1):
            if messages[i]["role"] == "user" and messages[i].get("content"):
                messages[i] = _marked(messages[i], last)
                break


def apply(chat: dict, body: dict, model) -> None:
    """The model's prompt-cache fields on the translated request (in place)."""
    if model.prompt_cache_key:
        key = prefix_key(chat)
        if key is not None:
            chat["prompt_cache_key"] = key
    if model.cache_control and model.api == "chat_completions":    # OpenRouter's shape is Chat Completions'
        breakpoints(chat, body)


class KeyHeat:
    """Requests per prompt_cache_key in the last minute, in this process, and the bucket a
    session's request goes to (see the module docstring).  No I/O; the clock is injected."""

    def __init__(self, clock: Callable[[], float], per_minute: int = PER_KEY_RPM,
                 max_buckets: int = MAX_BUCKETS) -> None:
        self.clock = clock
        self.per_minute = per_minute
        self.max_buckets = max_buckets
        self.seen: dict[str, deque] = {}

    def buckets(self, key: str) -> int:
        """Counts one request for `key`; the number of buckets its traffic needs now."""
        now = self.clock()
        times = self.seen.setdefault(key, deque())
        while times and times[0] <= now - WINDOW:
            times.popleft()
        times.append(now)
        if len(self.seen) > 4096:                 # forget keys that went quiet
            for stale in [k for k, t in self.seen.items() if not t or t[-1] <= now - WINDOW]:
                del self.seen[stale]
        return min(self.max_buckets, max(1, math.ceil(len(times) / self.per_minute)))

    def spread(self, upstream: dict, session: str | None) -> dict:
        """The upstream body with its prompt_cache_key bucketed when the key is hot (in place)."""
        key = upstream.get("prompt_cache_key")
        if key is None:
            return upstream
        count = self.buckets(key)
        if count > 1:
            bucket = int(hashlib.sha256((session or "").encode()).hexdigest()[:8], 16) % count
            if bucket:
                upstream["prompt_cache_key"] = f"{key}-{bucket}"
        return upstream
