"""The fake upstream over TLS, speaking HTTP/2 (with the `h2` library) or HTTP/1.1.

Certificates are made at test time with `cryptography`: one CA, one server certificate for
127.0.0.1 and localhost; the CA's PEM is `ca_file`, the server's `cert_file` and `key_file`.  The same Script model as `fake_upstream` drives every answer;
ALPN decides the protocol per connection (HTTP/2 when the server offers it and the client asks),
so one server can test both of ccproxyd's clients.

HTTP/2 extras: `max_streams` (the server's SETTINGS_MAX_CONCURRENT_STREAMS); the markers GOAWAY
(send GOAWAY for every stream after the current one, finish the ones in flight, refuse new ones,
then close) and RESET (RST_STREAM this stream) in a Script's events; `close_idle()` closes every
connection that carries no request, as a server's idle timeout does; each connection counts the
PINGs it received (`pings`).

Why `h2` rather than hypercorn: the cases here are frame-level (a GOAWAY between two DATA frames,
RST_STREAM after a given event, a stream limit), which a framework hides; `h2` is already installed
as httpx2's HTTP/2 dependency, and the server stays a small, scriptable loop like fake_upstream.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import tempfile
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import h2.stream
import hyperframe.frame
import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .fake_upstream import GOAWAY, RESET, FakeUpstream, Script, wait_event


class Certificates:
    """A CA and a server certificate for 127.0.0.1 and localhost (P-256 keys, valid for a day),
    written as PEM to `ca_file`, `cert_file` and `key_file` in `directory`."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = Path(directory or tempfile.mkdtemp(prefix="ccproxyd-tls-"))
        ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ccproxyd test CA")])
        ca = (_certificate(ca_name, ca_name, ca_key.public_key(), ca_key.public_key())
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                           data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                           crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
              .sign(ca_key, hashes.SHA256()))
        server = (_certificate(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]), ca_name,
                               key.public_key(), ca_key.public_key())
                  .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                  .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                              x509.DNSName("localhost")]), critical=False)
                  .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                  .sign(ca_key, hashes.SHA256()))
        self.ca_file = self.directory / "ca.pem"
        self.cert_file = self.directory / "server.pem"
        self.key_file = self.directory / "server.key"
        self.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.cert_file.write_bytes(server.public_bytes(serialization.Encoding.PEM))
        self.key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))

    def server_context(self, alpn: list[str]) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        context.set_alpn_protocols(alpn)
        return context


