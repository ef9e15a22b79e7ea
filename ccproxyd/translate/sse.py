"""Incremental Server-Sent Events decoding (upstream) and encoding (to the client) over bytes."""

from __future__ import annotations

import orjson


class SSEDecoder:
    """Feed raw bytes; get back the `data` payload (bytes) of each complete event, in order.

    Comment lines (`: keep-alive`) and fields other than `data` are skipped; `\\r\\n` and `\\n`
    line endings both work; an event's several data lines are joined with `\\n`.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        buffer = self._buffer + chunk
        lines = buffer.split(b"\n")
        self._buffer = lines.pop()
        out: list[bytes] = []
        data = self._data
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if data:
                    out.append(b"\n".join(data))
                    data.clear()
            elif line.startswith(b"data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(b" ") else value)
            # comments (":…"), event:, id:, retry: lines carry nothing we use
        return out

    def close(self) -> list[bytes]:
        """Flush an event left without its trailing blank line at EOF."""
        tail = self.feed(b"\n\n") if self._buffer or self._data else []
        return tail


# content_block_delta types whose pieces join into one, and the field that carries them
JOINABLE = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "partial_json"}


def coalesce(events: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """The events with each run of deltas of one block and one type joined into one delta: what
    one upstream read brought is written as Anthropic might have chunked it (its deltas vary in
    size), and a burst of 40 chunks costs one encode instead of 40.  A joined delta is a copy."""
    if len(events) < 2:
        return events
    out: list[tuple[str, dict]] = []
    joined: dict | None = None              # the copy that took the deltas after it in
    for event in events:
        name, data = event
        if name == "content_block_delta" and out and out[-1][0] == "content_block_delta":
            last = out[-1][1]
            kind = data["delta"]["type"]
            field = JOINABLE.get(kind)
            if field is not None and last["index"] == data["index"] and last["delta"]["type"] == kind:
                if last is not joined:
                    last = joined = {"type": "content_block_delta", "index": last["index"], "delta": dict(last["delta"])}
                    out[-1] = (name, last)
                last["delta"][field] += data["delta"][field]
                continue
        out.append(event)
    return out


def encode(events: list[tuple[str, dict]]) -> bytes:
    """Anthropic-style SSE: each event has an `event:` line equal to its JSON `type`."""
    return b"".join(b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
                    for name, data in events)
