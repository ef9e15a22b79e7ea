"""HTTP/2 frames as bytes (pure): the frames of one read, merged (`coalesce`) or taken apart
(`data_frames`), and h2's frame buffer with frames that are quick to repr (`Frames`)."""

from __future__ import annotations

import struct

import h2.frame_buffer
import hyperframe.frame

_HEAD = struct.Struct(">IBL")           # a frame header: length (24 bits) and type, flags, stream id (RFC 9113 4.1)
_DATA, _END_STREAM, _PADDED = 0x0, 0x1, 0x8


def coalesce(buffer: bytes, limit: int) -> tuple[bytes, bytes]:
    """The complete frames of `buffer` with each run of unpadded DATA frames of one stream merged
    into one frame of at most `limit` bytes, and the incomplete rest.  DATA frame boundaries carry
    no meaning (RFC 9113 section 8.1: the content is the frames' payloads in order), and a merged
    frame's flow-controlled length is its parts' sum; h2 then parses one frame per stream and read
    instead of one per server-sent event.  Anything else passes through byte for byte."""
    out = []
    run: list[bytes] = []             # payloads of the DATA run being merged
    run_stream = run_size = 0
    position, size = 0, len(buffer)
    unpack = _HEAD.unpack_from
    while size - position >= 9:
        word, flags, stream = unpack(buffer, position)
        length = word >> 8
        start = position + 9
        end = start + length
        if end > size:
            break
        if word & 0xFF == _DATA and not flags & _PADDED and length <= limit:
            stream &= 0x7FFFFFFF
            if run and (stream != run_stream or run_size + length > limit):
                out.append(_frame(run, run_size, run_stream, 0))
                run = []
            if not run:
                run_stream, run_size = stream, 0
            run.append(buffer[start:end])
            run_size += length
            if flags & _END_STREAM:
                out.append(_frame(run, run_size, run_stream, _END_STREAM))
                run = []
        else:
            if run:
                out.append(_frame(run, run_size, run_stream, 0))
                run = []
            out.append(buffer[position:end])
        position = end
    if run:
        out.append(_frame(run, run_size, run_stream, 0))
    return b"".join(out), buffer[position:]


def data_frames(buffer: bytes, limit: int) -> list[tuple[int, bytes]] | None:
    """(stream id, payload) of each frame of `buffer` (complete frames) when all are DATA frames
    without flags (no padding, no END_STREAM) of at most `limit` bytes (the frame size the
    connection takes: a longer one is h2's to refuse); else None."""
    pieces = []
    position, size = 0, len(buffer)
    unpack = _HEAD.unpack_from
    while position < size:
        word, flags, stream = unpack(buffer, position)
        if word & 0xFF != _DATA or flags or word >> 8 > limit:
            return None
        start = position + 9
        position = start + (word >> 8)
        pieces.append((stream & 0x7FFFFFFF, buffer[start:position]))
    return pieces


def _frame(payloads: list[bytes], size: int, stream: int, flags: int) -> bytes:
    return _HEAD.pack(size << 8 | _DATA, flags, stream) + b"".join(payloads)


def _short(frame) -> str:
    return f"{type(frame).__name__}(stream_id={frame.stream_id})"


# Each hyperframe frame class with a short repr.  h2 4.x calls repr() on every frame it receives
# for a trace line that its no-op logger drops: the frame's flags, fields and the first bytes of
# its payload in hex, about 4 us a frame (three frames a streamed answer at the least).
QUIET = {kind: type(kind.__name__, (kind,), {"__repr__": _short})
          for kind in {*hyperframe.frame.FRAMES.values(), hyperframe.frame.ExtensionFrame}}


class Frames(h2.frame_buffer.FrameBuffer):
    """h2's frame buffer, each frame it yields made its class's quiet kind (QUIET: the same class
    but for repr; h2's dispatch table names both, h2connection._H2)."""

    @property
    def in_header_block(self) -> bool:
        """A HEADERS frame without END_HEADERS came, its CONTINUATION not yet: no other frame
        may come before it (RFC 9113 section 6.10)."""
        return bool(self._headers_buffer)

    def __next__(self):
        frame = super().__next__()
        frame.__class__ = QUIET.get(frame.__class__, frame.__class__)
        return frame
