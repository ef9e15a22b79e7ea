"""`transfer-encoding: chunked`, decoded incrementally (pure: bytes in, body bytes out).

One step per whole chunk found in a read; a chunk split across reads is carried over.  The grammar
is h11's (_abnf.py): chunk-size = 1*HEXDIG (h11 allows at most 20), then chunk extensions, which
are skipped; Python's int() is laxer ("-3", "0x3", "1_0", " 3"), so sizes are matched first."""

from __future__ import annotations

import re

import httpx2

from ..observe.redact import shown

MAX_LINE = 4096         # bytes of a chunk-size or trailer line
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;.*)?")


class ChunkedDecoder:
    """Incremental `transfer-encoding: chunked` decoding; `done` once the last chunk is read."""

    def __init__(self) -> None:
        self._buffer = b""
        self._left = 0              # body bytes still due in the current chunk
        self._crlf = False          # the CRLF after a chunk's data is still due
        self._trailers = False      # reading trailer lines after the last chunk
        self.done = False

    def feed(self, data: bytes) -> bytes:
        buffer = self._buffer + data if self._buffer else data
        out: list[bytes] = []
        position = 0
        if not (self._left or self._crlf or self._trailers):
            position = _whole_chunks(buffer, out)
        while not self.done:
            if self._left:
                piece = buffer[position:position + self._left]
                out.append(piece)
                self._left -= len(piece)
                position += len(piece)
                if self._left:
                    break
                self._crlf = True
                continue
            end = buffer.find(b"\r\n", position)
            if end >= 0 and not self._crlf and not self._trailers:
                line = buffer[position:end]
                size = _SIZES.get(line)
                if size is None:
                    size = _chunk_size(line)
                start = end + 2
                if size and buffer[start + size:start + size + 2] == b"\r\n":     # a whole chunk: one step
                    out.append(buffer[start:start + size])
                    position = start + size + 2
                    continue
                self._left = size
                self._trailers = size == 0
                position = start
                continue
            if end < 0:
                if len(buffer) - position > MAX_LINE:
                    raise httpx2.RemoteProtocolError("malformed chunked body: a line longer than "
                                                     f"{MAX_LINE} bytes")
                break
            line = buffer[position:end]
            position = end + 2
            if self._crlf:
                self._crlf = False
                if line:
                    raise httpx2.RemoteProtocolError("malformed chunked body: no CRLF after a chunk")
            else:                               # a trailer line (size lines are read above)
                self.done = not line
        self._buffer = buffer[position:]
        return b"".join(out)

    @property
    def surplus(self) -> bool:
        """Bytes received past the end of the body: the connection must not be reused."""
        return self.done and bool(self._buffer)


def _whole_chunks(buffer: bytes, out: list[bytes]) -> int:
    """The data of the whole chunks at the start of `buffer`, appended to `out`; returns where
    they end.  What an SSE stream sends (a chunk an event, no CRLF in the data), taken by splitting
    at every CRLF: the parts pair up as size line and data for as long as each size line is one
    seen before (_SIZES) that gives its data's length; the first pair that does not (a data with
    a CRLF in it, the last chunk, one cut by the read, a new size) is read by the loop in `feed`."""
    parts = buffer.split(b"\r\n")
    lines, datas = parts[0:-1:2], parts[1:-1:2]        # each followed by a CRLF (the last part is not)
    sizes, lengths = list(map(_SIZES.get, lines)), list(map(len, datas))
    whole = 0
    for size, length in zip(sizes, lengths):
        if size != length or not size:
            break
        whole += 1
    if not whole:
        return 0
    out += datas[:whole]
    return sum(lengths[:whole]) + sum(map(len, lines[:whole])) + 4 * whole


def _chunk_size(line: bytes) -> int:
    match = _CHUNK_SIZE.fullmatch(line)
    if match is None:
        raise httpx2.RemoteProtocolError(f"malformed chunk size line {shown(line, 40)!r}")
    size = int(match.group(1), 16)
    if len(_SIZES) < 4096:
        _SIZES[line] = size
    return size


_SIZES: dict[bytes, int] = {}       # chunk-size lines seen, checked: an SSE stream repeats a few hundred
