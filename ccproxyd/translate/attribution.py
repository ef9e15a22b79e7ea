"""Pure: Claude Code's attribution line, read for the access line and taken out of the prompt.

Claude Code (2.1.69 and later) puts one line first in its system prompt:

    x-anthropic-billing-header: cc_version=2.1.332.45d; cc_entrypoint=sdk-cli;

(some builds add `cch=<5 hex>;`, which changes on every request).  The three hex characters after
the version are a hash of the conversation's first user message, so every session and every
subagent starts its prompt with other bytes, and no provider can serve one session's system
prompt and tools from the prompt cache another session filled.  Anthropic's gateway protocol
reference lets a gateway consume this block rather than forward it
(https://code.claude.com/docs/en/llm-gateway-protocol, "System prompt attribution block");
Claude Code's own switch is the client variable CLAUDE_CODE_ATTRIBUTION_HEADER=0
(https://github.com/motiful/cc-cache-audit, which also shows the hash's inputs).

`read(body)` finds the line (None when there is none); `strip(body)` returns the body without
that line and nothing else: a system block that holds only the line goes, a block (or a string
system prompt) that holds more keeps the rest byte for byte.  A model with `attribution: keep`
gets the line as Claude Code sent it (config.Model.attribution).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

PREFIX = "x-anthropic-billing-header:"
# `key=value;` pairs; values are short tokens (versions, entry points, hashes)
_PAIR = re.compile(r"\s*([a-z_]+)=([^;\s]*);")
MAX_LINE = 300                      # longer than any real attribution line: not one


@dataclass(frozen=True)
class Attribution:
    cc_version: str | None          # "2.1.332" (the hash of the first message left off)
    cc_entrypoint: str | None       # cli, sdk-cli, claude-vscode, ...
    fields: tuple[tuple[str, str], ...]


def parse(line: str) -> Attribution | None:
    """The attribution in one line, or None when the line is not exactly one."""
    if not line.startswith(PREFIX) or len(line) > MAX_LINE:
        return None
    return _parse(line)


@lru_cache(maxsize=256)                 # read once for the request and once for its translation
def _parse(line: str) -> Attribution | None:
    rest = line[len(PREFIX):]
    fields, end = [], 0
    for match in _PAIR.finditer(rest):
        if match.start() != end:
            return None
        fields.append((match.group(1), match.group(2)))
        end = match.end()
    if rest[end:].strip() or not fields:
        return None
    found = dict(fields)
    version = found.get("cc_version")
    if version is not None and re.fullmatch(r"\d+\.\d+\.\d+\.[0-9a-fA-F]{3}", version):
        version = version.rsplit(".", 1)[0]              # the per-conversation hash is not a version
    return Attribution(cc_version=version[:40] if version else None,
                       cc_entrypoint=(found.get("cc_entrypoint") or None) and found["cc_entrypoint"][:40],
                       fields=tuple(fields))


def _split(text: str) -> tuple[Attribution | None, str]:
    """(the attribution on the text's first line, the text without that line)."""
    if not text.startswith(PREFIX):
        return None, text
    line, newline, rest = text.partition("\n")
    found = parse(line.rstrip("\r"))
    return (found, rest) if found is not None else (None, text)


def _first_text(body: dict):
    """(where, text) of the system prompt's first text: the `system` string, or its first block."""
    system = body.get("system")
    if isinstance(system, str):
        return "string", system
    if isinstance(system, list) and system and isinstance(system[0], dict) and system[0].get("type") == "text" \
            and isinstance(system[0].get("text"), str):
        return "block", system[0]["text"]
    return None, ""


def read(body: dict) -> Attribution | None:
    return _split(_first_text(body)[1])[0]


def strip(body: dict) -> dict:
    """The body without the attribution line (the same object when it has none)."""
    where, text = _first_text(body)
    found, rest = _split(text)
    if found is None:
        return body
    if where == "string":
        return {**body, "system": rest}
    system = body["system"]
    if rest:
        return {**body, "system": [{**system[0], "text": rest}, *system[1:]]}
    return {**body, "system": system[1:]}
