"""A lean HTTP/1.1 transport for httpx2: keep-alive pool, one body piece per socket read.

httpx2's default transport (httpcore2 + h11 + anyio) costs tens of µs per HTTP chunk, and an SSE
stream sends one chunk per event.  This transport parses the status line and headers once and
hands the body of each socket read over whole, so a burst of events costs one iteration.
Upstreams.client uses it for providers without HTTP/2; errors are httpx2's own exception types.
Through an outbound proxy, https goes through a CONNECT tunnel and http in absolute form.
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
import time
import urllib.parse
from collections import deque

import httpx2

from ..observe.redact import shown
from .chunked import ChunkedDecoder

READ_SIZE = 65536
MAX_HEAD = 65536        # bytes of a response head (status line and headers), and of any one line
DRAIN_BYTES = 65536     # the most of an unread body's rest read to keep its connection
DRAIN_SECONDS = 0.25    # and the longest wait for it (the end of an answer is usually in flight)


# h11's grammar (_abnf.py): status-code = 3DIGIT; Content-Length = 1*DIGIT.  Python's int() is laxer ("-3", "0x3", "1_0", " 3").
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([0-9]{3})(?: (.*))?")
_DIGITS = re.compile(rb"[0-9]{1,18}")


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0
        self.absolute = False           # through a plain-http proxy: the request line names the URL
        self.proxy_headers: list[tuple[bytes, bytes]] = []

    def reusable(self, expiry: float) -> bool:
        """Open, not expired, and nothing received while idle: bytes that came after the last
        body (a response nobody asked for, a body longer than its framing said) would be read as
        the next request's answer.  asyncio's StreamReader has no public peek; its buffer is
        where those bytes wait (httpcore checks that an idle socket is not readable)."""
        return (not self.reader.at_eof() and not self.reader._buffer and not self.writer.is_closing()
                and time.monotonic() - self.idle_since < expiry)

    def close(self) -> None:
        self.writer.close()


async def _timed(awaitable, timeout: float | None, error: type[httpx2.TimeoutException], what: str):
    try:
        async with asyncio.timeout(timeout):
            return await awaitable
    except TimeoutError:
        raise error(f"timed out {what}") from None


class _Watch:
    """A read timeout for a whole response: `since` is when the read now waiting began (None
    between reads); the timer, when it fires, fails the reader with ReadTimeout if that read has
    waited `timeout`, else sets itself for when it would have.  One timer from the request's
    head to its body's end, instead of a timeout scope for each read."""

    __slots__ = ("loop", "reader", "timeout", "since", "handle", "what")

    def __init__(self, loop: asyncio.AbstractEventLoop, reader: asyncio.StreamReader, timeout: float,
                 what: str = "reading the body") -> None:
        self.loop, self.reader, self.timeout, self.what = loop, reader, timeout, what
        self.since: float | None = None
        self.handle = loop.call_later(timeout, self._check)

    def _check(self) -> None:
        now = self.loop.time()
        since = self.since
        if since is not None and now - since >= self.timeout:
            self.handle = None
            self.reader.set_exception(httpx2.ReadTimeout(f"timed out {self.what}"))
            return
        self.handle = self.loop.call_at((since if since is not None else now) + self.timeout, self._check)

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


