"""The HTTP/2 transport (ccproxyd/upstream/http2.py) on its own, against real loopback h2 servers
(tests/fake_tls.py): streams sharing a connection, the server's stream limit, GOAWAY, RST_STREAM,
a server that dies mid-stream, flow control both ways, PING and expiry of idle connections, and
the fallback to HTTP/1.1 when the server does not pick h2 by ALPN.

The rules checked here are RFC 9113's (https://www.rfc-editor.org/rfc/rfc9113): client streams
have odd ids counting up from 1 (section 5.1.1); the initial flow-control window is 65,535 bytes
(section 6.9.2); a GOAWAY's last_stream_id names the streams that may still finish (section 6.8).
"""

from __future__ import annotations

import asyncio
import re
import gc
import ssl
import threading

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import httpx2
import orjson
import pytest
from hypothesis import given, settings, strategies as st

from ccproxyd.errors import ConnectionDropped, Overloaded
from ccproxyd.upstream.h2frames import coalesce
from ccproxyd.upstream.http2 import Http2Transport
from ccproxyd.upstream.pool import map_transport_error

from .conftest import free_port
from .fake_tls import TlsFakeUpstream
from .fake_upstream import GOAWAY, RESET, Barrier, Gate, Script, chunk
from .support import wait_for

TIMEOUT = {"connect": 10.0, "read": 20.0, "write": 20.0, "pool": 20.0}
REQUEST = b'{"model": "m", "messages": []}'


@pytest.fixture
def fake(certificates):
    server = TlsFakeUpstream(http2=True, certificates=certificates).start()
    yield server
    server.stop()


def transport(certificates, ping_interval: float = 20.0, expiry: float = 120.0) -> Http2Transport:
    context = ssl.create_default_context(cafile=str(certificates.ca_file))
    context.set_alpn_protocols(["h2", "http/1.1"])
    limits = httpx2.Limits(max_connections=100, max_keepalive_connections=50, keepalive_expiry=expiry)
    return Http2Transport(limits, context, ping_interval=ping_interval)


async def send(t: Http2Transport, url: str, body: bytes = REQUEST) -> httpx2.Response:
    url = httpx2.URL(url + "/chat/completions")
    headers = [(b"host", url.netloc), (b"content-type", b"application/json"),
               (b"content-length", b"%d" % len(body))]
    return await t.send("POST", url, headers, body, TIMEOUT)


async def fetch(t: Http2Transport, url: str, body: bytes = REQUEST) -> tuple[httpx2.Response, bytes]:
    response = await send(t, url, body)
    return response, b"".join([piece async for piece in response.stream])


def held(n: int, fake_barrier: Barrier):
    """A responder whose answers all wait at one Barrier: `n` of them are in flight together."""
    return lambda body: Script(events=[chunk({"content": "x"}), fake_barrier, chunk(finish="stop")])


def test_many_streams_share_one_connection(fake, certificates):
    fake.responder = held(8, Barrier(8))

    async def run():
        t = transport(certificates)
        try:
            return await asyncio.gather(*(fetch(t, fake.url) for _ in range(8)))
        finally:
            await t.aclose()

    results = asyncio.run(run())
    assert [r.status_code for r, _ in results] == [200] * 8
    assert all(b'"content":"x"' in data and data.endswith(b"data: [DONE]\n\n") for _, data in results)
    assert fake.peak_in_flight == 8
    assert {r["connection"] for r in fake.requests} == {1}
    assert sorted(r["stream"] for r in fake.requests) == [1, 3, 5, 7, 9, 11, 13, 15]


