"""The chunks of a stream that carry only text, known by their bytes (pure: no I/O).

Most chunks of an answer carry only text (`plain_text`), and a provider writes them alike within
a stream: the same bytes before the text's JSON string and after it.  `TextChunks` learns those
bytes from one such chunk, and then reads the text of a chunk that has them from its string
alone, without parsing the rest of the chunk (a chunk parsed and checked costs about three times
that).

Why a chunk with the learnt bytes is a plain text chunk with that text: the bytes before the
string end where a value may start, and a JSON string is one token, so any string between them
parses to the learnt chunk with only that value changed; the learning checks, by parsing the
learnt bytes around a probe string, that this value is the one `plain_text` returns.  A string
that is empty, or that is not exactly one JSON string, is not read here: the chunk is parsed.
"""

from __future__ import annotations

import sys

import orjson

_PROBE = "\x01probe\x02"        # a text no chunk is expected to carry (any non-empty one would do)
MAX_TRIES = 3                   # learnings a stream: the first text chunk may differ (a role in it)


def plain_text(chunk: dict) -> str | None:
    """The text of a chunk that carries nothing else (most chunks of an answer: one choice, a
    delta whose only other values are its role or empty, no finish reason, usage or error): what
    StreamTranslator.feed would only add to the open text block.  None for any other chunk."""
    choices = chunk.get("choices")
    if (not isinstance(choices, list) or len(choices) != 1 or chunk.get("usage") or chunk.get("error")
            or chunk.get("object") == "error"):
        return None
    choice = choices[0]
    if not isinstance(choice, dict) or choice.get("index", 0) != 0 or choice.get("finish_reason") or choice.get("usage"):
        return None
    delta = choice.get("delta")
    text = delta.get("content") if isinstance(delta, dict) else None
    if not isinstance(text, str) or not text:
        return None
    for key, value in delta.items():
        if value and key != "content" and key != "role":
            return None
    return text


class TextChunks:
    """One stream's text chunks by their bytes: `learn` from a chunk `plain_text` read, then
    `text` of a data line (None: parse it)."""

    __slots__ = ("before", "after", "least", "tries")

    def __init__(self) -> None:
        self.before = self.after = b""
        self.least = sys.maxsize        # the learnt bytes and a string ("x"): a shorter line is not one
        self.tries = MAX_TRIES          # a provider whose chunks differ (e.g. OpenAI's `obfuscation`
                                        # padding) costs a few learnings a stream, then no more

    def text(self, data: bytes) -> str | None:
        if len(data) < self.least or not data.startswith(self.before) or not data.endswith(self.after):
            return None
        try:
            text = orjson.loads(data[len(self.before):len(data) - len(self.after)])
        except orjson.JSONDecodeError:
            return None
        return text if type(text) is str and text else None

    def learn(self, data: bytes, text: str) -> None:
        """From a data line whose chunk `plain_text` read as `text` (a text chunk `text` did not
        know), MAX_TRIES times a stream.  The string is found as orjson writes it, once in the
        line; a provider that writes it otherwise is not learnt."""
        if not self.tries:
            return
        self.tries -= 1
        written = orjson.dumps(text)
        at = data.find(written)
        if at < 0 or data.find(written, at + 1) >= 0:
            return
        before, after = data[:at], data[at + len(written):]
        try:
            probe = orjson.loads(before + orjson.dumps(_PROBE) + after)
        except orjson.JSONDecodeError:
            return
        if isinstance(probe, dict) and plain_text(probe) == _PROBE:
            self.before, self.after = before, after
            self.least = len(before) + len(after) + 3
