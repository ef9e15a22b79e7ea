"""Response cache: the key (pure) and in-flight sharing (the Flight); the disk store is state.answers.

Only complete, successful answers are stored, as the final Anthropic message (JSON bytes).  A hit
is replayed as JSON or as a stream with the same grammar as a live one.  Identical concurrent
requests share one upstream call: the first is the leader, the others follow its events.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Callable, Protocol, runtime_checkable

import orjson

from ..translate.stream import message_id

KEY_VERSION = b"ccpx-cache-1"
log = logging.getLogger("ccproxyd.cache")


def cache_key(upstream_body: dict, provider: str, base_url: str, client: str | None = None,
              requested: str | None = None, thinking: str = "none") -> str:
    """Hash of everything that changes the answer; key order in the JSON does not matter.
    `requested` is the model name the client sent, which every answer echoes back; `thinking`
    says whether its reasoning comes back as thinking blocks.
    The provider's key is not part of it (it never reaches this function)."""
    material = orjson.dumps({"body": upstream_body, "provider": provider, "base_url": base_url,
                             "client": client, "requested": requested, "thinking": thinking},
                            option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(KEY_VERSION + material).hexdigest()


def message_events(message: dict) -> list[tuple[str, dict]]:
    """A stored message as the stream events a live answer would have produced."""
    start = dict(message, id=message_id(), content=[], stop_reason=None, stop_sequence=None,
                 usage=dict(message["usage"], output_tokens=1))
    events = [("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        if kind == "text":
            empty, delta = {"type": "text", "text": ""}, {"type": "text_delta", "text": block["text"]}
        elif kind == "thinking":
            empty, delta = {"type": "thinking", "thinking": "", "signature": ""}, {
                "type": "thinking_delta", "thinking": block["thinking"]}
        elif kind in ("tool_use", "server_tool_use"):
            empty = dict(block, input={})
            delta = {"type": "input_json_delta", "partial_json": orjson.dumps(block["input"]).decode()}
        else:                                   # a server tool's result arrives whole in its start
            empty, delta = block, None
        events.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": empty}))
        events += [("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {
            "type": "citations_delta", "citation": c}}) for c in (block.get("citations") or () if kind == "text" else ())]
        if delta is not None and (kind != "thinking" or block["thinking"]):
            events.append(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
        if kind == "thinking":
            events.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                                   "delta": {"type": "signature_delta", "signature": block["signature"]}}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                                     "usage": message["usage"]}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


@runtime_checkable
class FlightMirror(Protocol):
    """Where a flight's bytes go beside its own followers (team mode: flow.fleet.Publisher, to a
    Redis stream other daemons follow).  Never fails the flight: a mirror that cannot write stops."""

    def publish(self, data: bytes) -> None: ...

    def finish(self, message: dict | None, error: BaseException | None, answer=None) -> None:
        """The end: a whole `message`, or `error`; `answer` is the proxy.Answer when the call ran
        here (who answered, for the lines of the requests that follow elsewhere, whole or broken)."""

    async def followed(self) -> bool:
        """Whether another daemon follows this call now (then it runs on when every client here left)."""


class Flight:
    """One upstream call shared by identical concurrent requests.

    Each request that follows it `join`s and `leave`s; when the last one has left and the call
    is still running, `on_orphan` runs after `grace` seconds unless another request joined."""

    def __init__(self, grace: float = 0.0, on_orphan: Callable[[], None] | None = None) -> None:
        self.batches: list[bytes] = []
        self.done = False
        self.message: dict | None = None
        self.error = None                      # the ClientFacingError that ended it, if any
        self.answer = None                     # the proxy's Answer, for the log line
        self.origin: dict | None = None        # who answered when no call here did (observe.Record.relayed)
        self.here = False                      # its upstream call runs on this daemon (its first request pays)
        self.clients = 0
        self.grace = grace
        self.on_orphan = on_orphan
        self.mirror: FlightMirror | None = None   # fleet.Publisher: the fleet follows this call too
        self._orphan_timer: asyncio.TimerHandle | None = None
        self._changed = asyncio.Event()
        self._on_finish: list[Callable[[], None]] = []

    def join(self) -> None:
        self.clients += 1
        if self._orphan_timer is not None:
            self._orphan_timer.cancel()
            self._orphan_timer = None

    def leave(self) -> None:
        self.clients -= 1
        if self.clients == 0 and not self.done and self.on_orphan is not None:
            self._orphan_timer = asyncio.get_running_loop().call_later(self.grace, self._orphaned)

    def _orphaned(self) -> None:
        self._orphan_timer = None
        if self.clients == 0 and not self.done:
            self.on_orphan()

    def publish(self, data: bytes) -> None:
        self.batches.append(data)
        if self.mirror is not None:
            self.mirror.publish(data)
        self._wake()

    def finish(self, message: dict | None) -> None:
        self.message, self.done = message, True
        if self.mirror is not None:
            self.mirror.finish(message, self.error, self.answer)
        self._wake()
        callbacks, self._on_finish = self._on_finish, []
        for callback in callbacks:
            try:
                callback()
            except Exception:                   # a log line's bug must not stop the answer's storing
                log.exception("a callback at the end of an upstream call failed")

    def on_finish(self, callback: Callable[[], None]) -> None:
        """Run `callback` when the call ends (now if it has)."""
        if self.done:
            callback()
        else:
            self._on_finish.append(callback)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def started(self) -> None:
        """Wait until the first bytes are ready or the flight ended."""
        while not self.batches and not self.done:
            await self._changed.wait()

    async def finished(self) -> None:
        while not self.done:
            await self._changed.wait()

    async def follow(self):
        """Every published batch, from the first, as it arrives."""
        seen = 0
        while True:
            waiter = self._changed
            while seen < len(self.batches):
                yield self.batches[seen]
                seen += 1
            if self.done:
                return
            await waiter.wait()