def test_streams_past_the_servers_limit_open_another_connection(certificates):
    narrow = TlsFakeUpstream(http2=True, max_streams=2, certificates=certificates).start()
    try:
        narrow.responder = held(5, Barrier(5))

        async def run():
            t = transport(certificates)
            try:
                return await asyncio.gather(*(fetch(t, narrow.url) for _ in range(5)))
            finally:
                await t.aclose()

        results = asyncio.run(run())
        assert [r.status_code for r, _ in results] == [200] * 5
        assert narrow.peak_in_flight == 5                       # all five at once: 2 + 2 + 1
        assert len(narrow.connections) == 3
        assert all(not c["errors"] for c in narrow.connections)   # never over the limit
    finally:
        narrow.stop()


def test_goaway_lets_the_stream_in_flight_finish_and_moves_new_ones(fake, certificates, caplog):
    """And the connection it closed ends its reader quietly (it once read the server's SETTINGS
    ACK off a closed TLS transport: "Task exception was never retrieved")."""
    gate = Gate()
    fake.push(Script(events=[chunk({"content": "one"}), GOAWAY, gate, chunk({"content": "two"})]),
              Script(events=[chunk({"content": "later"})]))

    async def run():
        t = transport(certificates)
        try:
            response = await send(t, fake.url)
            pieces = response.stream.__aiter__()
            received = await pieces.__anext__()
            while b"one" not in received:
                received += await pieces.__anext__()
            _, later = await fetch(t, fake.url)
            gate.open()
            async for piece in pieces:
                received += piece
            return received, later
        finally:
            await t.aclose()

    received, later = asyncio.run(run())
    assert b'"content":"one"' in received and b'"content":"two"' in received
    assert received.endswith(b"data: [DONE]\n\n")
    assert b'"content":"later"' in later
    assert fake.connections[0]["goaway"]
    assert fake.requests[0]["connection"] == 1 and fake.requests[-1]["connection"] == 2
    gc.collect()                                    # a task's unretrieved exception is logged when it goes
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []


def test_rst_stream_fails_that_stream_only(fake, certificates):
    fake.push(Script(events=[chunk({"content": "partial"}), RESET]), Script(events=[chunk({"content": "after"})]))

    async def run():
        t = transport(certificates)
        try:
            response = await send(t, fake.url)
            received = b""
            with pytest.raises(httpx2.RemoteProtocolError, match="INTERNAL_ERROR") as caught:
                async for piece in response.stream:
                    received += piece
            return received, caught.value, await fetch(t, fake.url)
        finally:
            await t.aclose()

    received, error, (_, after) = asyncio.run(run())
    assert b'"content":"partial"' in received and b"[DONE]" not in received
    assert isinstance(map_transport_error(error, "p"), ConnectionDropped)
    assert b'"content":"after"' in after
    assert [r["connection"] for r in fake.requests] == [1, 1]


def test_a_server_dying_mid_stream_is_an_error_never_a_clean_end(fake, certificates):
    fake.push(Script(events=[chunk({"content": "partial"})], cut=True))

    async def run():
        t = transport(certificates)
        try:
            response = await send(t, fake.url)
            received = b""
            with pytest.raises((httpx2.RemoteProtocolError, httpx2.ReadError)) as caught:
                async for piece in response.stream:
                    received += piece
            return received, caught.value
        finally:
            await t.aclose()

    received, error = asyncio.run(run())
    assert b'"content":"partial"' in received and b"[DONE]" not in received
    assert isinstance(map_transport_error(error, "p"), ConnectionDropped)