class _Body(httpx2.AsyncByteStream):
    """The response body; gives the connection back to the pool once read to its end."""

    def __init__(self, transport: "Http11Transport", key: tuple, connection: _Connection, framing,
                 read_timeout: float | None, keep_alive: bool, watch: _Watch | None = None) -> None:
        self._transport = transport
        self._key = key
        self._connection = connection
        self._framing = framing          # ChunkedDecoder, bytes left (int), or None: until EOF
        self._timeout = read_timeout
        self._watch = watch              # the head's read timeout, carried on to the first reading
        self._keep_alive = keep_alive
        self._done = framing == 0
        self._surplus = False            # bytes arrived past the end of the body
        self._broken = False             # a read or the framing failed
        self._released = False

    async def __aiter__(self):
        async for body in self._pieces():
            if self._done:
                await self.aclose()             # the slot is free as soon as the body is complete
            if body:
                yield body
        await self.aclose()

    async def _pieces(self):
        """The decoded body of each socket read (possibly empty), until the body is complete.
        A read that waits `read_timeout` fails with ReadTimeout (`_Watch`: the exchange's, then
        a new one for a drain)."""
        reader = self._connection.reader
        loop = asyncio.get_running_loop()
        watch, self._watch = self._watch, None
        if watch is None and self._timeout is not None:
            watch = _Watch(loop, reader, self._timeout)
        try:
            while not self._done:
                try:
                    if watch is not None:
                        watch.since = loop.time()
                    try:
                        data = await reader.read(READ_SIZE)
                    except OSError as exc:
                        raise httpx2.ReadError(str(exc) or type(exc).__name__) from exc
                    if watch is not None:
                        watch.since = None
                    if not data:
                        if self._framing is None:
                            self._done = True
                            break
                        raise httpx2.RemoteProtocolError("peer closed connection without sending complete message body")
                    body = self._decode(data)
                except Exception:
                    self._broken = True             # never drained, never reused
                    raise
                yield body
        finally:
            if watch is not None:
                watch.stop()

    def _decode(self, data: bytes) -> bytes:
        framing = self._framing
        if isinstance(framing, ChunkedDecoder):
            body = framing.feed(data)
            self._done = framing.done
            return body
        if framing is None:
            return data
        body = data[:framing]
        self._framing = framing - len(body)
        self._done = self._framing == 0
        self._surplus = len(data) > len(body)
        return body

    async def aclose(self) -> None:
        """Give the connection back: to the pool when the body was read to its end, else (a reader
        that stopped early, e.g. at `data: [DONE]` before the last chunk) after the rest of the
        body is drained in the background, up to DRAIN_BYTES within DRAIN_SECONDS; else closed."""
        if self._released:
            return
        self._released = True
        if self._watch is not None:             # a body closed before it was read
            self._watch.stop()
            self._watch = None
        if (not self._done and not self._broken and self._keep_alive and self._framing is not None
                and not self._transport._closed):
            self._transport._drain_later(self)
        else:
            self._transport._release(self._key, self._connection, self._reusable())

    def _reusable(self) -> bool:
        framing = self._framing
        surplus = self._surplus or (isinstance(framing, ChunkedDecoder) and framing.surplus)
        return self._done and not self._broken and self._keep_alive and framing is not None and not surplus

    async def drain(self) -> None:
        read = 0
        try:
            async with asyncio.timeout(DRAIN_SECONDS):
                async for body in self._pieces():
                    read += len(body)
                    if read > DRAIN_BYTES:
                        break
        except (httpx2.HTTPError, TimeoutError, OSError):
            pass
        finally:
            self._transport._release(self._key, self._connection, self._reusable())


class RawTransport(httpx2.AsyncBaseTransport):
    """httpx2's transport interface over `send`, the one-exchange call that takes no httpx2.Request
    (both transports here; Upstreams calls `send` itself on the request path)."""

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = await request.aread()
        return await self.send(request.method, request.url, request.headers.raw, body,
                               request.extensions.get("timeout", {}))

    async def send(self, method: str, url: httpx2.URL, headers: list[tuple[bytes, bytes]], body: bytes,
                   timeout: dict) -> httpx2.Response:
        raise NotImplementedError


