"""HPACK for a client whose requests repeat their headers: the header block is encoded once.

Every request a connection carries to a provider has the same pseudo-headers and headers (method,
path, authority, content type, the provider's key) but its content-length.  h2's encoder
(hpack.Encoder) looks every header up in its tables and logs each step, 15 to 30 µs a request
here.  `KeptHeaders` wraps it: the block of all but content-length is kept and sent again while
the encoder's dynamic table has not changed since it was made (an encoding that adds entries is
not kept: the next one of the same headers names them by index), and content-length goes as a
literal without indexing (RFC 7541 section 6.2.2), so that its value, new each time, neither adds
an entry to the table per request nor evicts the kept headers' entries.  Anything else (other
headers last, or a value too long for one length byte) goes to the encoder as it is.
"""

from __future__ import annotations

import hpack

CONTENT_LENGTH = b"content-length"
# literal header field without indexing, name by static index 28 (content-length): 0000 then the
# index in 4 bits, 15 + 13 in two bytes; then the value's length in 7 bits, not Huffman-coded
_UNINDEXED_LENGTH = bytes([0x0F, 28 - 15])


def unindexed_length(value: bytes) -> bytes:
    """content-length: `value` as a literal without indexing (a value under 127 bytes)."""
    return _UNINDEXED_LENGTH + bytes([len(value)]) + value


class KeptHeaders:
    """An hpack.Encoder as h2 uses it (`encode`, `header_table_size`), the repeated block kept."""

    def __init__(self, inner: hpack.Encoder) -> None:
        self.inner = inner
        self.changes = 0                # dynamic table additions and resizes so far
        self.kept: tuple[tuple, int, bytes] | None = None     # (headers, changes then, their block)
        add = inner.header_table.add

        def counted(name: bytes, value: bytes) -> None:
            self.changes += 1
            add(name, value)
        inner.header_table.add = counted

    @property
    def header_table_size(self) -> int:
        return self.inner.header_table_size

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:        # the server's SETTINGS_HEADER_TABLE_SIZE
        self.changes += 1
        self.inner.header_table_size = value
        # hpack 4.x forgets a size change still to announce when the same size is set again (its
        # table's `resized` turns False): the server's table would stay at the old size
        if self.inner.table_size_changes:
            self.inner.header_table.resized = True

    def encode(self, headers, huffman: bool = True) -> bytes:
        headers = list(headers)
        if (not headers or headers[-1][0] != CONTENT_LENGTH or not isinstance(headers[-1][1], bytes)
                or len(headers[-1][1]) > 126):
            return self.inner.encode(headers, huffman)
        rest = headers[:-1]
        key = (huffman, tuple(rest), tuple(map(type, rest)))     # the type: hpack's never-indexed ones
        kept = self.kept
        if kept is not None and kept[0] == key and kept[1] == self.changes:
            block = kept[2]
        else:
            before, announcing = self.changes, bool(self.inner.table_size_changes)
            block = self.inner.encode(headers[:-1], huffman)
            # kept only if it changed nothing: no entry added, no table size update at its start
            self.kept = (key, self.changes, block) if self.changes == before and not announcing else None
        return block + unindexed_length(headers[-1][1])