def test_a_wait_longer_than_the_read_timeout_fails_and_a_slow_steady_answer_does_not(fake, certificates):
    """The read timeout bounds each wait for the head and for more of the body (one timer for a
    body, http2._Watch), not the whole answer: pieces 0.15 s apart under a 0.4 s read timeout
    arrive whole over 0.6 s; a head, or the next piece, that takes 1.5 s fails with ReadTimeout,
    and the connection serves the next request."""
    steady = [chunk({"content": "a"}), 0.15, chunk({"content": "b"}), 0.15, chunk({"content": "c"}), 0.15,
              chunk({"content": "d"}), 0.15, chunk(finish="stop")]
    fake.push(Script(events=steady), Script(events=[chunk({"content": "a"}), 1.5, chunk(finish="stop")]),
              Script(events=steady, first_byte_delay=1.5), Script(events=steady), Script(events=steady))

    async def run():
        t = transport(certificates)
        timeout = dict(TIMEOUT, read=0.4)
        url = httpx2.URL(fake.url + "/chat/completions")
        headers = [(b"host", url.netloc), (b"content-length", b"%d" % len(REQUEST))]
        try:
            first = await t.send("POST", url, headers, REQUEST, timeout)
            assert first.stream._watch.handle is not None           # the head's timer, on to the body
            whole = b"".join([piece async for piece in first.stream])
            assert first.stream._watch.handle is None
            stalled = await t.send("POST", url, headers, REQUEST, timeout)
            with pytest.raises(httpx2.ReadTimeout):
                async for _ in stalled.stream:
                    pass
            with pytest.raises(httpx2.ReadTimeout):
                await t.send("POST", url, headers, REQUEST, timeout)
            unread = await t.send("POST", url, headers, REQUEST, timeout)
            await unread.aclose()                                   # closed unread: its timer too
            assert unread.stream._watch.handle is None
            last = await t.send("POST", url, headers, REQUEST, timeout)
            return whole, b"".join([piece async for piece in last.stream])
        finally:
            await t.aclose()

    whole, last = asyncio.run(run())
    assert whole.count(b'"content"') == 4 and b"[DONE]" in whole and last == whole


def test_flow_control_carries_bodies_larger_than_the_windows(fake, certificates):
    """A 1 MB request (the server's initial window is 65,535 bytes) and a 12 MB answer (more than
    the transport's 4 MiB stream window): both arrive whole."""
    request = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "r" * 1_000_000}]})
    answer = {"id": "x", "choices": [{"message": {"content": "a" * 12_000_000}}]}
    fake.push(Script(body=answer))

    async def run():
        t = transport(certificates)
        try:
            return await fetch(t, fake.url, request)
        finally:
            await t.aclose()

    response, data = asyncio.run(run())
    assert response.status_code == 200
    assert orjson.loads(data) == answer
    assert fake.requests[0]["body"] == orjson.loads(request)


def test_an_idle_connection_is_pinged_and_kept(fake, certificates):
    async def run():
        t = transport(certificates, ping_interval=0.05)
        try:
            await fetch(t, fake.url)
            await asyncio.to_thread(wait_for, lambda: fake.connections[0]["pings"] >= 3)
            await fetch(t, fake.url)
        finally:
            await t.aclose()

    asyncio.run(run())
    assert [r["connection"] for r in fake.requests] == [1, 1]       # answered PINGs keep it open


def test_an_idle_connection_closes_after_the_keepalive_expiry(fake, certificates):
    async def run():
        t = transport(certificates, ping_interval=0.05, expiry=0.1)
        try:
            await fetch(t, fake.url)
            await asyncio.to_thread(wait_for, lambda: fake.connections[0]["closed"])
            await fetch(t, fake.url)
        finally:
            await t.aclose()

    asyncio.run(run())
    assert [r["connection"] for r in fake.requests] == [1, 2]


def test_a_server_without_h2_is_spoken_to_over_http11(certificates):
    h1 = TlsFakeUpstream(http2=False, certificates=certificates).start()
    try:
        async def run():
            t = transport(certificates)
            try:
                return [await fetch(t, h1.url) for _ in range(2)]
            finally:
                await t.aclose()

        results = asyncio.run(run())
        assert [r.extensions["http_version"] for r, _ in results] == [b"HTTP/1.1"] * 2
        assert all(data.endswith(b"data: [DONE]\n\n") for _, data in results)
        assert [c["protocol"] for c in h1.connections] == ["http/1.1", "http/1.1"]   # the probe, then one
    finally:
        h1.stop()


