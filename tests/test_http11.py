"""The lean HTTP/1.1 upstream transport: body framing, interim answers, reuse, errors."""

from __future__ import annotations

import asyncio
import random

import httpx2
import pytest

from ccproxyd.http11 import ChunkedDecoder, Http11Transport


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
