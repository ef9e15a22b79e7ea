"""Message threads (beta `message-threads-2026-08-12`): ccproxyd holds a conversation between turns.

The wire contract, as the official SDKs speak it (anthropic Python 2.15 `lib/threads`, @anthropic-ai/sdk
1.15 `lib/internal/threads`; their tool runners thread by default):

- `thread: {"type": "create"}` on a request with the whole history: hold this conversation under the
  reply's `id`.  The reply itself is unchanged (no new response field).
- `thread: {"type": "continue", "previous_message_id": "msg_…"}` carries only the new messages (tool
  results; none at all after `pause_turn`) and no `system` or `tools`: the thread keeps those it was
  created with.  Every other field (model, max_tokens, tool_choice, thinking, stream…) is the turn's own.
- Rejections name their cause in `error.details.error_code`: 404 `thread_not_found`, 400
  `thread_already_continued` and 400 `thread_continue_in_flight` make the SDK replay the whole history
  under a new thread (`create`); 400 `thread_unsupported_request` (with `details.unsupported`, a list of
  names, when one is to blame) makes a tool runner go on without threads, sending the whole history.

So a continue is rebuilt here into the request the client would have sent without threads: the stored
`system` and `tools`, the stored history and reply, then the new messages; from then on it is an
ordinary request, and its reply becomes the next thread point.  Each reply can be continued once.

State has one owner, this module; the backend is behind `Backend`: in this process's memory, in a
diskcache directory that every worker of the host shares and that outlives a restart (`--thread-dir`),
or in Redis for a fleet (state.threads); the store and its claim rule are state.thread_store.  Each applies the one claim rule, `claimed` and `released`
on a `Point`, inside its own atomic step; tests/test_backends_threads.py is their contract.  A record is
JSON bytes of `system`, `tools` and `messages`: what the client sent, never a provider key or the
client's key (the owner is the hash ccproxyd already keeps for the cache key).
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable

import orjson

from ..observe import access as observe
from ..errors import ThreadAlreadyContinued, ThreadContinueInFlight, ThreadNotFound, ThreadUnsupported
from ..state.thread_store import CONTINUED, FOUND, IN_FLIGHT, MISSING, Backend
from ..translate.response import accumulate

log = logging.getLogger("ccproxyd.threads")
KEPT_FIELDS = ("system", "tools")        # taken from the thread on a continue (the SDKs' CREATE_ONLY_FIELDS)
class Threads:
    """The thread store as handlers use it: `open(body, owner)` gives the Turn to serve."""

    def __init__(self, backend: Backend, ttl: float, max_record_bytes: int) -> None:
        self.backend = backend
        self.ttl = ttl
        self.max_record_bytes = max_record_bytes

    async def open(self, body: dict, owner: str | None) -> "Turn":
        """The whole request a threaded `body` stands for (checked by wire.messages first), as a Turn.
        A continue claims its thread point until the Turn closes."""
        thread = body["thread"]
        request = {k: v for k, v in body.items() if k != "thread"}
        previous = None
        if thread["type"] == "continue":
            previous = thread["previous_message_id"]
            state, record = await self.backend.claim(previous, owner)
            if state != FOUND:
                _count(state)
                raise REJECTIONS[state](previous)
            kept = orjson.loads(record)
            request["messages"] = kept["messages"] + request["messages"]
            for field in KEPT_FIELDS:
                if field in kept:
                    request[field] = kept[field]
        raw = orjson.dumps(request)
        if len(raw) > self.max_record_bytes:
            if previous is not None:
                await self.backend.release(previous, continued=False)
            _count("unsupported")
            raise ThreadUnsupported(f"this conversation ({len(raw)} bytes) is larger than ccproxyd holds in a "
                                    f"thread ({self.max_record_bytes} bytes); send it without `thread`")
        _count("continue" if previous else "create")
        return Turn(self, request, raw, owner, previous)

    def stats(self) -> dict:
        return {"state": "on", "ttl": self.ttl, "max_record_bytes": self.max_record_bytes, **self.backend.stats()}


REJECTIONS = {
    MISSING: lambda pid: ThreadNotFound(
        f"thread: no thread state for previous_message_id {pid[:100]!r} (expired, evicted, or held by another "
        "ccproxyd process); replay the full conversation with thread.type 'create'"),
    CONTINUED: lambda pid: ThreadAlreadyContinued(
        f"thread: the response {pid[:100]!r} has already been continued, and a response can be continued only "
        "once; continue from the thread's most recent response id"),
    IN_FLIGHT: lambda pid: ThreadContinueInFlight(
        f"thread: another request is still continuing from {pid[:100]!r}; wait for it and continue from its "
        "response id, or replay the full conversation with thread.type 'create'"),
}


def _count(result: str) -> None:
    observe.METRICS.inc("ccproxyd_threads_total", (("result", result),),
                        help="Threaded requests: create, continue, or why one was refused")


class Turn:
    """One threaded request: `body` and `raw` are the whole request (a continue rebuilt); the reply is
    kept as the next thread point before the client can see its end, so that a client continuing at
    once finds it.  `watch` and `sender` do that for a stream, `keep` for a whole message; `close`
    gives back a claim whose turn produced no reply (failed, or the client left), so it can be retried."""

    def __init__(self, threads: Threads, body: dict, raw: bytes, owner: str | None, previous: str | None) -> None:
        self.threads = threads
        self.body = body
        self.raw = raw
        self.owner = owner
        self.previous = previous
        self.kept = False
        self._events: list = []
        self._complete = False

    def watch(self, events: list) -> None:
        """Every event list of a stream, before it is sent (proxy.relay's `on_events`)."""
        self._events += events
        if events and events[-1][0] == "message_stop":
            self._complete = True

    def sender(self, send: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        """`send`, except that the bytes that end the message wait until the reply is kept
        (`end`, the stream's end with them, passes through)."""
        async def send_kept(data: bytes, *end: bool) -> None:
            if self._complete:                  # once: a ping sent while the reply is being kept goes by
                self._complete = False
                message, self._events = accumulate(self._events, []), []
                await self.keep(message)
            await send(data, *end)
        return send_kept

    async def keep(self, message: dict) -> None:
        """Store this turn's whole conversation under the reply's id; the previous point is continued."""
        threads = self.threads
        record = {field: self.body[field] for field in KEPT_FIELDS if field in self.body}
        record["messages"] = self.body["messages"] + [{"role": "assistant", "content": message["content"]}]
        try:
            data = orjson.dumps(record)
        except TypeError as exc:                # a model's tool input deeper than orjson writes, say
            log.warning("thread point %s not kept: it cannot be written as JSON (%s)", message["id"], exc)
        else:
            if len(data) <= threads.max_record_bytes:
                await threads.backend.put(message["id"], data, self.owner, threads.ttl)
            else:
                log.info("thread point %s not kept: %d bytes is over the limit of %d", message["id"], len(data),
                         threads.max_record_bytes)
        if self.previous is not None:
            await threads.backend.release(self.previous, continued=True)
        self.kept = True

    async def close(self) -> None:
        if self.previous is not None and not self.kept:
            await self.threads.backend.release(self.previous, continued=False)


async def open_turn(threads: Threads | None, body: dict, owner: str | None) -> Turn | None:
    """The Turn of a request with a `thread`, None for one without; threads switched off refuse it
    as a request that cannot be threaded (a tool runner then sends the whole history each turn)."""
    if body.get("thread") is None:
        return None
    if threads is None:
        _count("unsupported")
        raise ThreadUnsupported("thread: message threads are switched off on this ccproxyd (--thread-ttl 0); "
                                "send the full conversation without `thread`")
    return await threads.open(body, owner)