def test_nothing_listening_is_a_connect_error(certificates):
    async def run():
        t = transport(certificates)
        try:
            with pytest.raises(httpx2.ConnectError) as caught:
                await fetch(t, f"https://127.0.0.1:{free_port()}/v1")
            return caught.value
        finally:
            await t.aclose()

    assert isinstance(map_transport_error(asyncio.run(run()), "p"), Overloaded)


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    """A frame by hand (RFC 9113 section 4.1: 24-bit length, type, flags, 31-bit stream id)."""
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


DATA, HEADERS, END, PADDED = 0, 1, 1, 8


@pytest.mark.parametrize("frames, limit, merged, rest", [
    # two DATA frames of one stream: one frame of 5 bytes
    ([frame(DATA, 0, 1, b"ab"), frame(DATA, 0, 1, b"cde")], 100, [frame(DATA, 0, 1, b"abcde")], b""),
    # END_STREAM on the last: kept on the merged frame; a frame after it is not merged into it
    ([frame(DATA, 0, 1, b"ab"), frame(DATA, END, 1, b"c"), frame(DATA, 0, 3, b"x")], 100,
     [frame(DATA, END, 1, b"abc"), frame(DATA, 0, 3, b"x")], b""),
    # another stream between: three frames stay three
    ([frame(DATA, 0, 1, b"a"), frame(DATA, 0, 3, b"b"), frame(DATA, 0, 1, b"c")], 100,
     [frame(DATA, 0, 1, b"a"), frame(DATA, 0, 3, b"b"), frame(DATA, 0, 1, b"c")], b""),
    # a padded DATA frame and a HEADERS frame pass through byte for byte and split runs
    ([frame(DATA, 0, 1, b"a"), frame(DATA, PADDED, 1, b"\x01bz"), frame(DATA, 0, 1, b"c"),
      frame(HEADERS, 4, 1, b"hh"), frame(DATA, 0, 1, b"d")], 100,
     [frame(DATA, 0, 1, b"a"), frame(DATA, PADDED, 1, b"\x01bz"), frame(DATA, 0, 1, b"c"),
      frame(HEADERS, 4, 1, b"hh"), frame(DATA, 0, 1, b"d")], b""),
    # never more than the limit in one frame: 3 + 3 > 5
    ([frame(DATA, 0, 1, b"abc"), frame(DATA, 0, 1, b"def")], 5,
     [frame(DATA, 0, 1, b"abc"), frame(DATA, 0, 1, b"def")], b""),
    # an incomplete frame (its header says 4 bytes, 2 arrived) is the rest
    ([frame(DATA, 0, 1, b"ab"), frame(DATA, 0, 1, b"wxyz")[:11]], 100,
     [frame(DATA, 0, 1, b"ab")], frame(DATA, 0, 1, b"wxyz")[:11]),
    # less than a header
    ([b"\x00\x00"], 100, [], b"\x00\x00"),
])
def test_coalesce_merges_runs_of_data_frames_of_one_stream(frames, limit, merged, rest):
    assert coalesce(b"".join(frames), limit) == (b"".join(merged), rest)


