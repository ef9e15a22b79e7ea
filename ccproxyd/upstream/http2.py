"""A lean HTTP/2 transport for httpx2 on h2's state machine, as http11.py is on h11's rules.

One connection per origin carries many streams; a second one opens when every open connection
has as many streams as the server's SETTINGS_MAX_CONCURRENT_STREAMS allows.  A graceful GOAWAY
lets the streams it names finish while new streams go to a new connection (after an error GOAWAY
they get `goaway_grace` seconds, should the server not close the connection as it must); streams
it refuses (above its last_stream_id, or RST_STREAM REFUSED_STREAM) were never processed and are
sent again on another connection (RFC 9113 sections 6.8 and 8.7).  Windows are sized for long
streams and consumed data is acknowledged as the reader takes it; an idle connection is PINGed,
and closed when the PING goes unanswered or when it has been idle for the keep-alive expiry.

Connecting (TLS with ALPN, an outbound proxy's CONNECT tunnel) is the HTTP/1.1 transport's; a
server that does not pick h2 by ALPN is spoken to over HTTP/1.1 from then on.  Errors are httpx2's
own exception types, as the HTTP/1.1 transport raises them (upstream.map_transport_error maps both).
"""

from __future__ import annotations

import asyncio
import re
import ssl

import httpx2

from .h2connection import GOAWAY_GRACE, PING_INTERVAL, Connection, Refused, Stream, timed
from .http11 import Http11Transport, RawTransport
from ..observe.redact import shown

REFUSED_TRIES = 4                     # sends of a request the server refused without processing it


class _Http11Only(Exception):
    """The server did not choose h2 by ALPN."""


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(httpx2.ReadTimeout("timed out reading the response"))


class _Watch:
    """A read timeout for a whole answer, as upstream.http11's: `waiting` is the wait now going
    on (the head, then each wait for more of the body; None between waits) and `since` when it
    began; the timer, when it fires, fails that wait if it has lasted `timeout`, else sets itself
    for when it would have.  One timer from the head to the body's end instead of one a wait."""

    __slots__ = ("loop", "timeout", "since", "waiting", "handle")

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop, self.timeout = loop, timeout
        self.since = 0.0
        self.waiting: asyncio.Future | None = None
        self.handle: asyncio.TimerHandle | None = loop.call_later(timeout, self._check)

    def wait_on(self, waiter: asyncio.Future) -> asyncio.Future:
        self.waiting, self.since = waiter, self.loop.time()
        return waiter

    def _check(self) -> None:
        now = self.loop.time()
        waiting = self.waiting
        if waiting is not None and waiting.done():      # it ended as the timer fired: not yet
            waiting = None                              # forgotten by its reader, not timed out
        if waiting is not None and now - self.since >= self.timeout:
            self.handle = None
            _expire(waiting)
            return
        self.handle = self.loop.call_at((self.since if waiting is not None else now) + self.timeout, self._check)

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


class _Body(httpx2.AsyncByteStream):
    """The answer's DATA as the reader takes it: all that arrived since the last take, at once."""

    def __init__(self, connection: Connection, stream: Stream, watch: _Watch | None) -> None:
        self._connection = connection
        self._stream = stream
        self._watch = watch             # the head's read timer, carried on to the body
        self._released = False

    async def __aiter__(self):
        stream = self._stream
        loop = asyncio.get_running_loop()
        watch = self._watch
        try:
            while True:
                data = stream.data
                if data:
                    piece = data[0] if len(data) == 1 else b"".join(data)
                    data.clear()
                    unacked, stream.unacked = stream.unacked, 0
                    self._connection.acknowledge(stream, unacked)
                    yield piece
                elif stream.error is not None:
                    error = stream.error
                    raise error if not isinstance(error, Refused) else httpx2.RemoteProtocolError(str(error))
                elif stream.ended:
                    break
                else:
                    stream.waiter = waiter = loop.create_future()
                    try:
                        await (watch.wait_on(waiter) if watch is not None else waiter)
                    finally:
                        stream.waiter = None
                        if watch is not None:
                            watch.waiting = None
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if self._watch is not None:
            self._watch.stop()
        if not self._released:
            self._released = True
            self._connection.release(self._stream)


def _head(received: list[tuple[bytes, bytes]]) -> tuple[int, list[tuple[bytes, bytes]]]:
    """The status and the named fields of a response head, which must be well formed (RFC 9113
    sections 8.2 and 8.3, as h2 checks an inbound head, in one pass here: h2's checks, a loop
    over every byte of every field, are off for this connection, h2connection.Connection): names
    of visible ASCII without upper case, a colon only first and only in `:status`, which comes
    once, before the other fields, and is three digits (status-code = 3DIGIT, as http11 reads a
    status line); no connection-specific field, `te` only as `trailers`; values without NUL, CR
    or LF, nor whitespace at either end.  Else the response is malformed: a stream error."""
    status = None
    named = []
    for name, value in received:
        if _NAME.fullmatch(name) is None or (value and _BAD_VALUE.search(value) is not None):
            raise _malformed(name, value)
        if name[0] == 0x3A:                     # a pseudo-header: only :status, once, first
            if name != b":status" or status is not None or named:
                raise _malformed(name, value)
            status = value
        elif name in _CONNECTION_FIELDS or (name == b"te" and value.lower() != b"trailers"):
            raise _malformed(name, value)
        else:
            named.append((name, value))
    if status is None or not _STATUS.fullmatch(status):
        raise httpx2.RemoteProtocolError(f"malformed :status {shown(status or b'', 20)!r}")
    return int(status), named


