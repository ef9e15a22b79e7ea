"""The lean HTTP/1.1 upstream transport: body framing, interim answers, reuse, errors."""

from __future__ import annotations

import asyncio
import random

import httpx2
import pytest
from hypothesis import given, strategies as st

from ccproxyd.upstream import http11
from ccproxyd.upstream.chunked import ChunkedDecoder
from ccproxyd.upstream.http11 import Http11Transport


def test_chunked_decoder_any_split():
    rng = random.Random(7)
    for _ in range(2000):
        pieces = [bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 50))) for _ in range(rng.randint(0, 8))]
        wire = b"".join(b"%x%s\r\n%s\r\n" % (len(p), rng.choice([b"", b";ext=1"]), p) for p in pieces)
        wire += b"0\r\n" + rng.choice([b"", b"X-Trailer: 1\r\n"]) + b"\r\n"
        decoder, out, i = ChunkedDecoder(), b"", 0
        while i < len(wire):
            n = rng.randint(1, 20)
            out += decoder.feed(wire[i:i + n])
            i += n
        assert decoder.done and out == b"".join(pieces)


_EVENT = st.one_of(st.binary(max_size=12).map(lambda b: b"data: " + b + b"\n\n"),     # a chunk an event, mostly
                   st.sampled_from([b"data: {}\n\n", b"data: [DONE]\n\n", b"x\r\ny", b"\r\n", b"ab\r\n"]))


@given(st.lists(_EVENT, max_size=30), st.lists(st.integers(0, 800), max_size=8), st.booleans())
def test_chunked_decoder_reads_events_however_the_reads_cut_them(pieces, cuts, extensions):
    """Whole chunks are taken in a loop of their own (chunked._whole_chunks) until one is not
    whole, has a CRLF in its data, or a size not seen before: the body is the same however the
    reads cut the wire."""
    wire = b"".join(b"%x%s\r\n%s\r\n" % (len(p), b";e=1" if extensions else b"", p) for p in pieces if p) + b"0\r\n\r\n"
    decoder, out, last = ChunkedDecoder(), b"", 0
    for cut in sorted(c for c in cuts if c < len(wire)) + [len(wire)]:
        out += decoder.feed(wire[last:cut])
        last = cut
    assert decoder.done and not decoder.surplus and out == b"".join(pieces)


@pytest.mark.parametrize("wire", [b"zz\r\n", b"2\r\nabXX\r\n"])
def test_chunked_decoder_rejects_garbage(wire):
    with pytest.raises(httpx2.RemoteProtocolError):
        ChunkedDecoder().feed(wire)


ANSWERS = {
    "length": b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
    "chunked": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n",
    "interim": b"HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
    "eof": b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nhello",
}