class Http11Transport(RawTransport):
    def __init__(self, limits: httpx2.Limits, ssl_context: ssl.SSLContext | None = None,
                 proxy: str | None = None) -> None:
        self._ssl = ssl_context
        self._proxy = urllib.parse.urlsplit(proxy) if proxy else None
        keepalive = limits.max_keepalive_connections
        self._max_keepalive = float("inf") if keepalive is None else keepalive     # httpx: None = no limit
        self._expiry = limits.keepalive_expiry if limits.keepalive_expiry is not None else float("inf")
        self._slots = asyncio.Semaphore(limits.max_connections) if limits.max_connections else None
        self._idle: dict[tuple, deque[_Connection]] = {}
        self._draining: set[asyncio.Task] = set()
        self._closed = False

    async def send(self, method: str, url: httpx2.URL, headers: list[tuple[bytes, bytes]], body: bytes,
                   timeout: dict) -> httpx2.Response:
        """One exchange without an httpx2.Request: `headers` must include host and content-length.
        `timeout` has httpx2's keys: connect, read, write, pool (seconds or None)."""
        key = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        if self._slots is not None:             # a free slot is taken at once, without a timeout scope
            await (self._slots.acquire() if not self._slots.locked() else _timed(
                self._slots.acquire(), timeout.get("pool"), httpx2.PoolTimeout, "waiting for a connection"))
        try:
            connection = self._idle_connection(key) or await self._connect(key, timeout.get("connect"))
            try:
                return await self._exchange(method, url, headers, body, key, connection, timeout)
            except BaseException:
                connection.close()
                raise
        except BaseException:
            self._release_slot()
            raise

    def _idle_connection(self, key: tuple) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if connection.reusable(self._expiry):
                return connection
            connection.close()
        return None

    async def _connect(self, key: tuple, timeout: float | None) -> _Connection:
        scheme, host, port = key
        if scheme == "https" and self._ssl is None:
            self._ssl = httpx2.create_ssl_context()
        ssl_context = self._ssl if scheme == "https" else None
        if self._proxy is not None:
            return await _timed(self._connect_via_proxy(scheme, host, port, ssl_context), timeout,
                                httpx2.ConnectTimeout, f"connecting to {host}:{port} through the proxy")
        try:
            reader, writer = await _timed(asyncio.open_connection(host, port, ssl=ssl_context, limit=MAX_HEAD),
                                          timeout, httpx2.ConnectTimeout, f"connecting to {host}:{port}")
        except OSError as exc:
            raise httpx2.ConnectError(str(exc) or type(exc).__name__) from exc
        return _Connection(reader, writer)

    async def _connect_via_proxy(self, scheme: str, host: str, port: int,
                                 ssl_context: ssl.SSLContext | None) -> _Connection:
        """https: CONNECT host:port, then TLS with the provider inside the tunnel.  http: a plain
        connection to the proxy, which takes requests in absolute form (`absolute` is set)."""
        proxy = self._proxy
        try:
            reader, writer = await asyncio.open_connection(
                proxy.hostname, proxy.port or (443 if proxy.scheme == "https" else 80), limit=MAX_HEAD,
                ssl=httpx2.create_ssl_context() if proxy.scheme == "https" else None)
        except OSError as exc:
            raise httpx2.ConnectError(f"cannot reach the proxy {proxy.hostname}: {exc}") from exc
        if scheme == "http":
            connection = _Connection(reader, writer)
            connection.absolute = True
            connection.proxy_headers = self._proxy_headers()
            return connection
        authority = f"{host}:{port}".encode("ascii")
        head = [b"CONNECT " + authority + b" HTTP/1.1\r\nhost: " + authority + b"\r\n"]
        head += [name + b": " + value + b"\r\n" for name, value in self._proxy_headers()]
        try:
            writer.write(b"".join(head) + b"\r\n")
            await writer.drain()
            version, status, reason, _ = await _read_head(reader)
            if not 200 <= status < 300:
                raise httpx2.ProxyError(f"the proxy answered CONNECT {host}:{port} with {status} "
                                        f"{reason.decode('latin-1')}")
            await writer.start_tls(ssl_context, server_hostname=host)
        except OSError as exc:
            writer.close()
            raise httpx2.ConnectError(str(exc) or type(exc).__name__) from exc
        except BaseException:
            writer.close()
            raise
        return _Connection(reader, writer)

    def _proxy_headers(self) -> list[tuple[bytes, bytes]]:
        proxy = self._proxy
        if proxy.username is None:
            return []
        credentials = f"{urllib.parse.unquote(proxy.username)}:{urllib.parse.unquote(proxy.password or '')}"
        return [(b"proxy-authorization", b"Basic " + base64.b64encode(credentials.encode()))]

    async def _exchange(self, method: str, url: httpx2.URL, headers: list[tuple[bytes, bytes]], body: bytes,
                        key: tuple, connection: _Connection, timeout: dict) -> httpx2.Response:
        target = str(url) if connection.absolute else url.raw_path.decode("ascii")
        head = [f"{method} {target} HTTP/1.1\r\n".encode("ascii")]
        head += [name + b": " + value + b"\r\n" for name, value in (*headers, *connection.proxy_headers)]
        try:
            writer = connection.writer
            writer.write(b"".join(head) + b"\r\n" + body)
            if writer.transport.is_closing() or writer.transport.get_write_buffer_size():   # else all went out
                await _timed(writer.drain(), timeout.get("write"), httpx2.WriteTimeout, "sending the request")
        except OSError as exc:
            raise httpx2.WriteError(str(exc) or type(exc).__name__) from exc
        read_timeout = timeout.get("read")
        watch = None
        if read_timeout is not None:
            loop = asyncio.get_running_loop()
            watch = _Watch(loop, connection.reader, read_timeout, "waiting for the response")
        try:
            while True:                     # interim answers (103 Early Hints, …) precede the real one
                if watch is not None:
                    watch.since = loop.time()
                version, status, reason, received = await _read_head(connection.reader)
                if not 100 <= status < 200:
                    break
            framing = _framing(method, status, received)
        except BaseException:
            if watch is not None:
                watch.stop()
            raise
        if watch is not None:
            watch.since, watch.what = None, "reading the body"
        keep_alive = version == b"HTTP/1.1" and b"close" not in _header(received, b"connection").lower()
        if isinstance(framing, ChunkedDecoder) and _header(received, b"content-length"):
            keep_alive = False              # both framings named: chunked wins, and the connection ends here
        stream = _Body(self, key, connection, framing, read_timeout, keep_alive, watch)
        return httpx2.Response(status, headers=received, stream=stream,
                              extensions={"http_version": version, "reason_phrase": reason})

    def _drain_later(self, body: _Body) -> None:
        task = asyncio.get_running_loop().create_task(body.drain())
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    def _release(self, key: tuple, connection: _Connection, reuse: bool) -> None:
        idle = self._idle.setdefault(key, deque())
        if reuse and not self._closed and len(idle) < self._max_keepalive:
            connection.idle_since = time.monotonic()
            idle.append(connection)
        else:
            connection.close()
        self._release_slot()

    def _release_slot(self) -> None:
        if self._slots is not None:
            self._slots.release()

    async def aclose(self) -> None:
        """Close idle connections now; connections still streaming close when their body does."""
        self._closed = True
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()


