"""Raw upstreams on loopback for the wire-fault tests (tests/test_wire_faults.py), which break the
rules that `fake_upstream` and `fake_tls` keep.

`RawHttp11` writes each answer's bytes exactly as scripted: any framing, right or wrong.
`RawH2` (TLS, h2 by ALPN, certificates from `fake_tls.Certificates`) writes each answer's frames
by hand, so that frames h2's own state machine would refuse to send can be sent (DATA after
END_STREAM, a head without :status, a window overrun); h2 still reads the client's side.

An answer is a list of steps.  Both servers take a float (a pause), a `Gate` (wait until it is
opened), CLOSE (close the connection after what was written) and HOLD (stay open and silent);
RawHttp11 writes bytes, RawH2 writes what a callable (h2 connection, stream id, Authorization)
returns: `head`, `data`, `raw` and `opens` make them.  RawH2 also takes DEAF: after its next read,
it reads nothing more from the connection (what the client sends piles up in the buffers).
`{authorization}` in the bytes becomes the request's Authorization header, as servers that echo
the key do.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from .fake_upstream import Gate, LoopbackServer

CLOSE = "close"
HOLD = "hold"
DEAF = "deaf"


class RawHttp11(LoopbackServer):
    """Each request gets the next queued answer (else `default`); without CLOSE the connection
    stays open for its next request.  `requests` records each one's connection (numbered from 1)
    and Authorization, and `played` once its answer was written to the end."""

    def __init__(self, default: list) -> None:
        super().__init__()
        self.default = default
        self.answers: deque[list] = deque()
        self.requests: list[dict] = []
        self.connections = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reset(self) -> None:
        self.answers.clear()
        self.requests.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        connection = self.connections
        try:
            while True:
                head_ = await reader.readuntil(b"\r\n\r\n")
                headers = dict(line.split(": ", 1) for line in head_.decode("latin-1").split("\r\n")[1:] if ": " in line)
                headers = {k.lower(): v for k, v in headers.items()}
                await reader.readexactly(int(headers["content-length"]))
                request = {"connection": connection, "authorization": headers.get("authorization", "")}
                self.requests.append(request)
                steps = self.answers.popleft() if self.answers else self.default
                going_on = await _play(writer, steps, request["authorization"].encode())
                request["played"] = True
                if not going_on:
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


async def _play(writer: asyncio.StreamWriter, steps: list, authorization: bytes) -> bool:
    """Carry out an answer's steps; False once the connection is closed."""
    for step in steps:
        if step == CLOSE:
            await writer.drain()
            writer.close()
            return False
        if step == HOLD:
            await writer.drain()
            await asyncio.sleep(60)
        elif isinstance(step, Gate):
            await writer.drain()
            await step.wait()
        elif isinstance(step, (int, float)):
            await writer.drain()
            await asyncio.sleep(step)
        else:
            writer.write(step.replace(b"{authorization}", authorization))
    await writer.drain()
    return True


def h11(body: bytes, *headers: str, framing: str = "chunked", status: int = 200,
        kind: str = "text/event-stream") -> bytes:
    """A well-formed HTTP/1.1 answer: its head and its body, chunked (one chunk) or with content-length."""
    head_ = f"HTTP/1.1 {status} OK\r\ncontent-type: {kind}\r\n" + "".join(h + "\r\n" for h in headers)
    if framing == "chunked":
        return (head_ + "transfer-encoding: chunked\r\n\r\n").encode() + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    return (head_ + f"content-length: {len(body)}\r\n\r\n").encode() + body


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    """An HTTP/2 frame by hand (RFC 9113 section 4.1)."""
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


DATA, HEADERS, SETTINGS, PING, GOAWAY, CONTINUATION = 0x0, 0x1, 0x4, 0x6, 0x7, 0x9       # frame types
END_STREAM, END_HEADERS = 0x1, 0x4                                         # flags
INTERNAL_ERROR, FLOW_CONTROL_ERROR, ENHANCE_YOUR_CALM = 0x2, 0x3, 0xB      # error codes


