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
OpenAI pads each chunk with a last member of random length (`obfuscation`, against inferring the
text from the chunk's size): its value is a second string, checked as the text is, which
`plain_text` never reads.
"""

from __future__ import annotations

import sys

import orjson

_PROBE = "\x01probe\x02"        # a text no chunk is expected to carry (any non-empty one would do)
MAX_TRIES = 3                   # learnings a stream: the first text chunk may differ (a role in it)
PADDING = b',"obfuscation":'    # OpenAI's last member of a chunk: padding that hides the text's length


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
    `text` of a data line (None: parse it).  A chunk that ends with OpenAI's `obfuscation`
    member (random padding, a new string each chunk) is learnt up to it, and read from its two
    strings: its text and its padding, each checked to be one JSON string."""

    __slots__ = ("before", "after", "padded", "least", "tries")

    def __init__(self) -> None:
        self.before = self.after = b""
        self.padded = False             # `after` ends at the padding's value (PADDING), then "}"
        self.least = sys.maxsize        # the learnt bytes and a string ("x"): a shorter line is not one
        self.tries = MAX_TRIES          # a provider whose chunks differ otherwise costs a few learnings
                                        # a stream, then no more

    def text(self, data: bytes) -> str | None:
        if len(data) < self.least or not data.startswith(self.before):
            return None
        if self.padded:
            end = data.find(self.after, len(self.before))
            if end < 0 or not data.endswith(b"}") or not _one_string(data[end + len(self.after):-1]):
                return None
        elif data.endswith(self.after):
            end = len(data) - len(self.after)
        else:
            return None
        try:
            text = orjson.loads(data[len(self.before):end])
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
        padding = after.rfind(PADDING)
        padded = padding >= 0 and after.endswith(b"}") and _one_string(after[padding + len(PADDING):-1])
        if padded:
            after = after[:padding + len(PADDING)]
        try:                            # a probe text (and padding) where they were: read back as its text?
            probe = orjson.loads(before + orjson.dumps(_PROBE) + after + (b'"pad"}' if padded else b""))
        except orjson.JSONDecodeError:
            return
        if isinstance(probe, dict) and plain_text(probe) == _PROBE:
            self.before, self.after, self.padded = before, after, padded
            self.least = len(before) + len(after) + 3 + (3 if padded else 0)


def _one_string(value: bytes) -> bool:
    try:
        return type(orjson.loads(value)) is str
    except orjson.JSONDecodeError:
        return False