def test_frames_received_with_a_short_repr_are_handled_as_h2s_own():
    """h2connection._Frames gives each received frame a class of its own kind whose repr is
    short: every kind (an unknown extension frame too) must reach the handler h2 has for it.
    The same server bytes, fed to h2's own connection and to ours: the same events, the same
    answer (ACKs, RST_STREAM)."""
    from ccproxyd.upstream.h2connection import _H2

    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
    server.initiate_connection()
    wire = server.data_to_send() + b"".join([
        frame(1, 4, 1, server.encoder.encode([(b":status", b"200"), (b"content-type", b"text/plain")])),
        frame(0, 0, 1, b"hello"), frame(2, 0, 1, b"\x00\x00\x00\x00\x10"),          # DATA, PRIORITY
        frame(0xBB, 0, 0, b"unknown"), frame(10, 0, 0, b"\x00\x00"),                     # extension, ALTSVC
        frame(6, 0, 0, b"12345678"), frame(8, 0, 0, b"\x00\x00\x10\x00"),               # PING, WINDOW_UPDATE
        frame(0, 1, 1, b"!"), frame(3, 0, 3, b"\x00\x00\x00\x08"),                       # END_STREAM, RST_STREAM
    ])                                      # (GOAWAY, and DATA after END_STREAM, _H2 handles otherwise on purpose)

    def run(kind):
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        client = kind(config=config)
        client.initiate_connection()
        client.send_headers(1, [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"x"), (b":path", b"/")],
                            end_stream=True)
        client.data_to_send()
        try:
            events = client.receive_data(wire)
        except h2.exceptions.ProtocolError as exc:
            events = [type(exc).__name__]
        return [repr(e) for e in events], client.data_to_send()

    assert run(_H2) == run(h2.connection.H2Connection)


