"""A scriptable OpenAI-compatible upstream: a real HTTP/1.1 server on loopback (raw asyncio).

Each POST to /v1/chat/completions (or /v1/responses) takes the next queued Script (or the default answer) and
records the request (with the number of the connection it came on).  Scripts can stream chunks,
sleep, send raw bytes, answer with an error status, or cut the connection mid-stream.
`fake_tls.TlsFakeUpstream` serves the same scripts over TLS, by HTTP/2 or HTTP/1.1.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import orjson


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


GOAWAY = _Marker("GOAWAY")      # HTTP/2: GOAWAY now, this stream and earlier ones finish (HTTP/1.1: ignored)
RESET = _Marker("RESET")        # HTTP/2: RST_STREAM this stream now (HTTP/1.1: the connection is cut)


class Gate:
    """A Script event: the answer waits there until the test calls `open()` (from any thread), or
    `timeout` seconds pass.  `reached` is set once an answer is waiting at the gate."""

    def __init__(self, timeout: float = 20.0) -> None:
        self.timeout = timeout
        self.reached = threading.Event()
        self._open = threading.Event()

    def open(self) -> None:
        self._open.set()

    async def wait(self) -> None:
        self.reached.set()
        for _ in range(int(self.timeout / 0.01)):
            if self._open.is_set():
                return
            await asyncio.sleep(0.01)


class Barrier(Gate):
    """A Script event shared by `parties` answers: each waits there until all of them have
    arrived (or `timeout` passes), so that they are provably in flight at the same time."""

    def __init__(self, parties: int, timeout: float = 10.0) -> None:
        super().__init__(timeout)
        self.parties = parties
        self.arrived = 0

    async def wait(self) -> None:
        self.arrived += 1
        if self.arrived >= self.parties:
            self.open()
        await super().wait()


async def wait_event(event) -> bool:
    """Carry out a Script event that is not data: a pause, a Gate or a Barrier; False for data."""
    if isinstance(event, Gate):
        await event.wait()
    elif isinstance(event, (int, float)):
        await asyncio.sleep(event)
    else:
        return False
    return True


@dataclass
class Script:
    events: list = field(default_factory=list)   # dict (a chunk), bytes (raw SSE text), float (sleep
                                                 # seconds), a Gate or Barrier, or a marker: GOAWAY, RESET
    status: int = 200
    body: bytes | dict | None = None             # error body, or a whole JSON completion
    headers: dict = field(default_factory=dict)
    done: bool = True                            # send `data: [DONE]`
    cut: bool = False                            # drop the connection instead of ending the stream
    first_byte_delay: float = 0.0
    linger: float = 0.0                          # seconds to keep the connection open after [DONE]
    drop: bool = False                           # close the connection without answering
    # "{authorization}" in a body or a raw event is replaced by the request's Authorization header,
    # as gateways and self-hosted servers that echo the key do ("Incorrect API key: Bearer sk-…")


def chunk(delta: dict | None = None, finish: str | None = None, usage: dict | None = None,
          choices: bool = True) -> dict:
    out = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 1, "model": "gpt-mock"}
    out["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish}] if choices else []
    out["usage"] = usage
    return out


def usage(prompt: int = 10, completion: int = 5, cached: int = 0, total: int | None = None) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": total if total is not None else prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


def text_script(*pieces: str, finish: str = "stop", use: dict | None = None) -> Script:
    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": p}) for p in pieces]
    events.append(chunk(finish=finish))
    events.append(chunk(choices=False, usage=use or usage()))
    return Script(events=events)


def tool_script(name: str, arguments: str, call_id: str = "call_1", text: str | None = None) -> Script:
    events = [chunk({"role": "assistant", "content": None})]
    if text:
        events.append(chunk({"content": text}))
    events.append(chunk({"tool_calls": [{"index": 0, "id": call_id, "type": "function",
                                         "function": {"name": name, "arguments": ""}}]}))
    half = len(arguments) // 2
    for piece in (arguments[:half], arguments[half:]):
        events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
    events.append(chunk(finish="tool_calls"))
    events.append(chunk(choices=False, usage=usage(20, 8)))
    return Script(events=events)


def responses_script(*, summary: str = "", text: str = "", call: tuple[str, str] | None = None,
                     status: str = "completed", encrypted: str = "enc-abc", usage_in: int = 30,
                     usage_out: int = 12, cached: int = 10) -> Script:
    """An OpenAI Responses API stream: a reasoning item (with its summary and encrypted content),
    then a message and/or a function call (name, arguments), then response.<status>."""
    events: list = [{"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}}]
    index = 0
    reasoning = {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": encrypted}
    events.append({"type": "response.output_item.added", "output_index": index, "item": dict(reasoning)})
    if summary:
        events.append({"type": "response.reasoning_summary_part.added", "output_index": index, "summary_index": 0})
        half = len(summary) // 2
        events += [{"type": "response.reasoning_summary_text.delta", "output_index": index, "delta": piece}
                   for piece in (summary[:half], summary[half:])]
        reasoning["summary"] = [{"type": "summary_text", "text": summary}]
    events.append({"type": "response.output_item.done", "output_index": index, "item": reasoning})
    if text:
        index += 1
        events.append({"type": "response.output_item.added", "output_index": index,
                       "item": {"type": "message", "id": "msg_1", "role": "assistant", "content": []}})
        half = len(text) // 2
        events += [{"type": "response.output_text.delta", "output_index": index, "delta": piece}
                   for piece in (text[:half], text[half:])]
        events.append({"type": "response.output_item.done", "output_index": index,
                       "item": {"type": "message", "content": [{"type": "output_text", "text": text}]}})
    if call:
        index += 1
        name, arguments = call
        item = {"type": "function_call", "id": "fc_1", "call_id": "call_r1", "name": name, "arguments": ""}
        events.append({"type": "response.output_item.added", "output_index": index, "item": item})
        half = len(arguments) // 2
        events += [{"type": "response.function_call_arguments.delta", "output_index": index, "delta": piece}
                   for piece in (arguments[:half], arguments[half:])]
        events.append({"type": "response.output_item.done", "output_index": index,
                       "item": dict(item, arguments=arguments)})
    final = {"id": "resp_1", "object": "response", "status": status,
             "usage": {"input_tokens": usage_in, "input_tokens_details": {"cached_tokens": cached},
                       "output_tokens": usage_out, "output_tokens_details": {"reasoning_tokens": 4}}}
    if status == "incomplete":
        final["incomplete_details"] = {"reason": "max_output_tokens"}
    events.append({"type": f"response.{status}", "response": final})
    return Script(events=events, done=False)


def web_search_script(query: str, urls: list[str], text: str):
    """A Responses stream in which OpenAI's own web_search ran, then the model answered."""
    call = {"type": "web_search_call", "id": "ws_1", "status": "completed",
            "action": {"type": "search", "query": query, "sources": [{"type": "url", "url": u} for u in urls]}}
    events = [{"type": "response.created", "response": {"id": "resp_w", "status": "in_progress"}},
              {"type": "response.output_item.added", "output_index": 0, "item": dict(call, status="in_progress")},
              {"type": "response.web_search_call.searching", "output_index": 0, "item_id": "ws_1"},
              {"type": "response.output_item.done", "output_index": 0, "item": call},
              {"type": "response.output_item.added", "output_index": 1,
               "item": {"type": "message", "id": "msg_w", "role": "assistant", "content": []}},
              {"type": "response.output_text.delta", "output_index": 1, "delta": text},
              {"type": "response.output_item.done", "output_index": 1,
               "item": {"type": "message", "content": [{"type": "output_text", "text": text}]}},
              {"type": "response.completed", "response": {"id": "resp_w", "object": "response", "status": "completed",
                                                           "usage": {"input_tokens": 50, "output_tokens": 20}}}]
    return Script(events=events, done=False)


