"""Tool lists seen before, known by their bytes (pure: no I/O).

Claude Code sends the same tools in every request of a session (20 tools are 10 KB of JSON; MCP
servers add tens of KB more), after the conversation, in compact JSON.  Parsing them, checking
their shape and looking up their conversion is most of what a short request costs to read.
Once a request's tools passed the shape check, their bytes, written as orjson writes them (and
so as JavaScript's JSON.stringify does), are kept with their parsed value (`KnownTools`: a list
that carries its bytes, by which translate.tools finds its conversion).  A later request whose
bytes hold a known list where its tools are is parsed with that list swapped for a placeholder,
and the known list put in its place.

The placeholder is a string with a random nonce that no client can send: the known list is put
only where the placeholder came out as the body's top-level `tools` (bytes found inside a
message instead leave the request to be parsed whole).  Known lists are shared by every request
that sends them: read only, as translate.tools' conversions are.
"""

from __future__ import annotations

import secrets

import orjson

KEY = b'"tools":['
PREFIX = 64                 # bytes of a list by which its candidates are found
TAIL = 4096                 # bytes after the tools that a request may have (metadata, thinking, …)
SMALLEST = 1024             # bytes of a list worth knowing (below this, parsing costs less than looking)
KEPT = 64                   # lists kept (a few per client: the tools change when an MCP server does)
KEPT_BYTES = 4 << 20        # and their bytes (the parsed lists take about three times as much)
LARGEST = 1 << 20           # bytes of the largest list kept
UNKNOWABLE = 256            # prefixes of lists that could not be learnt, kept so as not to try again


class KnownTools(list):
    """A request's tools, as parsed from `raw` (their bytes as orjson writes them); read only."""

    __slots__ = ("raw",)


class Known:
    """The tool lists this process knows: `parse` a request with them, `learn` from one."""

    def __init__(self) -> None:
        self._lists: dict[bytes, list[KnownTools]] = {}     # by PREFIX, oldest first (dicts keep order)
        self._bytes = 0
        self._longest = 0
        self._unknowable: set[bytes] = set()
        self._placeholder = "\x00ccproxyd-tools-" + secrets.token_hex(16)
        self._written = orjson.dumps(self._placeholder)

    def parse(self, raw: bytes) -> tuple[dict, KnownTools] | None:
        """The body with a placeholder for its tools, and the known list that goes in its place
        (once the body's nesting is checked); None when its tools are not known there (or the
        body is not a JSON object): parse it whole."""
        if not self._lists:
            return None
        at = raw.rfind(KEY, max(0, len(raw) - self._longest - TAIL))
        if at < 0:
            return None
        start = at + len(KEY) - 1
        for tools in self._lists.get(raw[start:start + PREFIX], ()):
            if raw.startswith(tools.raw, start):
                break
        else:
            return None
        try:
            body = orjson.loads(b"".join((raw[:start], self._written, raw[start + len(tools.raw):])))
        except orjson.JSONDecodeError:
            return None
        if not isinstance(body, dict) or body.get("tools") != self._placeholder:
            return None
        self._used(tools)
        return body, tools

    def learn(self, raw: bytes, body: dict) -> None:
        """Keep the tools of a body parsed whole whose shape passed, if `raw` holds them as
        orjson writes them at the last `"tools":` key."""
        tools = body.get("tools")
        if type(tools) is not list or not tools:
            return
        at = raw.rfind(KEY, max(0, len(raw) - LARGEST - TAIL))
        if at < 0:
            return
        start = at + len(KEY) - 1
        prefix = raw[start:start + PREFIX]
        if prefix in self._unknowable:
            return
        written = orjson.dumps(tools)
        if not SMALLEST <= len(written) <= LARGEST or not raw.startswith(written, start):
            if len(self._unknowable) >= UNKNOWABLE:
                self._unknowable.clear()
            self._unknowable.add(prefix)
            return
        known = KnownTools(orjson.loads(written))
        known.raw = written
        self._lists.setdefault(prefix, []).append(known)
        self._bytes += len(written)
        self._longest = max(self._longest, len(written))
        while sum(map(len, self._lists.values())) > KEPT or self._bytes > KEPT_BYTES:
            self._forget_oldest()

    def _used(self, tools: KnownTools) -> None:
        """The list is the newest now (the last of its prefix's lists, its prefix the last)."""
        prefix = tools.raw[:PREFIX]
        lists = self._lists.pop(prefix)
        if lists[-1] is not tools:
            lists.remove(tools)
            lists.append(tools)
        self._lists[prefix] = lists

    def _forget_oldest(self) -> None:
        prefix = next(iter(self._lists))
        lists = self._lists[prefix]
        self._bytes -= len(lists.pop(0).raw)
        if not lists:
            del self._lists[prefix]
        self._longest = max((len(t.raw) for kept in self._lists.values() for t in kept), default=0)
