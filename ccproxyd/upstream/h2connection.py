"""One HTTP/2 connection of the HTTP/2 transport (http2.py): h2's state machine, its socket, a
reader task and its streams.

The reader hands each read to h2 with the runs of DATA frames of one stream merged (`coalesce`),
wakes the streams' readers, and fails every open stream with httpx2's exception types when the
connection ends; a GOAWAY fails the streams above its last_stream_id at once (with `Refused`: the
transport sends those again), and after an error GOAWAY the others get `goaway_grace` seconds
(GOAWAY_GRACE) to end before they fail too.  An idle connection is PINGed every `ping_interval`
seconds and closed when a PING goes unanswered or it has been idle for the keep-alive expiry; the
server's PINGs and SETTINGS are answered, until more than MAX_QUEUED_ACKS of their ACKs wait on a
socket the server does not read (a flood: the connection fails).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import httpx2

from .h2frames import QUIET, Frames, coalesce, data_frames
from .headers_kept import KeptHeaders
from .http11 import READ_SIZE, _Connection

if TYPE_CHECKING:
    from .http2 import Http2Transport

STREAM_WINDOW = 4 * 1024 * 1024       # SETTINGS_INITIAL_WINDOW_SIZE: a stream is never held up by its window
CONNECTION_WINDOW = 32 * 1024 * 1024  # the connection's receive window, shared by its streams
PING_INTERVAL = 20.0                  # seconds idle before a PING; unanswered by the next one: closed
# ACKs of the server's PINGs and SETTINGS that may wait unsent, queued behind a socket the server
# does not read (CVE-2019-9512 "Ping Flood", CVE-2019-9515 "Settings Flood"; Go's
# maxQueuedControlFrames): more of them than this since the write buffer last shrank, with at
# least their bytes still in it, is a connection error.  A server that reads what it is sent gets
# every one answered, however many; the client's own keep-alive PINGs are not counted.
MAX_QUEUED_ACKS = 10_000
_SMALLEST_ACK = 9                       # bytes of a SETTINGS ACK frame (a header; a PING ACK is 17)
# Seconds that the streams an error GOAWAY names as processed (at or below its last_stream_id) are
# given to end.  A server that sends GOAWAY for an error must close the connection next (RFC 9113
# section 5.4.1), which fails them at once; one that keeps the socket open and silent instead would
# leave them waiting out the provider's read_timeout (minutes): after this grace they fail as a
# dropped connection, and the connection is closed.
GOAWAY_GRACE = 2.0
_DROP = frozenset({b"host", b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding",
                   b"upgrade", b"te"})   # RFC 9113 section 8.2.2: connection-specific, never sent


class _H2(h2.connection.H2Connection):
    """h2's state machine with three changes.  h2 4.x moves its connection state machine to CLOSED
    on receiving GOAWAY, after which any DATA for the streams GOAWAY lets finish raises ProtocolError
    (python-hyper/h2 issue #1181, https://github.com/python-hyper/h2/issues/1181, open).  A GOAWAY
    received while open keeps the connection open here; the transport itself never opens a stream
    on it again.  DATA after a stream's END_STREAM is a connection error (below).  And received
    frames are read by `h2frames.Frames`, whose frames are not formatted for h2's trace line."""

    def __init__(self, config: h2.config.H2Configuration) -> None:
        super().__init__(config=config)
        self.incoming_buffer = Frames(server=not config.client_side)
        table = self._frame_dispatch_table
        table.update({QUIET[kind]: receive for kind, receive in list(table.items())})

    def _receive_goaway_frame(self, frame):
        state = self.state_machine.state
        pending = self.data_to_send()            # the GOAWAY handler drops what was queued to send
        frames, events = super()._receive_goaway_frame(frame)
        if state is h2.connection.ConnectionState.CLIENT_OPEN:
            self.state_machine.state = state
        self._data_to_send += pending
        return frames, events

    def _handle_data_on_closed_stream(self, events, exc, frame):
        """h2 answers DATA on any closed stream with RST_STREAM and goes on.  DATA on a stream the
        server itself ended is no late frame of ours to forget: the server has lost track of its
        streams, and that DATA may belong to another one, which would then complete with a hole.
        A connection error (RFC 7540 section 5.1 required one; RFC 9113 allows it), which fails
        every stream of the connection.  A stream the client reset may still get DATA: as h2 does."""
        if self._stream_is_closed_by_end(exc.stream_id):       # both sides ended it: the server had
            raise _DataAfterEnd(f"DATA on stream {exc.stream_id} after its END_STREAM")
        return super()._handle_data_on_closed_stream(events, exc, frame)


class _DataAfterEnd(h2.exceptions.ProtocolError):
    """DATA on a stream the server had ended: h2 sends GOAWAY with this code, the reader fails
    every stream of the connection (`Connection._read`)."""
    error_code = h2.errors.ErrorCodes.STREAM_CLOSED


class Refused(Exception):
    """The server refused a stream before processing it: safe to send again elsewhere."""


class Stream:
    __slots__ = ("id", "head", "data", "unacked", "ended", "error", "waiter")

    def __init__(self, stream_id: int, head: asyncio.Future) -> None:
        self.id = stream_id
        self.head = head                # -> (status, headers) once the answer's head arrives
        self.data: list[bytes] = []     # received, not yet taken by the reader
        self.unacked = 0                # flow-controlled bytes in `data`
        self.ended = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future | None = None

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def fail(self, error: BaseException) -> None:
        if self.error is None and not self.ended:
            self.error = error
            if not self.head.done():
                self.head.set_exception(error)
            self.wake()


class Connection:
    """One HTTP/2 connection: the h2 state machine, its socket, a reader task and its streams."""

    def __init__(self, transport: "Http2Transport", key: tuple, connection: _Connection) -> None:
        self.transport = transport
        self.key = key
        self.reader = connection.reader
        self.writer = connection.writer
        config = h2.config.H2Configuration(client_side=True, header_encoding=None,   # a response head is checked
                                           validate_inbound_headers=False,         # in one pass by http2._head
                                           validate_outbound_headers=False, normalize_outbound_headers=False)
        self.conn = conn = _H2(config=config)
        conn.encoder = KeptHeaders(conn.encoder)        # a request's repeated headers: encoded once
        conn.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW})
        conn.initiate_connection()
        conn.increment_flow_control_window(CONNECTION_WINDOW - conn.inbound_flow_control_window)
        self.streams: dict[int, Stream] = {}   # streams open at the HTTP/2 level
        self.live = 0                   # bodies not yet released (they may still acknowledge data)
        self.settled = asyncio.get_running_loop().create_future()    # the server's first SETTINGS
        self.window = asyncio.Event()   # a window opened: a request body may go on
        self.going_away = False         # GOAWAY received, or closing: no new streams
        self.closed = False
        self.idle_since = time.monotonic()
        self.pinged = False             # a PING is unanswered
        self.acks = 0                   # the server's PINGs and SETTINGS since the write buffer last shrank
        self.backlog = 0                # bytes in the write buffer when last looked at
        self.timer: asyncio.TimerHandle | None = None
        self.deadline: asyncio.TimerHandle | None = None   # the grace an error GOAWAY left its streams
        self.flush()
        self.task = asyncio.get_running_loop().create_task(self._read())

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.closed:
            self.writer.write(data)

    def capacity(self) -> int:
        if self.going_away or self.closed or self.conn.highest_outbound_stream_id >= 2**31 - 3:
            return 0
        return self.conn.remote_settings.max_concurrent_streams - len(self.streams)

    def open(self, method: str, url: httpx2.URL, headers: list[tuple[bytes, bytes]], body: bytes) -> Stream:
        """A new stream with the request's head and as much of its body as the windows allow
        queued (synchronously: the capacity just checked holds); `send_body` writes them."""
        conn = self.conn
        stream_id = conn.get_next_available_stream_id()
        head = [(b":method", method.encode("ascii")), (b":scheme", b"https"), (b":authority", url.netloc),
                (b":path", url.raw_path)]
        head += [(name, value) for name, value in ((name.lower(), value) for name, value in headers)
                 if name not in _DROP]
        conn.send_headers(stream_id, head, end_stream=not body)
        stream = self.streams[stream_id] = Stream(stream_id, asyncio.get_running_loop().create_future())
        self.live += 1
        return stream

    async def send_body(self, stream: Stream, body: bytes, timeout: float | None) -> None:
        """The body in DATA frames, all that the windows allow per write (with the head, the
        first time): one write for a request within the server's initial window."""
        conn = self.conn
        view = memoryview(body)
        while True:
            if stream.error is not None:
                raise stream.error
            try:
                while view:
                    size = min(conn.local_flow_control_window(stream.id), conn.max_outbound_frame_size, len(view))
                    if size <= 0:
                        break
                    conn.send_data(stream.id, bytes(view[:size]), end_stream=size == len(view))
                    view = view[size:]
            except h2.exceptions.ProtocolError as exc:       # the stream or the connection ended meanwhile
                raise stream.error or httpx2.WriteError(f"cannot send the request body: {exc}") from None
            self.flush()
            transport = self.writer.transport
            if transport.is_closing() or transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]:
                try:                            # the socket is behind: wait for it (cheap to skip when not)
                    await timed(self.writer.drain(), timeout, httpx2.WriteTimeout, "sending the request")
                except OSError as exc:
                    raise httpx2.WriteError(str(exc) or type(exc).__name__) from exc
            if not view:
                return
            self.window.clear()
            if conn.local_flow_control_window(stream.id) <= 0:
                await timed(self.window.wait(), timeout, httpx2.WriteTimeout, "sending the request")

    def acknowledge(self, stream: Stream, size: int) -> None:
        if size and not self.closed:
            self.conn.acknowledge_received_data(size, stream.id)
            self.flush()

    def release(self, stream: Stream) -> None:
        """The reader is done with `stream`: reset it if the answer is still coming."""
        self.live -= 1
        if self.streams.pop(stream.id, None) is not None and not self.closed:
            try:
                self.conn.reset_stream(stream.id, h2.errors.ErrorCodes.CANCEL)
            except h2.exceptions.StreamClosedError:
                pass
            self.flush()
        self._maybe_idle()

    def _maybe_idle(self) -> None:
        if self.streams or self.closed:
            return
        if self.going_away:
            self.close()
            return
        if not self.live:
            # data that arrived for streams already reset was never acknowledged: give the window back
            missing = CONNECTION_WINDOW - self.conn.inbound_flow_control_window
            if missing > CONNECTION_WINDOW // 4:
                self.conn.increment_flow_control_window(missing)
                self.flush()
        self.idle_since = time.monotonic()
        self.transport._freed(self.key)
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self.transport.ping_interval, self._tick)

    def _tick(self) -> None:
        """While idle: PING; a PING still unanswered a tick later means a dead connection."""
        self.timer = None
        if self.closed or self.streams:
            return
        if self.pinged or time.monotonic() - self.idle_since >= self.transport.expiry:
            self.close()
            return
        self.pinged = True
        self.conn.ping(b"ccproxyd")
        self.flush()
        self.timer = asyncio.get_running_loop().call_later(self.transport.ping_interval, self._tick)

    async def _read(self) -> None:
        error: BaseException = httpx2.RemoteProtocolError("the server closed the connection")
        rest = b""
        try:
            while True:
                data = await self.reader.read(READ_SIZE)
                if not data:
                    break
                data, rest = coalesce(rest + data if rest else data, self.conn.max_inbound_frame_size)
                pieces = data_frames(data, self.conn.max_inbound_frame_size)
                if pieces is None or self.conn.incoming_buffer.in_header_block or not self._take(pieces):
                    try:
                        events = self.conn.receive_data(data)
                    except h2.exceptions.ProtocolError as exc:
                        self.flush()                 # h2 queued a GOAWAY naming the error
                        error = httpx2.RemoteProtocolError(f"HTTP/2 protocol error: {exc}")
                        break
                    for event in events:
                        self._on_event(event)
                self.flush()
                if self.acks and not self.closed and self._flooded():     # (closed: its transport is gone)
                    error = httpx2.RemoteProtocolError(
                        f"HTTP/2 control frame flood: the server sent more than {MAX_QUEUED_ACKS} PINGs and SETTINGS "
                        "without reading their ACKs")
                    self.writer.transport.abort()      # what is queued would never be read
                    break
        except OSError as exc:
            error = httpx2.ReadError(str(exc) or type(exc).__name__)
        except asyncio.CancelledError:
            error = httpx2.RemoteProtocolError("the connection was closed")
        finally:
            self._lost(error)

    def _take(self, pieces: list[tuple[int, bytes]]) -> bool:
        """A read of DATA frames only (no padding, no END_STREAM, none longer than the connection
        takes, none inside a header block), each for a stream whose answer
        is under way and within its windows and its content-length: the payloads go to their
        streams, counted where h2 counts them (the connection's and the stream's windows, which
        `acknowledge` opens again through h2, and the length received), without h2 parsing them
        as frames and events (12 us a read).  False, nothing taken: h2 reads them, and raises
        what it raises for them."""
        conn = self.conn
        sizes: dict[int, int] = {}
        for stream_id, payload in pieces:
            sizes[stream_id] = sizes.get(stream_id, 0) + len(payload)
        if sum(sizes.values()) > conn.inbound_flow_control_window:
            return False
        for stream_id, size in sizes.items():
            stream, state = self.streams.get(stream_id), conn.streams.get(stream_id)
            if (stream is None or state is None or not stream.head.done()
                    or size > state.inbound_flow_control_window
                    or (state._expected_content_length is not None
                        and state._actual_content_length + size > state._expected_content_length)):
                return False
        conn._inbound_flow_control_window_manager.window_consumed(sum(sizes.values()))
        for stream_id, size in sizes.items():
            state = conn.streams[stream_id]
            state._inbound_window_manager.window_consumed(size)
            state._actual_content_length += size
        for stream_id, payload in pieces:
            stream = self.streams[stream_id]
            stream.data.append(payload)
            stream.unacked += len(payload)
            stream.wake()
        return True

    def _on_event(self, event) -> None:
        kind = type(event)
        if kind is h2.events.DataReceived:
            stream = self.streams.get(event.stream_id)
            if stream is None:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                return
            stream.data.append(event.data)
            stream.unacked += event.flow_controlled_length
            stream.wake()
        elif kind is h2.events.StreamEnded:
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None:
                stream.ended = True
                stream.wake()
                self._maybe_idle()
        elif kind is h2.events.ResponseReceived:
            stream = self.streams.get(event.stream_id)
            if stream is not None and not stream.head.done():
                stream.head.set_result(event.headers)
        elif kind is h2.events.StreamReset:
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None:
                code = event.error_code
                if code == h2.errors.ErrorCodes.REFUSED_STREAM and not stream.head.done():
                    stream.fail(Refused(f"stream {stream.id} refused"))
                else:
                    stream.fail(httpx2.RemoteProtocolError(f"the server reset the stream ({_name(code)})"))
                self._maybe_idle()
        elif kind in (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged):
            self.window.set()
            if kind is h2.events.RemoteSettingsChanged:
                self.acks += 1                  # h2 has queued its ACK
                if not self.settled.done():
                    self.settled.set_result(None)
                self.transport._freed(self.key)
        elif kind is h2.events.PingAckReceived:
            self.pinged = False
        elif kind is h2.events.PingReceived:          # h2 has queued its ACK
            self.acks += 1
        elif kind is h2.events.ConnectionTerminated:
            self._goaway(event)

    def _flooded(self) -> bool:
        """True when the server's PINGs and SETTINGS have queued more than MAX_QUEUED_ACKS ACKs
        that the socket has not taken: it sends them faster than it reads, or does not read at all."""
        backlog = self.writer.transport.get_write_buffer_size()
        if backlog < self.backlog:      # emptied or shrunk: the server reads (a large request body
            self.acks = 0               # in the buffer is no flood of ACKs)
        self.backlog = backlog
        if not backlog:
            return False
        return self.acks > MAX_QUEUED_ACKS and backlog >= MAX_QUEUED_ACKS * _SMALLEST_ACK

    def _goaway(self, event: h2.events.ConnectionTerminated) -> None:
        """Streams above last_stream_id were not processed: sent again elsewhere.  The others
        finish here: after a graceful GOAWAY as they would have; after an error GOAWAY the close
        that must follow it ends them, and if it does not come they fail `goaway_grace` seconds
        later (GOAWAY_GRACE)."""
        self.going_away = True
        self.transport._forget(self)
        for stream_id in [i for i in self.streams if i > event.last_stream_id]:
            self.streams.pop(stream_id).fail(Refused(f"stream {stream_id} was after GOAWAY's last stream"))
        if event.error_code == h2.errors.ErrorCodes.NO_ERROR:
            self._maybe_idle()
        elif not self.streams:
            self.close()
        elif self.deadline is None:
            grace = self.transport.goaway_grace
            error = httpx2.RemoteProtocolError(
                f"the server sent GOAWAY ({_name(event.error_code)}) and then neither closed the connection "
                f"nor ended the stream within {grace:g} s")
            self.deadline = asyncio.get_running_loop().call_later(grace, self._lost, error)

    def _lost(self, error: BaseException) -> None:
        self.going_away = True
        self.transport._forget(self)
        if not self.settled.done():
            self.settled.set_exception(error)
            self.settled.exception()                # retrieved: no "never retrieved" warning
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            stream.fail(error)
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.going_away = True
        self.flush()
        self.closed = True
        for timer in (self.timer, self.deadline):
            if timer is not None:
                timer.cancel()
        self.transport._forget(self)
        self.writer.close()
        if self.task is not asyncio.current_task():
            self.task.cancel()


def _name(code) -> str:
    return code.name if isinstance(code, h2.errors.ErrorCodes) else f"error code {code}"


async def timed(awaitable, timeout: float | None, error: type[httpx2.TimeoutException], what: str):
    try:
        async with asyncio.timeout(timeout):
            return await awaitable
    except TimeoutError:
        raise error(f"timed out {what}") from None