class LoopbackServer:
    """A server on 127.0.0.1 that runs its own event loop in a thread (tests call it from theirs).
    Subclasses serve connections in `_serve`; `_listen` opens the listener."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        """Close the listener and every open connection, then the loop."""
        asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    async def _shutdown(self) -> None:
        self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self._server = self.loop.run_until_complete(self._listen())
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()

    async def _listen(self, port: int = 0) -> asyncio.AbstractServer:
        return await asyncio.start_server(self._serve, "127.0.0.1", port, backlog=1024)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class FakeUpstream(LoopbackServer):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: deque[Script] = deque()
        self.requests: list[dict] = []
        self.default = text_script("Hello", " from", " fake")
        self.responder = None                        # callable(request body) -> Script, overrides the queue
        self.hangups: list[float] = []               # time.monotonic() when a client closed mid-answer
        self.hung_up: dict[int, float] = {}          # the same, by connection id
        self.connections: list[dict] = []            # one per accepted connection, in order
        self.in_flight = 0                           # answers being written now, and the most at once
        self.peak_in_flight = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def push(self, *scripts: Script) -> None:
        self.scripts.extend(scripts)

    def busy(self, connection: dict, delta: int) -> None:
        connection["busy"] += delta
        self.in_flight += delta
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def reset(self) -> None:
        self.hangups.clear()
        self.hung_up.clear()
        self.peak_in_flight = self.in_flight
        self.responder = None
        self.scripts.clear()
        self.requests.clear()

    def _connection(self, writer: asyncio.StreamWriter, protocol: str) -> dict:
        """A record of one accepted connection: its number, protocol, requests in flight, state."""
        connection = {"id": len(self.connections) + 1, "protocol": protocol, "busy": 0, "closed": False,
                      "goaway": False, "errors": [], "writer": writer}
        self.connections.append(connection)
        return connection

    def _script(self, request_body: dict) -> Script:
        if self.responder is not None:
            return self.responder(request_body)
        return self.scripts.popleft() if self.scripts else self.default

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = self._connection(writer, "http/1.1")
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in
                           (line.split(":", 1) for line in lines[1:] if ":" in line)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if method == "POST" and path.endswith(("/chat/completions", "/responses")):
                    self.requests.append({"path": path, "headers": headers, "body": orjson.loads(body),
                                          "raw_head": head.decode("latin-1"), "connection": connection["id"]})
                    script = self._script(self.requests[-1]["body"])
                    self.busy(connection, 1)
                    try:
                        if not await self._answer(writer, script, headers.get("authorization", "").encode()):
                            return
                    finally:
                        self.busy(connection, -1)
                else:
                    writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                    await writer.drain()
        except (asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except ConnectionError:
            self.hangups.append(time.monotonic())
            self.hung_up[connection["id"]] = self.hangups[-1]
        finally:
            connection["closed"] = True
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, script: Script, authorization: bytes = b"") -> bool:
        """Write one answer; False when the connection must be dropped."""
        def echo(data: bytes) -> bytes:
            return data.replace(b"{authorization}", authorization)

        if script.drop:
            writer.transport.abort()
            return False
        if script.first_byte_delay:
            await asyncio.sleep(script.first_byte_delay)
        extra = "".join(f"{k}: {v}\r\n" for k, v in script.headers.items())
        if script.status != 200 or script.body is not None:
            body = echo(script.body if isinstance(script.body, bytes) else orjson.dumps(script.body))
            writer.write(f"HTTP/1.1 {script.status} X\r\ncontent-type: application/json\r\n{extra}"
                         f"content-length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
            return True
        writer.write(f"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n{extra}"
                     "transfer-encoding: chunked\r\n\r\n".encode())
        for event in script.events:
            if event is GOAWAY:
                continue
            if event is RESET:
                await writer.drain()
                writer.transport.abort()
                return False
            if isinstance(event, (int, float, Gate)):
                await writer.drain()
                await wait_event(event)
                continue
            data = echo(event if isinstance(event, bytes) else b"data: " + orjson.dumps(event) + b"\n\n")
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        if script.cut:
            await writer.drain()
            writer.transport.abort()
            return False
        if script.done:
            data = b"data: [DONE]\n\n"
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            if script.linger:
                await writer.drain()
                await asyncio.sleep(script.linger)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True


def _main() -> None:
    """Run standalone (for `make bench`): python -m tests.fake_upstream --port P --chunks N [--gap S] [--ttft S]
    [--tls DIR] (TLS, HTTP/2 or HTTP/1.1 by ALPN, with a CA made now and written to DIR/ca.pem)."""
    import argparse
    import time

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--chunks", type=int, default=40)
    parser.add_argument("--gap", type=float, default=0.0, help="seconds between chunks")
    parser.add_argument("--ttft", type=float, default=0.0, help="seconds before the answer starts")
    parser.add_argument("--tls", help="serve TLS; the CA goes to TLS/ca.pem")
    args = parser.parse_args()
    if args.tls:
        from .fake_tls import Certificates, TlsFakeUpstream
        fake = TlsFakeUpstream(http2=True, certificates=Certificates(args.tls))
    else:
        fake = FakeUpstream()
    pieces = [f"word{i} " for i in range(args.chunks)]
    script = text_script(*pieces)
    if args.gap:
        script.events = [e for c in script.events for e in (c, args.gap)]
    script.first_byte_delay = args.ttft
    fake.default = script
    fake.requests = _Discard()

    async def serve() -> None:
        server = await fake._listen(args.port)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        time.sleep(0)


class _Discard(list):
    """A request log that keeps only the last entry (the bench sends many thousands)."""

    def append(self, item) -> None:
        self[:] = [item]


if __name__ == "__main__":
    _main()
