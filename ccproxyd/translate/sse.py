"""Incremental Server-Sent Events decoding (upstream) and encoding (to the client) over bytes."""

from __future__ import annotations

import orjson


class SSEDecoder:
    """Feed raw bytes; get back the `data` payload (bytes) of each complete event, in order.

    Comment lines (`: keep-alive`) and fields other than `data` are skipped; `\\r\\n` and `\\n`
    line endings both work; an event's several data lines are joined with `\\n`.  An event ends
    at a blank line; what follows the last one waits, raw, for the next read.
    """

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        buffer = self._buffer + chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        end = buffer.rfind(b"\n\n")
        if end < 0:
            self._buffer = buffer
            return []
        complete, self._buffer = buffer[:end], buffer[end + 2:]
        if complete.startswith(b"data: ") and complete.count(b"\n") == 2 * complete.count(b"\n\ndata: "):
            return complete[6:].split(b"\n\ndata: ")      # every event one data line: split in C
        out: list[bytes] = []
        for event in complete.split(b"\n\n"):
            if event.startswith(b"data: ") and b"\n" not in event:     # one data line: nearly every event
                out.append(event[6:])
            elif event:
                data = [line[6:] if line.startswith(b"data: ") else line[5:]
                        for line in event.split(b"\n") if line.startswith(b"data:")]
                if data:                         # comments (":…"), event:, id:, retry: carry nothing we use
                    out.append(b"\n".join(data))
        return out

    def close(self) -> list[bytes]:
        """Flush an event left without its trailing blank line at EOF."""
        return self.feed(b"\n\n") if self._buffer.strip() else []


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
