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


def encode(events: list[tuple[str, dict]]) -> bytes:
    """Anthropic-style SSE: each event has an `event:` line equal to its JSON `type`."""
    return b"".join(b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
                    for name, data in events)