async def _serve_and_post(kind: str, requests: int = 2) -> tuple[list[str], int]:
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")))
                await reader.readexactly(length)
                writer.write(ANSWERS[kind])
                await writer.drain()
                if kind == "eof":
                    break
        except (asyncio.IncompleteReadError, asyncio.CancelledError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    texts = []
    async with httpx2.AsyncClient(transport=Http11Transport(httpx2.Limits())) as client:
        for _ in range(requests):
            r = await client.post(f"http://127.0.0.1:{port}/v1/chat/completions", content=b"{}")
            texts.append(f"{r.status_code} {r.text}")
    server.close()
    await server.wait_closed()
    return texts, connections


@pytest.mark.parametrize("kind,expected_connections", [("length", 1), ("chunked", 1), ("interim", 1), ("eof", 2)])
def test_framings_and_connection_reuse(kind, expected_connections):
    texts, connections = asyncio.run(_serve_and_post(kind))
    assert texts == ["200 hello", "200 hello"]
    assert connections == expected_connections


def test_connect_error_is_httpx2_connect_error():
    async def go():
        async with httpx2.AsyncClient(transport=Http11Transport(httpx2.Limits())) as client:
            await client.post("http://127.0.0.1:1/x", content=b"{}")
    with pytest.raises(httpx2.ConnectError):
        asyncio.run(go())


# ---------------------------------------------------------------- strict framing (h11's rules)

@pytest.mark.parametrize("line", [b"-3", b"0x3", b"1_0", b" 3", b"+3", b"", b"3 3", b"1" * 17])
def test_chunk_size_is_hex_digits_only(line):
    with pytest.raises(httpx2.RemoteProtocolError):
        ChunkedDecoder().feed(line + b"\r\nabc\r\n0\r\n\r\n")


def test_chunk_size_line_is_bounded():
    decoder = ChunkedDecoder()
    with pytest.raises(httpx2.RemoteProtocolError):
        for _ in range(100):
            decoder.feed(b"3;ext=" + b"x" * 100)            # no CRLF, ever


class RawServer:
    """A loopback server that answers each request on a connection with the next raw answer."""

    def __init__(self, answers: list[bytes], hold: bool = False) -> None:
        self.answers = list(answers)
        self.connections = 0
        self.hold = hold                    # after the answers: keep the connection open, silent

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1/chat/completions"

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.answers:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")))
                await reader.readexactly(length)
                writer.write(self.answers.pop(0))
                await writer.drain()
            if self.hold:
                await asyncio.sleep(30)
        except (asyncio.IncompleteReadError, asyncio.CancelledError, ConnectionError):
            pass
        writer.close()


async def _post(client: httpx2.AsyncClient, url: str) -> str:
    r = await client.post(url, content=b"{}")
    return f"{r.status_code} {r.text}"


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 2000 OK\r\ncontent-length: 0\r\n\r\n",                       # a status is 3 digits
    b"HTTP/1.1 20 OK\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 3\r\n\r\nhello",    # conflicting lengths
    b"HTTP/1.1 200 OK\r\ncontent-length: 5, 3\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\nhello",                  # 1*DIGIT
    b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1_0\r\n0123456789abcdef\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nbad header line\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: xchunkedx\r\n\r\n3\r\nabc\r\n0\r\n\r\n",   # a coding, not chunked
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
])
def test_malformed_answers_are_protocol_errors(answer):
    async def go():
        async with RawServer([answer]) as url:
            async with httpx2.AsyncClient(transport=Http11Transport(httpx2.Limits())) as client:
                await _post(client, url)
    with pytest.raises(httpx2.RemoteProtocolError):
        asyncio.run(go())


def test_identical_repeated_content_length_is_accepted():
    async def go():
        answer = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\nhello"
        async with RawServer([answer]) as url:
            async with httpx2.AsyncClient(transport=Http11Transport(httpx2.Limits())) as client:
                return await _post(client, url)
    assert asyncio.run(go()) == "200 hello"


@pytest.mark.parametrize("extra", [b"HTTP/1.1 200 OK\r\n", b"junk"])
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_bytes_after_the_body_mean_a_new_connection(framing, extra):
    """Bytes past the end of the body (a confused server, a response smuggled in) are never read as
    the next answer: the connection is not reused."""
    raw = RawServer([ANSWERS[framing] + extra])

    async def run():
        async with raw as url:
            async with httpx2.AsyncClient(transport=Http11Transport(httpx2.Limits())) as client:
                first = await _post(client, url)
                raw.answers = [ANSWERS[framing]]            # the next connection's answer
                second = await _post(client, url)
                return first, second
    assert asyncio.run(run()) == ("200 hello", "200 hello")
    assert raw.connections == 2


def test_bare_lf_head_is_read_at_once():
    """A head whose lines end in a bare LF (h11 accepts them) must not wait out read_timeout."""
    async def go():
        answer = b"HTTP/1.1 200 OK\ncontent-length: 5\n\nhello"
        async with RawServer([answer], hold=True) as url:
            transport = Http11Transport(httpx2.Limits())
            async with httpx2.AsyncClient(transport=transport, timeout=httpx2.Timeout(30, read=5)) as client:
                return await _post(client, url)
    assert asyncio.run(go()) == "200 hello"


def test_a_head_without_end_is_bounded():
    async def go():
        answer = b"HTTP/1.1 200 OK\r\n" + b"x-filler: " + b"a" * 70000 + b"\r\n\r\n"
        async with RawServer([answer], hold=True) as url:
            async with httpx2.AsyncClient(transport=Http11Transport(httpx2.Limits())) as client:
                await _post(client, url)
    with pytest.raises(httpx2.RemoteProtocolError):
        asyncio.run(go())


def test_a_stalled_head_times_out():
    async def go():
        async with RawServer([b"HTTP/1.1 200 OK\r\ncontent-"], hold=True) as url:
            async with httpx2.AsyncClient(transport=Http11Transport(httpx2.Limits()),
                                          timeout=httpx2.Timeout(5, read=0.2)) as client:
                await _post(client, url)
    with pytest.raises(httpx2.ReadTimeout):
        asyncio.run(go())


