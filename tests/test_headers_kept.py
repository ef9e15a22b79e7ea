"""upstream.headers_kept: what a server's HPACK decoder reads from the kept blocks is, request
after request, exactly the headers sent, whatever the sequence (repeats, other headers, table
size changes, a full table); and a repeated request costs no table entry."""

from __future__ import annotations

import hpack
from hypothesis import given, settings, strategies as st
from hpack import NeverIndexedHeaderTuple

from ccproxyd.upstream.headers_kept import KeptHeaders, unindexed_length

BASE = [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"api.example.com"),
        (b":path", b"/v1/chat/completions"), (b"content-type", b"application/json"),
        (b"accept", b"text/event-stream"), (b"authorization", b"Bearer sk-test-0123456789")]


def request(length: int, extra: list[tuple[bytes, bytes]] = (), path: bytes = b"/v1/chat/completions") -> list:
    headers = [h if h[0] != b":path" else (b":path", path) for h in BASE] + list(extra)
    return headers + [(b"content-length", b"%d" % length)]


def test_content_length_is_a_literal_without_indexing():
    decoder = hpack.Decoder()
    assert decoder.decode(unindexed_length(b"14234"), raw=True) == [(b"content-length", b"14234")]
    assert len(decoder.header_table.dynamic_entries) == 0


def test_a_repeated_request_reuses_its_block_and_adds_no_entry():
    encoder, decoder = KeptHeaders(hpack.Encoder()), hpack.Decoder()
    first = encoder.encode(request(100))
    assert decoder.decode(first, raw=True) == request(100)
    second = encoder.encode(request(2000))
    assert decoder.decode(second, raw=True) == request(2000)
    entries = len(encoder.inner.header_table.dynamic_entries)
    changes = encoder.changes
    third = encoder.encode(request(31))
    assert encoder.kept is not None and third.startswith(encoder.kept[2])
    assert decoder.decode(third, raw=True) == request(31)
    assert (len(encoder.inner.header_table.dynamic_entries), encoder.changes) == (entries, changes)
    assert len(third) < len(first)                           # indexed names and values, once in the table


def test_a_block_that_announces_a_table_size_change_is_not_kept():
    """The server's SETTINGS_HEADER_TABLE_SIZE is announced once, at the start of the next block;
    that block is not sent again with later requests."""
    encoder, decoder = KeptHeaders(hpack.Encoder()), hpack.Decoder()
    for length in (1, 2):
        decoder.decode(encoder.encode(request(length)), raw=True)
    encoder.header_table_size = 8192
    decoder.max_allowed_table_size = 8192
    announced = encoder.encode(request(3))
    assert announced.startswith(b"\x3f\xe1\x3f")                  # dynamic table size update: 8192
    assert decoder.decode(announced, raw=True) == request(3)
    assert encoder.kept is None
    later = encoder.encode(request(4))
    assert not later.startswith(b"\x3f") and decoder.decode(later, raw=True) == request(4)
    assert encoder.encode(request(5)).startswith(encoder.kept[2])


def test_a_size_set_twice_before_a_request_is_still_announced():
    """hpack's encoder drops the pending announcement when the server's SETTINGS repeat the size;
    the server would then index against a smaller table than the encoder's."""
    encoder, decoder = KeptHeaders(hpack.Encoder()), hpack.Decoder()
    encoder.header_table_size = 64
    decoder.decode(encoder.encode(request(1)), raw=True)
    encoder.header_table_size = 4096
    encoder.header_table_size = 4096
    headers = request(2, [(b"x-a", b"te")], b"/v1/responses")
    block = encoder.encode(headers)
    assert block.startswith(b"\x3f\xe1\x1f")                     # dynamic table size update: 4096
    assert decoder.decode(block, raw=True) == headers


steps = st.one_of(
    st.tuples(st.just("request"), st.integers(0, 10**12), st.sampled_from([b"/v1/chat/completions", b"/v1/responses"]),
              st.lists(st.tuples(st.sampled_from([b"x-a", b"x-b", b"openai-beta"]),
                                 st.binary(min_size=0, max_size=300)), max_size=3)),
    st.tuples(st.just("resize"), st.sampled_from([0, 64, 256, 4096, 65536])),
    st.tuples(st.just("other"), st.lists(st.one_of(
        st.tuples(st.sampled_from([b"x-c", b"te"]), st.binary(max_size=40)),
        st.builds(NeverIndexedHeaderTuple, st.just(b"cookie"), st.binary(max_size=40))), min_size=1, max_size=4)),
)


def decoded(encoder, sequence) -> list:
    """What a server's decoder reads of each request of `sequence` encoded by `encoder`."""
    decoder = hpack.Decoder()
    decoder.max_allowed_table_size = 65536
    out = []
    for step in sequence:
        if step[0] == "resize":
            encoder.header_table_size = step[1]
            continue
        headers = request(step[1], step[3], step[2]) if step[0] == "request" else list(step[1])
        out.append((decoder.decode(encoder.encode(headers), raw=True), [tuple(h) for h in headers]))
    return out


@settings(max_examples=1000, deadline=None)
@given(st.lists(steps, min_size=1, max_size=40))
def test_a_server_decodes_every_request_as_sent(sequence):
    """Also where hpack's own encoder fails: a size set twice before a request (see KeptHeaders)."""
    for got, sent in decoded(KeptHeaders(hpack.Encoder()), sequence):
        assert got == sent


def test_a_header_sent_never_indexed_is_not_the_same_request_as_one_sent_plainly():
    """The kept block is for the same headers of the same kinds: the same authorization as a
    NeverIndexedHeaderTuple (RFC 7541 section 6.2.3) is encoded afresh, as hpack's own encoder
    encodes it after the same requests (a first one never indexed, then plain ones)."""
    hidden = [h if h[0] != b"authorization" else NeverIndexedHeaderTuple(*h) for h in request(10)]

    def kinds(encoder) -> list:
        decoder = hpack.Decoder()
        out = []
        for headers in (hidden, hidden, request(10), request(10), hidden):
            decoded = decoder.decode(encoder.encode(headers), raw=True)
            assert decoded == headers
            out.append([type(h).__name__ for h in decoded if h[0] == b"authorization"][0])
        return out

    assert kinds(KeptHeaders(hpack.Encoder())) == kinds(hpack.Encoder())
    assert kinds(hpack.Encoder())[0] == "NeverIndexedHeaderTuple"
