"""An HTTP CONNECT proxy on loopback (raw asyncio, its own thread), as a corporate egress runs one.

`CONNECT host:port` opens a tunnel and relays bytes both ways; every tunnel's target is recorded in
`tunnels`.  A plain request in absolute form (`POST http://host:port/path`) is relayed once and
recorded in `forwarded`.  `refuse` answers every CONNECT with that status instead.
"""

from __future__ import annotations

import asyncio
import threading


class ConnectProxy:
    def __init__(self) -> None:
        self.tunnels: list[str] = []
        self.forwarded: list[str] = []
        self.authorizations: list[str] = []
        self.refuse: int | None = None
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ConnectProxy":
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()

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