def test_the_read_timer_ends_with_the_response_read_or_not():
    """One timer watches the head and then the body (upstream.http11._Watch); a response closed
    before its body was read, and one read to its end, leave no timer behind on the loop."""
    async def go():
        loop = asyncio.get_running_loop()
        live = lambda: [h for h in loop._scheduled if not h.cancelled()]     # noqa: E731
        chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        async with RawServer([chunked, chunked]) as url:
            transport = Http11Transport(httpx2.Limits())
            timeout = {"connect": 5, "read": 30, "write": 5, "pool": 5}
            unread = await transport.send("POST", httpx2.URL(url), [(b"host", b"x"), (b"content-length", b"0")], b"", timeout)
            assert len(live()) == 1                  # the head's timer, carried on to the body
            await unread.aclose()
            assert live() == []
            read = await transport.send("POST", httpx2.URL(url), [(b"host", b"x"), (b"content-length", b"0")], b"", timeout)
            assert b"".join([piece async for piece in read.stream]) == b"hello"
            assert live() == []
            await transport.aclose()
    asyncio.run(go())


def test_a_body_read_to_its_end_frees_its_slot_without_close():
    """One connection allowed: a body read to the end but never closed must not hold the slot."""
    async def go():
        async with RawServer([ANSWERS["length"]] * 2) as url:
            transport = Http11Transport(httpx2.Limits(max_connections=1))
            timeout = {"connect": 5, "read": 5, "write": 5, "pool": 2}
            headers = [(b"host", b"127.0.0.1"), (b"content-length", b"2")]
            texts = []
            for _ in range(2):
                response = await transport.send("POST", httpx2.URL(url), headers, b"{}", timeout)
                texts.append(b"".join([piece async for piece in response.stream]))   # never closed
            await transport.aclose()
            return texts
    assert asyncio.run(go()) == [b"hello", b"hello"]


def test_cancelled_mid_body_the_connection_is_not_reused():
    async def go():
        slow = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello"
        server = RawServer([slow, ANSWERS["length"]], hold=True)
        async with server as url:
            transport = Http11Transport(httpx2.Limits(max_connections=1))
            async with httpx2.AsyncClient(transport=transport, timeout=httpx2.Timeout(5, pool=2)) as client:
                async def read_all():
                    async with client.stream("POST", url, content=b"{}") as r:
                        async for _ in r.aiter_raw():
                            pass
                task = asyncio.create_task(read_all())
                await asyncio.sleep(0.2)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                server.answers = [ANSWERS["length"]]
                text = await _post(client, url)
        return text, server.connections
    assert asyncio.run(go()) == ("200 hello", 2)


def test_a_body_closed_before_its_last_chunk_keeps_its_connection():
    """The proxy stops reading at `data: [DONE]`; the terminating chunk that follows a moment later
    is drained in the background, and the connection goes back to the pool."""
    async def go():
        head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        done = b"data: [DONE]\n\n"
        server = RawServer([])

        async def serve(reader, writer):
            server.connections += 1
            try:
                while True:
                    await reader.readuntil(b"\r\n\r\n")
                    await reader.readexactly(2)
                    writer.write(head + b"%x\r\n%s\r\n" % (len(done), done))
                    await writer.drain()
                    await asyncio.sleep(0.05)                  # the last chunk comes in a later read
                    writer.write(b"0\r\n\r\n")
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()
        server.serve = serve
        async with server as url:
            transport = Http11Transport(httpx2.Limits(max_connections=1))
            timeout = {"connect": 5, "read": 5, "write": 5, "pool": 5}
            headers = [(b"host", b"127.0.0.1"), (b"content-length", b"2")]
            for _ in range(3):
                response = await transport.send("POST", httpx2.URL(url), headers, b"{}", timeout)
                async for piece in response.stream:
                    if b"[DONE]" in piece:
                        break
                await response.aclose()
            await transport.aclose()
        return server.connections
    assert asyncio.run(go()) == 1


@pytest.mark.parametrize("bad", [b"2\r\nabXX\r\n0\r\n\r\n", b"zz\r\nab\r\n0\r\n\r\n"])
def test_a_body_that_failed_is_never_drained_into_reuse(bad):
    async def go():
        answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + bad
        server = RawServer([answer])
        async with server as url:
            async with httpx2.AsyncClient(transport=Http11Transport(httpx2.Limits())) as client:
                with pytest.raises(httpx2.RemoteProtocolError):
                    await _post(client, url)
                server.answers = [ANSWERS["length"]]
                return await _post(client, url), server.connections
    assert asyncio.run(go()) == ("200 hello", 2)