def _malformed(name: bytes, value: bytes) -> httpx2.RemoteProtocolError:
    return httpx2.RemoteProtocolError(f"malformed response field {shown(name, 40)!r}: {shown(value, 40)!r}")


_NAME = re.compile(rb":?[\x21-\x39\x3b-\x40\x5b-\x7e]+")     # visible ASCII, no upper case, a colon only first
_BAD_VALUE = re.compile(rb"[\x00\n\r]|\A[ \t]|[ \t]\Z")
_CONNECTION_FIELDS = frozenset((b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade"))
_STATUS = re.compile(rb"[0-9]{3}")


class Http2Transport(RawTransport):
    """HTTP/2 to https origins (http ones, and servers without h2, go to `http11`)."""

    def __init__(self, limits: httpx2.Limits, ssl_context: ssl.SSLContext | None = None,
                 proxy: str | None = None, ping_interval: float = PING_INTERVAL,
                 goaway_grace: float = GOAWAY_GRACE) -> None:
        self.http11 = Http11Transport(limits, ssl_context, proxy)
        self.ping_interval = ping_interval
        self.goaway_grace = goaway_grace
        self.expiry = limits.keepalive_expiry if limits.keepalive_expiry is not None else float("inf")
        self._max_connections = limits.max_connections or float("inf")
        self._pools: dict[tuple, list[Connection]] = {}
        self._dialling: dict[tuple, asyncio.Task] = {}
        self._waiters: dict[tuple, asyncio.Event] = {}
        self._http11_only: set[tuple] = set()
        self._closed = False

    async def send(self, method: str, url: httpx2.URL, headers: list[tuple[bytes, bytes]], body: bytes,
                   timeout: dict) -> httpx2.Response:
        """As Http11Transport.send; `headers` may include host (it becomes :authority)."""
        key = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        for _ in range(REFUSED_TRIES):
            if url.scheme != "https" or key in self._http11_only:
                return await self.http11.send(method, url, headers, body, timeout)
            try:
                return await self._exchange(method, url, headers, body, key, timeout)
            except Refused:
                continue
            except _Http11Only:
                self._http11_only.add(key)
        raise httpx2.RemoteProtocolError(f"the server refused the stream {REFUSED_TRIES} times")

    async def _exchange(self, method: str, url: httpx2.URL, headers: list[tuple[bytes, bytes]], body: bytes,
                        key: tuple, timeout: dict) -> httpx2.Response:
        connection = self._ready(key) or await timed(self._acquire(key, timeout.get("connect")), timeout.get("pool"),
                                                     httpx2.PoolTimeout, "waiting for a connection")
        stream = connection.open(method, url, headers, body)
        read = timeout.get("read")
        watch = _Watch(asyncio.get_running_loop(), read) if read else None
        try:
            await connection.send_body(stream, body, timeout.get("write"))
            if not stream.head.done():          # (cancelled with this task, the stream is released below)
                await (watch.wait_on(stream.head) if watch is not None else stream.head)
            if watch is not None:
                watch.waiting = None
            status, named = _head(stream.head.result())
        except BaseException:
            if watch is not None:
                watch.stop()
            connection.release(stream)
            raise
        return httpx2.Response(status, headers=named, stream=_Body(connection, stream, watch),
                               extensions={"http_version": b"HTTP/2"})

    def _ready(self, key: tuple) -> Connection | None:
        """An open connection with room for one more stream, if there is one."""
        for connection in self._pools.get(key, ()):
            if connection.capacity() > 0:
                return connection
        return None

    async def _acquire(self, key: tuple, connect_timeout: float | None) -> Connection:
        """A connection with room for one more stream: an open one, else a new one (one dial at a
        time per origin; the waiters look again when it is up or a stream ends)."""
        while True:
            if self._closed:
                raise httpx2.ConnectError("the transport is closed")
            pool = self._pools.get(key, ())
            for connection in pool:
                if connection.capacity() > 0:
                    return connection
            dial = self._dialling.get(key)
            if dial is None and len(pool) < self._max_connections:
                dial = asyncio.get_running_loop().create_task(self._dial(key, connect_timeout))
                self._dialling[key] = dial
                dial.add_done_callback(lambda _, key=key: self._dialling.pop(key, None))
            if dial is not None:
                await asyncio.shield(dial)
            else:
                event = self._waiters.setdefault(key, asyncio.Event())
                event.clear()
                await event.wait()

    async def _dial(self, key: tuple, timeout: float | None) -> Connection:
        raw = await self.http11._connect(key, timeout)
        ssl_object = raw.writer.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            raw.close()
            raise _Http11Only()
        connection = Connection(self, key, raw)
        try:
            await timed(asyncio.shield(connection.settled), timeout, httpx2.ConnectTimeout,
                         "waiting for the server's HTTP/2 settings")
        except BaseException:
            connection.close()
            raise
        if self._closed:
            connection.close()
            raise httpx2.ConnectError("the transport is closed")
        self._pools.setdefault(key, []).append(connection)
        return connection

    def _freed(self, key: tuple) -> None:
        event = self._waiters.get(key)
        if event is not None:
            event.set()

    def _forget(self, connection: Connection) -> None:
        pool = self._pools.get(connection.key)
        if pool and connection in pool:
            pool.remove(connection)
            self._freed(connection.key)

    async def aclose(self) -> None:
        """Close idle connections now; connections with streams close when their last one ends."""
        self._closed = True
        for pool in list(self._pools.values()):
            for connection in list(pool):
                connection.going_away = True
                connection._maybe_idle()
        self._pools = {}
        await self.http11.aclose()