def _certificate(subject: x509.Name, issuer: x509.Name, public_key, issuer_key) -> x509.CertificateBuilder:
    """A builder with what every certificate here has: serial, a day's validity, key identifiers."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key), critical=False))


class TlsFakeUpstream(FakeUpstream):
    """`http2=True` offers h2 and http/1.1 by ALPN; `http2=False` offers only http/1.1."""

    def __init__(self, http2: bool = True, max_streams: int = 100, certificates: Certificates | None = None):
        super().__init__()
        self.http2 = http2
        self.max_streams = max_streams
        self.certificates = certificates or Certificates()
        self.ssl = self.certificates.server_context(["h2", "http/1.1"] if http2 else ["http/1.1"])
        self._h2: dict[int, tuple[h2.connection.H2Connection, asyncio.StreamWriter]] = {}

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/v1"

    @property
    def ca_file(self) -> Path:
        return self.certificates.ca_file

    def close_idle(self) -> None:
        """Close every connection without a request in flight (a server's idle timeout)."""
        asyncio.run_coroutine_threadsafe(self._close_idle(), self.loop).result(10)

    async def _close_idle(self) -> None:
        """Dropped without GOAWAY or close_notify, as a load balancer or NAT forgets a connection."""
        for connection in self.connections:
            if not connection["closed"] and connection["busy"] == 0:
                connection["writer"].transport.abort()
                connection["closed"] = True

    async def _listen(self, port: int = 0) -> asyncio.AbstractServer:
        return await asyncio.start_server(self._serve, "127.0.0.1", port, backlog=1024, ssl=self.ssl)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if writer.get_extra_info("ssl_object").selected_alpn_protocol() != "h2":
            return await super()._serve(reader, writer)
        connection = self._connection(writer, "h2")
        connection["pings"] = 0
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        conn = h2.connection.H2Connection(config=config)
        conn.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.max_streams})
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        state = _H2State(conn, writer, connection)
        try:
            while not state.finished:
                data = await reader.read(65536)
                if not data:
                    break
                try:
                    events = conn.receive_data(data)
                except h2.exceptions.ProtocolError as exc:       # a client over our stream limit
                    connection["errors"].append(repr(exc))
                    writer.write(conn.data_to_send())
                    break
                for event in events:
                    self._on_event(state, event)
                writer.write(conn.data_to_send())
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            for task in state.tasks.values():
                task.cancel()
            connection["closed"] = True
            writer.close()

    def _on_event(self, state: "_H2State", event) -> None:
        conn = state.conn
        if isinstance(event, h2.events.RequestReceived):
            if state.draining:                                # after our GOAWAY: refused, safe to retry
                conn.reset_stream(event.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
                return
            state.requests[event.stream_id] = (dict(event.headers), event.headers, bytearray())
        elif isinstance(event, h2.events.DataReceived):
            if event.stream_id in state.requests:
                state.requests[event.stream_id][2].extend(event.data)
            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded) and event.stream_id in state.requests:
            task = asyncio.get_running_loop().create_task(self._request_h2(state, event.stream_id))
            state.tasks[event.stream_id] = task
        elif isinstance(event, h2.events.StreamReset):
            task = state.tasks.pop(event.stream_id, None)
            if task is not None:
                task.cancel()
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            state.window.set()
        elif isinstance(event, h2.events.PingReceived):         # h2 queues the ACK itself
            state.connection["pings"] += 1
        elif isinstance(event, h2.events.ConnectionTerminated):
            state.finished = True

    async def _request_h2(self, state: "_H2State", stream_id: int) -> None:
        headers, raw, body = state.requests.pop(stream_id)
        self.busy(state.connection, 1)
        try:
            path = headers[":path"]
            named = {k: v for k, v in raw if not k.startswith(":")}
            named = {"host": headers.get(":authority", ""), **named}
            if headers[":method"] == "POST" and path.endswith(("/chat/completions", "/responses")):
                head = "".join(f"{k}: {v}\r\n" for k, v in [("host", named["host"]), *(
                    (k, v) for k, v in raw if not k.startswith(":"))])
                self.requests.append({"path": path, "headers": named, "body": orjson.loads(bytes(body)),
                                      "raw_head": head, "connection": state.connection["id"],
                                      "stream": stream_id})
                script = self._script(self.requests[-1]["body"])
                await self._answer_h2(state, stream_id, script, named.get("authorization", "").encode())
            else:
                await state.send(stream_id, [(":status", "404"), ("content-length", "0")], b"", end=True)
        except (h2.exceptions.StreamClosedError, ConnectionError):
            pass
        finally:
            self.busy(state.connection, -1)
            state.tasks.pop(stream_id, None)
            if state.draining and not state.tasks:
                state.finished = True
                state.writer.close()

    async def _answer_h2(self, state: "_H2State", stream_id: int, script: Script, authorization: bytes) -> None:
        def echo(data: bytes) -> bytes:
            return data.replace(b"{authorization}", authorization)

        if script.drop:
            state.writer.transport.abort()
            return
        if script.first_byte_delay:
            await asyncio.sleep(script.first_byte_delay)
        extra = [(k.lower(), str(v)) for k, v in script.headers.items()]
        if script.status != 200 or script.body is not None:
            body = echo(script.body if isinstance(script.body, bytes) else orjson.dumps(script.body))
            await state.send(stream_id, [(":status", str(script.status)), ("content-type", "application/json"),
                                         *extra, ("content-length", str(len(body)))], body, end=True)
            return
        await state.send(stream_id, [(":status", "200"), ("content-type", "text/event-stream"), *extra])
        for event in script.events:
            if event is GOAWAY:
                state.goaway()
            elif event is RESET:
                state.conn.reset_stream(stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
                state.writer.write(state.conn.data_to_send())
                return
            elif isinstance(event, (bytes, dict)):
                data = event if isinstance(event, bytes) else b"data: " + orjson.dumps(event) + b"\n\n"
                await state.send(stream_id, None, echo(data), flush=False)
            else:
                state.writer.write(state.conn.data_to_send())
                await state.writer.drain()
                await wait_event(event)
        state.writer.write(state.conn.data_to_send())
        if script.cut:
            await state.writer.drain()
            state.writer.transport.abort()
            return
        if script.done:
            await state.send(stream_id, None, b"data: [DONE]\n\n")
            if script.linger:
                await asyncio.sleep(script.linger)
        await state.send(stream_id, None, b"", end=True)


class _H2State:
    """One HTTP/2 connection of the fake: the h2 state machine, its socket, and its streams."""

    def __init__(self, conn: h2.connection.H2Connection, writer: asyncio.StreamWriter, connection: dict):
        self.conn = conn
        self.writer = writer
        self.connection = connection
        self.requests: dict[int, tuple[dict, list, bytearray]] = {}
        self.tasks: dict[int, asyncio.Task] = {}
        self.window = asyncio.Event()
        self.draining = False
        self.finished = False

    def goaway(self) -> None:
        """A graceful GOAWAY naming the highest stream seen so far: streams up to it finish, later
        ones are refused.  Written as a raw frame: h2's close_connection() would stop the streams
        in flight too (its state machine allows no DATA after GOAWAY)."""
        self.draining = True
        self.writer.write(self.conn.data_to_send())
        frame = hyperframe.frame.GoAwayFrame(0, last_stream_id=self.conn.highest_inbound_stream_id, error_code=0)
        self.writer.write(frame.serialize())
        self.connection["goaway"] = True

    async def send(self, stream_id: int, headers: list | None, data: bytes = b"", end: bool = False,
                   flush: bool = True) -> None:
        """Headers and/or data, within the peer's flow-control windows.  `flush=False` leaves the
        frames in h2's buffer until the next send or wait, as the HTTP/1.1 fake writes an answer's
        chunks in one go (one DATA frame per event still; one TLS write for a burst of them)."""
        conn = self.conn
        if headers is not None:
            conn.send_headers(stream_id, headers, end_stream=end and not data)
            self.writer.write(conn.data_to_send())
        while data:
            size = min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size, len(data))
            if size <= 0:
                self.writer.write(conn.data_to_send())
                self.window.clear()
                await self.window.wait()
                continue
            piece, data = data[:size], data[size:]
            conn.send_data(stream_id, piece, end_stream=end and not data)
            if flush:
                self.writer.write(conn.data_to_send())
        if end and headers is None and not data and not _ended(conn, stream_id):
            conn.end_stream(stream_id)
            self.writer.write(conn.data_to_send())
        if flush:
            await self.writer.drain()


def _ended(conn: h2.connection.H2Connection, stream_id: int) -> bool:
    stream = conn.streams.get(stream_id)
    return stream is None or stream.state_machine.state in (h2.stream.StreamState.HALF_CLOSED_LOCAL,
                                                            h2.stream.StreamState.CLOSED)