class RawH2(LoopbackServer):
    """Each request (a stream the client ended) gets the next queued answer (else `default`).
    `requests` records each one's connection (numbered from 1), stream and Authorization;
    `connections`, for each, the GOAWAY error codes and the PING ACKs the client sent, whether
    it is closed, and whether it was made deaf."""

    def __init__(self, certificates, default: list) -> None:
        super().__init__()
        self.context = certificates.server_context(["h2"])
        self.default = default
        self.answers: deque[list] = deque()
        self.requests: list[dict] = []
        self.connections: list[dict] = []

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/v1"

    def reset(self) -> None:
        self.answers.clear()
        self.requests.clear()

    async def _listen(self, port: int = 0) -> asyncio.AbstractServer:
        return await asyncio.start_server(self._serve, "127.0.0.1", port, ssl=self.context)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        record = {"id": len(self.connections) + 1, "goaway": [], "ping_acks": 0, "closed": False, "deaf": False}
        self.connections.append(record)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        heads: dict[int, dict] = {}
        tasks: set[asyncio.Task] = set()
        try:
            while data_ := await reader.read(65536):
                try:
                    events = conn.receive_data(data_)
                except h2.exceptions.ProtocolError:
                    break
                for event in events:
                    if isinstance(event, h2.events.RequestReceived):
                        heads[event.stream_id] = dict(event.headers)
                    elif isinstance(event, h2.events.StreamEnded) and event.stream_id in heads:
                        authorization = heads.pop(event.stream_id).get(b"authorization", b"")
                        self.requests.append({"connection": record["id"], "stream": event.stream_id,
                                              "authorization": authorization.decode()})
                        steps = self.answers.popleft() if self.answers else self.default
                        task = asyncio.get_running_loop().create_task(
                            self._answer(conn, writer, event.stream_id, steps, authorization, record))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        record["goaway"].append(event.error_code)
                    elif isinstance(event, h2.events.PingAckReceived):
                        record["ping_acks"] += 1
                    elif isinstance(event, h2.events.DataReceived):
                        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                writer.write(conn.data_to_send())
                while record["deaf"] and not writer.is_closing():
                    await asyncio.sleep(0.05)
        except (ConnectionError, ssl.SSLError, asyncio.CancelledError):
            pass
        finally:
            record["closed"] = True
            for task in tasks:
                task.cancel()
            writer.close()

    async def _answer(self, conn, writer, stream_id: int, steps: list, authorization: bytes, record: dict) -> None:
        try:
            for step in steps:
                if step == DEAF:
                    record["deaf"] = True
                elif callable(step):
                    writer.write(step(conn, stream_id, authorization))
                elif not await _play(writer, [step], authorization):
                    return
            await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass


def head(*fields: tuple[bytes, bytes]):
    """A step: a HEADERS frame of these fields, encoded by the connection's own HPACK encoder."""
    def make(conn, stream_id, authorization):
        block = conn.encoder.encode([(k, v.replace(b"{authorization}", authorization)) for k, v in fields])
        return frame(HEADERS, END_HEADERS, stream_id, block)
    return make


def data(payload: bytes, end: bool = False):
    """A step: one DATA frame (at most 16,384 bytes, the client's frame size)."""
    return lambda conn, stream_id, authorization: frame(DATA, END_STREAM if end else 0, stream_id,
                                                        payload.replace(b"{authorization}", authorization))


def raw(make):
    """A step made of the stream id alone."""
    return lambda conn, stream_id, authorization: make(stream_id)


def opens(gate: Gate):
    """A step: open `gate` (where another answer waits)."""
    return lambda conn, stream_id, authorization: (gate.open(), b"")[1]


SSE_HEAD = ((b":status", b"200"), (b"content-type", b"text/event-stream"))


def h2_answer(body: bytes, *fields: tuple[bytes, bytes]) -> list:
    """A well-formed HTTP/2 answer: an event-stream head (and `fields`), then `body` and its end."""
    return [head(*SSE_HEAD, *fields), data(body, end=True)]