async def _read_head(reader: asyncio.StreamReader):
    try:
        lines = await _head_lines(reader)
    except asyncio.IncompleteReadError as exc:
        raise httpx2.RemoteProtocolError("server disconnected without sending a response") from exc
    except asyncio.LimitOverrunError as exc:
        raise httpx2.RemoteProtocolError("response head is too large") from exc
    except OSError as exc:
        raise httpx2.ReadError(str(exc) or type(exc).__name__) from exc
    return _parse_head(lines)


async def _head_lines(reader: asyncio.StreamReader) -> list[bytes]:
    """The head's lines up to the empty one, CRLF or bare LF (as h11 accepts), MAX_HEAD in all;
    one already read whole with CRLFs (what servers send) in one piece."""
    buffered = reader._buffer
    end = buffered.find(b"\r\n\r\n", 0, MAX_HEAD)
    if end > 0 and not buffered.startswith(b"\r\n") and b"\n" not in buffered[:end].replace(b"\r\n", b""):
        return (await reader.readexactly(end + 4))[:-4].split(b"\r\n")
    lines = []
    size = 0
    while True:
        line = await reader.readuntil(b"\n")
        size += len(line)
        if size > MAX_HEAD:
            raise httpx2.RemoteProtocolError("response head is too large")
        line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
        if not line:
            return lines
        lines.append(line)


def _parse_head(lines: list[bytes]) -> tuple[bytes, int, bytes, list[tuple[bytes, bytes]]]:
    status = _STATUS_LINE.fullmatch(lines[0]) if lines else None
    if status is None:
        raise httpx2.RemoteProtocolError(f"malformed status line {shown(lines[0], 80) if lines else b''!r}")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise httpx2.RemoteProtocolError(f"malformed header line {shown(line, 80)!r}")
        headers.append((name, value.strip()))
    return lines[0][:8], int(status.group(1)), status.group(2) or b"", headers


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes:
    return b",".join(value for key, value in headers if key.lower() == name)


def _framing(method: str, status: int, headers: list[tuple[bytes, bytes]]):
    """How the body ends (RFC 9112 section 6.3): a ChunkedDecoder, a byte count, or None (at EOF).
    A Transfer-Encoding wins over content-length: chunked when it is the final coding, else the
    body is read until the server closes the connection."""
    if method == "HEAD" or status < 200 or status in (204, 304):
        return 0
    coded = _header(headers, b"transfer-encoding")
    codings = (b"chunked",) if coded == b"chunked" else _transfer_codings(coded) if coded else ()
    if codings:
        return ChunkedDecoder() if codings[-1] == b"chunked" else None
    lengths = {value.strip() for key, value in headers if key.lower() == b"content-length"
               for value in value.split(b",")}
    if not lengths:
        return None
    if len(lengths) > 1:
        shown_lengths = sorted(shown(value, 40) for value in lengths)
        raise httpx2.RemoteProtocolError(f"conflicting content-length headers {shown_lengths!r}")
    length = lengths.pop()
    if not _DIGITS.fullmatch(length):
        raise httpx2.RemoteProtocolError(f"malformed content-length {shown(length, 40)!r}")
    return int(length)


def _transfer_codings(value: bytes) -> list[bytes]:
    """The codings of a Transfer-Encoding field value, in the order they were applied: a
    comma-separated list (RFC 9112 section 6.1), names case-insensitive, empty elements ignored
    (as h11 does; an empty list is no Transfer-Encoding).  chunked may only be the final coding,
    and identity is no coding at all (identity alone: the body is framed by its content-length).  Any other (gzip, deflate, compress, a name nobody
    registered) is one ccproxyd never asked for, since it sends no TE (section 7.4), and does not
    undo: an error, never a body passed on still coded."""
    written = [element.strip(b" \t") for element in value.split(b",")]     # as sent: an error quotes
    written = [element for element in written if element and element.lower() != b"identity"]   # these
    for position, element in enumerate(written, 1):
        coding = element.lower()
        if coding == b"chunked" and position == len(written):
            continue
        if coding == b"chunked":
            raise httpx2.RemoteProtocolError(f"transfer-encoding {shown(value, 60)!r}: chunked is not "
                                             "the final coding")
        raise httpx2.RemoteProtocolError(f"transfer-encoding {shown(value, 60)!r}: the coding "
                                         f"{shown(element, 40)!r} is not one ccproxyd can decode")
    return [element.lower() for element in written]
