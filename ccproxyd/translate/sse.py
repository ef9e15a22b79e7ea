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
    size), and a burst of 40 chunks is one event to encode and send.  A run's delta is a copy."""
    if len(events) < 2:
        return events
    out: list[tuple[str, dict]] = []
    run: dict | None = None                 # the delta the following ones join
    kind = field = index = None
    for event in events:
        if event[0] == "content_block_delta":
            data = event[1]
            delta = data["delta"]
            if run is not None and delta["type"] == kind and data["index"] == index:
                run[field] += delta[field]
                continue
            field = JOINABLE.get(delta["type"])
            if field is not None:
                kind, index, run = delta["type"], data["index"], dict(delta)
                out.append(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": run}))
                continue
        run = None
        out.append(event)
    return out


def encode(events: list[tuple[str, dict]]) -> bytes:
    """Anthropic-style SSE: each event has an `event:` line equal to its JSON `type`."""
    return b"".join(b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
                    for name, data in events)
