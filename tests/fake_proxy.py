"""An HTTP CONNECT proxy on loopback (raw asyncio, its own thread), as a corporate egress runs one.

`CONNECT host:port` opens a tunnel and relays bytes both ways; every tunnel's target is recorded in
`tunnels`.  A plain request in absolute form (`POST http://host:port/path`) is relayed once and
recorded in `forwarded`.  `refuse` answers every CONNECT with that status instead.
"""

from __future__ import annotations

import asyncio

from .fake_upstream import LoopbackServer


class ConnectProxy(LoopbackServer):
    def __init__(self) -> None:
        super().__init__()
        self.tunnels: list[str] = []
        self.forwarded: list[str] = []
        self.authorizations: list[str] = []
        self.refuse: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            for line in head.decode("latin-1").split("\r\n")[1:]:
                if line.lower().startswith("proxy-authorization:"):
                    self.authorizations.append(line.split(":", 1)[1].strip())
            if method == "CONNECT":
                if self.refuse:
                    writer.write(f"HTTP/1.1 {self.refuse} Refused\r\ncontent-length: 0\r\n\r\n".encode())
                    await writer.drain()
                    return
                host, port = target.rsplit(":", 1)
                upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
                self.tunnels.append(target)
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
                await self._relay(reader, writer, upstream_reader, upstream_writer, b"")
            else:                                             # absolute form: http://host:port/path
                authority = target.split("//", 1)[1].split("/", 1)[0]
                host, port = authority.rsplit(":", 1)
                upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
                self.forwarded.append(target)
                path = "/" + target.split("//", 1)[1].split("/", 1)[1]
                first = head.replace(target.encode(), path.encode(), 1)
                await self._relay(reader, writer, upstream_reader, upstream_writer, first)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _relay(reader, writer, upstream_reader, upstream_writer, first: bytes) -> None:
        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.close()

        upstream_writer.write(first)
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