def test_a_body_that_timed_out_is_not_reused_even_if_the_rest_arrives():
    """A read timeout mid-body is an anomaly: the late rest of the body is not drained into reuse."""
    async def go():
        server = RawServer([])

        async def serve(reader, writer):
            server.connections += 1
            try:
                while True:
                    await reader.readuntil(b"\r\n\r\n")
                    await reader.readexactly(2)
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello")
                    await writer.drain()
                    await asyncio.sleep(0.08)              # past the read timeout, within the drain
                    writer.write(b"world")
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()
        server.serve = serve
        async with server as url:
            transport = Http11Transport(httpx2.Limits(max_connections=1))
            timeout = {"connect": 5, "read": 0.05, "write": 5, "pool": 5}
            headers = [(b"host", b"127.0.0.1"), (b"content-length", b"2")]
            for _ in range(2):
                response = await transport.send("POST", httpx2.URL(url), headers, b"{}", timeout)
                with pytest.raises(httpx2.ReadTimeout):
                    async for _ in response.stream:
                        pass
                await response.aclose()
            await transport.aclose()
        return server.connections
    assert asyncio.run(go()) == 2


@pytest.mark.parametrize("received, lines, rest", [
    (b"HTTP/1.1 200 OK\r\na: 1\r\nb: 2\r\n\r\nbody\r\n\r\n", [b"HTTP/1.1 200 OK", b"a: 1", b"b: 2"], b"body\r\n\r\n"),
    (b"HTTP/1.1 200 OK\na: 1\r\n\r\nbody", [b"HTTP/1.1 200 OK", b"a: 1"], b"body"),           # a bare LF line
    (b"HTTP/1.1 200 OK\r\na: 1\n\r\nbody", [b"HTTP/1.1 200 OK", b"a: 1"], b"body"),
    (b"HTTP/1.1 200 OK\r\na: 1\n\nx\r\n\r\n", [b"HTTP/1.1 200 OK", b"a: 1"], b"x\r\n\r\n"),      # ends at the bare blank line
    (b"HTTP/1.1 200 OK\r\na: 1\rb\r\n\r\n", [b"HTTP/1.1 200 OK", b"a: 1\rb"], b""),             # a lone CR stays
    (b"\r\n\r\nHTTP/1.1 200 OK\r\n\r\n", [], b"\r\nHTTP/1.1 200 OK\r\n\r\n"),
    (b"\r\nHTTP/1.1 200 OK\r\na: 1\r\n\r\n", [], b"HTTP/1.1 200 OK\r\na: 1\r\n\r\n"),     # an empty first line
])
def test_a_head_read_whole_or_line_by_line_gives_the_same_lines(received, lines, rest):
    """A head already buffered whole with CRLFs is taken in one piece; one arriving a byte at a
    time is read line by line; both end at the first empty line and leave the body's bytes in
    the reader."""
    async def go(whole: bool):
        reader = asyncio.StreamReader()
        if whole:
            reader.feed_data(received)
            reader.feed_eof()
            got = await http11._head_lines(reader)
        else:
            async def feed():
                for i in range(len(received)):
                    reader.feed_data(received[i:i + 1])
                    await asyncio.sleep(0)
                reader.feed_eof()
            feeding = asyncio.create_task(feed())
            got = await http11._head_lines(reader)
            await feeding
        return got, await reader.read()
    assert asyncio.run(go(True)) == asyncio.run(go(False)) == (lines, rest)


def test_a_transfer_coding_is_quoted_as_sent_so_an_echoed_key_is_masked():
    """Codings are compared without case but quoted as the server wrote them: a mixed-case key it
    echoed there is masked (lowercased first, it would no longer match the key and be shown)."""
    from ccproxyd.observe import redact
    key = "sk-MiXeD-Case-Key-0123456789"
    redact.register(key)
    try:
        with pytest.raises(httpx2.RemoteProtocolError) as caught:
            http11._transfer_codings(b"x-" + key.encode() + b", chunked")
    finally:
        redact.clear()
    message = str(caught.value)
    assert key.lower()[:12] not in message and key[:12] not in message and "[redacted]" in message, message
    assert http11._transfer_codings(b"Identity, CHUNKED") == [b"chunked"]