class DeafServer:
    """An h2 server over TLS that answers one request, then stops reading frames (its socket
    stays open, its bytes are discarded): a PING goes unanswered, as on a dead path.
    `closed` is set when the client closes the connection.  With `refuse=n`, it first resets n
    streams with REFUSED_STREAM (RFC 9113 section 8.7: not processed, safe to send again) and
    answers the next; `streams` lists the stream ids it saw."""

    def __init__(self, certificates, refuse: int = 0) -> None:
        self.refuse = refuse
        self.streams: list[int] = []
        self.context = certificates.server_context(["h2"])
        self.closed = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context))
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(10)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        answered = False
        while data := await reader.read(65536):
            if answered:
                continue                        # deaf from now on: no PING ACK, nothing
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.StreamEnded):
                    self.streams.append(event.stream_id)
                    if len(self.streams) <= self.refuse:
                        conn.reset_stream(event.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
                        continue
                    conn.send_headers(event.stream_id, [(":status", "200"), ("content-length", "2")])
                    conn.send_data(event.stream_id, b"ok", end_stream=True)
                    answered = True
            writer.write(conn.data_to_send())
        self.closed.set()
        writer.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_an_unanswered_ping_closes_the_idle_connection(certificates):
    deaf = DeafServer(certificates)
    try:
        async def run():
            t = transport(certificates, ping_interval=0.05)
            try:
                response, data = await fetch(t, f"https://127.0.0.1:{deaf.port}/v1")
                assert (response.status_code, data) == (200, b"ok")
                return await asyncio.to_thread(deaf.closed.wait, 20)   # before the transport is closed
            finally:
                await t.aclose()

        assert asyncio.run(run())               # the client gave up on the silent connection itself
    finally:
        deaf.stop()


def test_a_refused_stream_is_sent_again(certificates):
    """REFUSED_STREAM says the server did not process the request: the transport sends it again
    (the caller sees only the answer), on the same connection, which is not going away."""
    server = DeafServer(certificates, refuse=2)
    try:
        async def run():
            t = transport(certificates)
            try:
                return await fetch(t, f"https://127.0.0.1:{server.port}/v1")
            finally:
                await t.aclose()

        response, data = asyncio.run(run())
        assert (response.status_code, data) == (200, b"ok")
        assert server.streams == [1, 3, 5]
    finally:
        server.stop()


def test_a_server_that_keeps_refusing_is_an_error(certificates):
    server = DeafServer(certificates, refuse=100)
    try:
        async def run():
            t = transport(certificates)
            try:
                with pytest.raises(httpx2.RemoteProtocolError, match="refused") as caught:
                    await fetch(t, f"https://127.0.0.1:{server.port}/v1")
                return caught.value
            finally:
                await t.aclose()

        assert isinstance(map_transport_error(asyncio.run(run()), "p"), ConnectionDropped)
        assert server.streams == [1, 3, 5, 7]               # REFUSED_TRIES sends, then the error
    finally:
        server.stop()


# DATA frames taken straight to their streams (h2connection.Connection._take) against the same
# bytes read by h2 alone: the same body, the same windows and WINDOW_UPDATEs, the same errors.
class _Writer:
    """What a Connection writes, kept; a transport that is never behind."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.transport = self

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return 0, 65536

    def close(self) -> None:
        pass


def _server_bytes(script: str) -> tuple[bytes, bytes]:
    """An h2 server's bytes for one request on stream 1 (and 3): its preface, then the answer."""
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
    server.initiate_connection()
    server.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
    preface = server.data_to_send()
    head = server.encoder.encode([(b":status", b"200"), (b"content-type", b"text/event-stream")])
    sized = server.encoder.encode([(b":status", b"200"), (b"content-length", b"6")])
    frames = {
        "streamed": [frame(1, 4, 1, head), frame(0, 0, 1, b"one"), frame(0, 0, 1, b"two"), frame(0, 1, 1, b"")],
        "two streams": [frame(1, 4, 1, head), frame(1, 4, 3, head), frame(0, 0, 1, b"a"), frame(0, 0, 3, b"b"),
                        frame(0, 0, 1, b"c"), frame(0, 1, 3, b""), frame(0, 1, 1, b"")],
        "content-length kept": [frame(1, 4, 1, sized), frame(0, 0, 1, b"abc"), frame(0, 1, 1, b"def")],
        "content-length passed": [frame(1, 4, 1, sized), frame(0, 0, 1, b"abcdefg"), frame(0, 1, 1, b"")],
        "data before the head": [frame(0, 0, 1, b"early"), frame(1, 5, 1, head)],
        "over the stream window": [frame(1, 4, 1, head)] + [frame(0, 0, 1, b"x" * 16384)] * 5,
        "over the connection's window": [frame(1, 4, 1, head), frame(1, 4, 3, head)]
                                        + [frame(0, 0, 1, b"x" * 16384)] * 3 + [frame(0, 0, 3, b"y" * 16384)] * 3,
        "padded": [frame(1, 4, 1, head), frame(0, 8, 1, b"\x02ab\x00\x00"), frame(0, 1, 1, b"")],
        "on a stream never opened": [frame(1, 4, 1, head), frame(0, 0, 5, b"who")],
        "on a stream the client reset": [frame(1, 4, 1, head), frame(1, 4, 3, head), frame(0, 0, 3, b"late"),
                                         frame(0, 0, 1, b"kept")],
        "longer than the frame size": [frame(1, 4, 1, head), frame(0, 0, 1, b"x" * 20000)],
        "inside a header block": [frame(1, 4, 1, head), frame(1, 0, 3, head[:1]), frame(0, 0, 1, b"sneak"),
                                  frame(9, 4, 3, head[1:])],                  # HEADERS, DATA, CONTINUATION
    }[script]
    return preface, frames


@pytest.mark.parametrize("script", ["streamed", "two streams", "content-length kept", "content-length passed",
                                    "data before the head", "over the stream window", "over the connection's window", "padded",
                                    "on a stream never opened", "on a stream the client reset",
                                    "longer than the frame size", "inside a header block"])
def test_data_taken_straight_to_its_stream_is_read_as_h2_reads_it(script, monkeypatch):
    from ccproxyd.upstream import h2connection
    from ccproxyd.upstream.h2connection import Connection
    from ccproxyd.upstream.http11 import _Connection

    preface, frames = _server_bytes(script)

    async def read(take: bool):
        if not take:
            monkeypatch.setattr(Connection, "_take", lambda self, pieces: False)
        reader = asyncio.StreamReader()
        writer = _Writer()
        owner = type("Owner", (), {"ping_interval": 20.0, "expiry": 120.0, "goaway_grace": 2.0,
                                   "_freed": lambda self, key: None, "_forget": lambda self, c: None})()
        monkeypatch.setattr(h2connection, "STREAM_WINDOW", 65535)        # the server may overrun it
        monkeypatch.setattr(h2connection, "CONNECTION_WINDOW", 65535 + 16384)
        connection = Connection(owner, ("https", "x", 443), _Connection(reader, writer))
        reader.feed_data(preface)
        await asyncio.sleep(0)
        url = httpx2.URL("https://x/v1/chat/completions")
        streams = [connection.open("POST", url, [(b"host", b"x")], b"") for _ in range(2)]
        if script == "on a stream the client reset":
            connection.release(streams[1])
        for piece in frames:                          # one read each, as a server sends them
            reader.feed_data(piece)
            await asyncio.sleep(0)
        for stream in streams:
            if stream.unacked:
                connection.acknowledge(stream, stream.unacked)
        monkeypatch.undo()
        outcome = [(b"".join(s.data), s.ended, repr(s.error)) for s in streams]
        window = connection.conn.inbound_flow_control_window
        connection.close()
        return outcome, window, bytes(writer.written)

    assert asyncio.run(read(take=True)) == asyncio.run(read(take=False))


@pytest.mark.parametrize("frames, pieces", [
    ([frame(0, 0, 1, b"ab"), frame(0, 0, 3, b"c")], [(1, b"ab"), (3, b"c")]),
    ([frame(0, 0, 1, b"")], [(1, b"")]),
    ([], []),
    ([frame(0, 0, 1, b"ab"), frame(0, 1, 1, b"c")], None),            # END_STREAM: h2's to close the stream
    ([frame(0, 8, 1, b"\x00ab")], None),                              # padded
    ([frame(0, 0, 1, b"ab"), frame(1, 4, 1, b"h")], None),            # anything else in the read
    ([frame(0, 0, 0x80000001, b"ab")], [(1, b"ab")]),                 # the reserved bit is not the id
    ([frame(0, 0, 1, b"x" * 16)], [(1, b"x" * 16)]),                  # as long as the connection takes
    ([frame(0, 0, 1, b"x" * 17)], None),                              # longer: h2's to refuse
])
def test_data_frames_takes_a_read_of_plain_data_frames_apart(frames, pieces):
    from ccproxyd.upstream.h2frames import data_frames
    assert data_frames(b"".join(frames), 16) == pieces


def test_a_wait_that_ends_as_the_read_timer_fires_leaves_the_timer_running():
    """http2._Watch: the timer fires in the loop iteration in which the wait it watches got its
    data, before the reader has moved on: that wait is not timed out, and the timer goes on, so
    that the next wait still times out (it once stopped for good there)."""
    from ccproxyd.upstream.http2 import _Watch

    async def run():
        loop = asyncio.get_running_loop()
        watch = _Watch(loop, 0.05)
        first = watch.wait_on(loop.create_future())
        watch.since -= 0.05                    # it has waited a whole timeout…
        first.set_result(None)                 # …and its data came in this iteration
        watch.handle.cancel()
        watch._check()                         # the timer's callback, in the same iteration
        await first
        watch.waiting = None
        assert watch.handle is not None
        with pytest.raises(httpx2.ReadTimeout):
            await asyncio.wait_for(watch.wait_on(loop.create_future()), 1.0)
        watch.stop()

    asyncio.run(run())


# A response head is checked by http2._head in one pass (h2's own inbound checks are off): it
# refuses exactly the heads h2's checks refuse, and a :status that is not three digits.
_FIELD_NAMES = st.sampled_from([b":status", b":status", b"content-type", b"x-request-id", b"te", b"connection",
                                b"keep-alive", b"transfer-encoding", b"upgrade", b"proxy-connection", b":path",
                                b":method", b":custom", b"Content-Type", b"x y", b"x:y", b":", b"::status", b"",
                                b"caf\xc3\xa9", b"x\x7f", b"!#$%&'*+-.^_`|~"])
_FIELD_VALUES = st.one_of(st.sampled_from([b"200", b"404", b"20", b"2000", b"abc", b"", b"trailers", b"TRAILERS",
                                           b"gzip", b" 200", b"200 ", b"\t1", b"a\x00b", b"a\rb", b"a\nb", b"\xff"]),
                          st.binary(max_size=6))


_GOOD_HEAD = [(b":status", b"200"), (b"content-type", b"text/event-stream"), (b"x-request-id", b"req_1")]


@st.composite
def _heads(draw):
    """A well-formed head, with up to two fields put in or changed (most heads stay one change
    from well formed, where the checks have to draw the line)."""
    fields = list(_GOOD_HEAD)
    for _ in range(draw(st.integers(0, 2))):
        field = (draw(_FIELD_NAMES), draw(_FIELD_VALUES))
        at = draw(st.integers(0, len(fields)))
        if draw(st.booleans()) and at < len(fields):
            fields[at] = field if draw(st.booleans()) else (fields[at][0], field[1])
        else:
            fields.insert(at, field)
    return fields


@given(_heads())
@settings(max_examples=400)
def test_a_response_head_is_refused_exactly_when_h2_would_refuse_it(fields):
    import h2.utilities

    from ccproxyd.upstream.http2 import _head

    flags = h2.utilities.HeaderValidationFlags(is_client=True, is_trailer=False, is_response_header=True,
                                               is_push_promise=False)
    try:
        list(h2.utilities.validate_headers(fields, flags))
        statuses = [value for name, value in fields if name == b":status"]
        refused = not re.fullmatch(rb"[0-9]{3}", statuses[0])      # h2 takes any :status; a status-code is 3DIGIT
    except h2.exceptions.ProtocolError:
        refused = True
    try:
        status, named = _head(fields)
    except httpx2.RemoteProtocolError:
        assert refused
    else:
        assert not refused
        assert fields[0][0] == b":status" and int(fields[0][1]) == status and named == fields[1:]


def test_a_malformed_head_fails_its_own_stream_not_the_connections_others():
    """h2's inbound checks are off for our connections (http2._head checks a head): a head with an
    upper-case field on one stream is refused for that stream, while the stream beside it on the
    same connection is answered whole (h2's own checks failed the connection, and every stream)."""
    from ccproxyd.upstream.h2connection import Connection
    from ccproxyd.upstream.http11 import _Connection
    from ccproxyd.upstream.http2 import _head

    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
    server.initiate_connection()
    preface = server.data_to_send()
    good = server.encoder.encode([(b":status", b"200"), (b"content-type", b"text/event-stream")])
    bad = server.encoder.encode([(b":status", b"200"), (b"X-Upper", b"1")])

    async def run():
        reader, writer = asyncio.StreamReader(), _Writer()
        owner = type("Owner", (), {"ping_interval": 20.0, "expiry": 120.0, "goaway_grace": 2.0,
                                   "_freed": lambda self, key: None, "_forget": lambda self, c: None})()
        connection = Connection(owner, ("https", "x", 443), _Connection(reader, writer))
        reader.feed_data(preface)
        await asyncio.sleep(0)
        url = httpx2.URL("https://x/v1/chat/completions")
        first, second = (connection.open("POST", url, [(b"host", b"x")], b"") for _ in range(2))
        for piece in (frame(1, 4, 1, good), frame(1, 4, 3, bad), frame(0, 0, 1, b"ok"), frame(0, 1, 1, b"")):
            reader.feed_data(piece)
            await asyncio.sleep(0)
        with pytest.raises(httpx2.RemoteProtocolError, match="x-upper|X-Upper"):
            _head(second.head.result())
        connection.release(second)
        answered = (_head(first.head.result())[0], b"".join(first.data), first.ended, first.error)
        closed = connection.closed
        connection.close()
        return answered, closed

    assert asyncio.run(run()) == ((200, b"ok", True, None), False)
