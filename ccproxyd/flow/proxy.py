"""The flow of one Messages request: decision -> targets in order -> upstream -> translation.

`open_answer` picks the first target that answers 200 (a target that fails before its first byte
with a retryable error, or whose key is missing, hands over to the next fallback);
`relay` streams the translated events to the client; `collect` builds one message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import httpx2
import orjson

from ..observe import access as observe, redact
from ..translate import tokens
from ..state.answers import AnswerSink
from .cache import Flight
from . import cuts
from .pings import Pings
from .stopping import cut_at_drain
from ..config.table import Model, Provider
from ..errors import (CallCancelled,
                      ClientFacingError,
                      ConnectionDropped,
                      InvalidRequest,
                      MissingCredential,
                      Overloaded,
                      Untranslatable)
from ..upstream.resilience import OPEN, Breaker, Guards
from ..config.routing import Decision, Target
from ..translate.sse import SSEDecoder, coalesce, encode
from ..translate import request as treq
from ..translate import prompt_cache, server_tools
from ..translate.openrouter import CitingTranslator
from ..translate.response import accumulate
from ..translate.responses import ResponsesTranslator, to_responses
from ..translate.stream import StreamTranslator
from ..translate.tools import Converted
from ..translate.text_chunks import TextChunks, plain_text
from ..translate.wire.messages import deeper_than_written
from ..upstream.pool import Upstreams, map_transport_error

log = logging.getLogger("ccproxyd.proxy")


Payload = tuple[bytes, dict[str, str]]   # a translated upstream request, serialised, and its tool-name map


@dataclass
class Answer:
    target: Target
    response: httpx2.Response
    translator: StreamTranslator
    raw: bytes                  # the client's request, parsed again only to count tokens (rare)
    attempts: int
    guards: Guards
    upstreams: Upstreams
    decision: Decision
    request_id: str = ""
    closed: bool = False
    text_chunks: TextChunks = field(default_factory=TextChunks)    # the stream's text chunks by their bytes

    async def close(self) -> None:
        """Release the provider's in-flight slot and the upstream connection (idempotent)."""
        if not self.closed:
            self.closed = True
            self.guards.release(self.target.provider.name)
            await self.response.aclose()
            await self.upstreams.release(self.target.provider)


async def _open_with_retries(upstreams: Upstreams, guards: Guards, breaker: Breaker, provider: Provider,
                             content: bytes, path: str) -> tuple[httpx2.Response, int]:
    """Open one target, retrying what may succeed on a second try; never after the first byte.
    A connection that was closed without an answer is tried again at once, once, without counting
    against the provider: that is how stale keep-alive connections and HTTP/2 GOAWAY show up."""
    retry = 0
    redialled = False
    while True:
        try:
            response = await upstreams.open(provider, content, path)
        except MissingCredential as exc:
            breaker.abandon()
            raise exc.within(provider=provider.name) from exc.__cause__
        except ClientFacingError as failure:
            exc = failure.within(provider=provider.name)
            if isinstance(exc, ConnectionDropped) and not redialled:
                redialled = True
                log.info("provider %s: %s; trying again at once", provider.name, exc.message)
                continue
            if exc.upstream_status == 429:
                breaker.cool_down(exc.retry_after or 1.0)
            elif exc.retryable:
                breaker.failure()
            else:
                breaker.success()                  # a 4xx answer: the provider itself is alive
            retry += 1
            delay = provider.retries.delay(retry, exc.retry_after) if exc.retryable else None
            if delay is None or breaker.state == OPEN or not guards.budget.take():
                raise exc.within(attempts=retry) from failure.__cause__
            log.info("provider %s: %s; retry %d in %.2fs", provider.name, exc.message, retry, delay)
            await asyncio.sleep(delay)
            continue
        except BaseException:
            breaker.abandon()                      # cancelled (client gone) or a bug: no verdict
            raise
        breaker.success()
        return response, retry + 1


def _final_error(errors: list[ClientFacingError]) -> ClientFacingError:
    """The error a client sees when no target answered: the first real upstream error, or, when
    every target was held back by its breaker or concurrency cap, 529 with the earliest retry."""
    real = [e for e in errors if not e.held_back]
    if real:
        return real[0]
    wait = min((e.retry_after or 1.0) for e in errors)
    reasons = "; ".join(e.message for e in errors)
    return Overloaded(f"every upstream for this model is held back ({reasons}); retry later", retry_after=wait)


def _held_back(message: str, retry_after: float, provider: str) -> Overloaded:
    return Overloaded(message, retryable=True, retry_after=max(retry_after, 1.0), provider=provider, held_back=True)


ENDPOINTS = {"chat_completions": "chat/completions", "responses": "responses"}
TRANSLATORS = {"chat_completions": StreamTranslator, "responses": ResponsesTranslator}


def upstream_request(body: dict, model: Model) -> tuple[dict, dict[str, str]]:
    """The upstream request body for `model`, in its API, and the tool-name map."""
    if model.api == "responses":
        upstream, names = to_responses(body, model)
    else:
        chat, names = treq.to_openai(body, model)
        upstream, names = server_tools.with_openrouter(chat, names, body, model)   # OpenRouter's own search, if on
    return KEY_HEAT.spread(upstream, treq.session_of_metadata(body)), names


# prompt_cache_key traffic of this process: a hot key is spread over buckets (translate/prompt_cache)
KEY_HEAT = prompt_cache.KeyHeat(time.monotonic)


def payload(body: dict, target: Target) -> Payload:
    """The upstream request for `target`, serialised, and its tool-name map.  Tools converted
    before (translate.tools.Converted) go in as the JSON they were written as then."""
    upstream_body, names = upstream_request(body, target.model)
    tools = upstream_body.get("tools")
    try:
        if type(tools) is Converted:
            if tools.written is None:           # written as deep as the body holds it: orjson's depth
                tools.written = orjson.dumps([tools])[1:-1]     # limit refuses what it would refuse there
            upstream_body = {**upstream_body, "tools": orjson.Fragment(tools.written)}
        return orjson.dumps(upstream_body), names
    except TypeError as exc:
        raise too_deep(target, exc) from None


def too_deep(target: Target, exc: TypeError) -> InvalidRequest:
    """A request within MAX_NESTING that translation made deeper than orjson writes (Gemini's
    schema subset turns each `prefixItems` level into two and inlines `$ref`s; a replayed
    signature carries JSON of its own): refused, as the client's own depth is.  orjson's other
    TypeError (a value that is not JSON) would be a bug here: raised as it is."""
    if not deeper_than_written(exc):
        raise exc
    return InvalidRequest(f"request body is nested too deep once translated for {target.model.upstream}")


async def open_answer(upstreams: Upstreams, guards: Guards, decision: Decision, raw: bytes,
                      first: Payload, request_id: str = "") -> Answer:
    """The first target that answers 200, in route order (primary, then fallbacks).
    `first` is the primary target's request; a fallback's is translated again from `raw`, the
    client's bytes, so that no parsed request is held while waiting for an upstream.  A wait
    still running at the drain deadline ends as 529, like an answer cut there."""
    with cut_at_drain():
        return await _open_answer(upstreams, guards, decision, raw, first, request_id)


def _fallback_payload(raw: bytes, target: Target) -> Payload | None:
    """A fallback's request, translated from the client's bytes; None for a fallback whose model
    cannot run a server tool the request needs (a web search the primary would have run): its
    answer would be a guess dressed as search results, so the client gets the primary's error."""
    body = orjson.loads(raw)
    tool = server_tools.unanswerable(body, target.model)
    if tool is not None:
        log.info("fallback %s/%s skipped: its model cannot run the request's %s tool",
                 target.provider.name, target.model.name, tool)
        return None
    return payload(body, target)


async def _open_answer(upstreams: Upstreams, guards: Guards, decision: Decision, raw: bytes,
                       first: Payload, request_id: str) -> Answer:
    guards.budget.on_request()
    errors: list[ClientFacingError] = []
    for target in decision.targets:
        provider = target.provider
        try:
            translated = first if target is decision.primary else _fallback_payload(raw, target)
        except InvalidRequest as exc:           # e.g. content this fallback's model cannot take
            errors.append(exc)
            log.warning("target %s/%s skipped: %s", provider.name, target.model.name, exc.message)
            continue
        if translated is None:
            continue
        content, names = translated
        # A server that reports no usage in streams gets its input counted once, before anything is
        # held open, so that message_start and message_delta say the same; otherwise a cheap guess
        # until the upstream's numbers come.
        estimate = (len(raw) // 4 if target.model.stream_usage else
                    await asyncio.to_thread(tokens.count_request, orjson.loads(raw)))
        if not guards.acquire(provider.name, provider.max_concurrency):
            errors.append(_held_back(f"provider '{provider.name}' is at its concurrency limit "
                                     f"({provider.max_concurrency})", 1.0, provider.name))
            continue
        breaker = guards.breaker(provider.name, provider.breaker)
        if not breaker.allow():
            guards.release(provider.name)
            errors.append(_held_back(f"provider '{provider.name}' is cooling down (circuit {breaker.state})",
                                     breaker.retry_after(), provider.name))
            continue
        try:
            response, attempts = await _open_with_retries(upstreams, guards, breaker, provider, content,
                                                          ENDPOINTS[target.model.api])
        except BaseException as exc:
            guards.release(provider.name)
            if not isinstance(exc, ClientFacingError):
                raise
            failed = exc.within(upstream_model=target.model.upstream)
            errors.append(failed)
            if not (failed.retryable or isinstance(failed, MissingCredential)):
                raise failed from exc.__cause__
            log.warning("target %s/%s failed: %s", provider.name, target.model.name, failed.message)
            continue
        kind = TRANSLATORS[target.model.api]
        if server_tools.SEARCH_KEY in names or server_tools.FETCH_KEY in names:
            kind = CitingTranslator                 # OpenRouter searches: translate.openrouter
        translator = kind(decision.requested, provider=provider.name,
                                      upstream_model=target.model.upstream, tool_names=names,
                                      input_estimate=estimate, thinking=decision.thinking,
                                      details=target.model.reasoning_details)
        return Answer(target, response, translator, raw, attempts, guards, upstreams, decision, request_id)
    raise _final_error(errors)


def empty_events(decision: Decision, body: dict) -> list[tuple[str, dict]]:
    """max_tokens: 0 (prompt-cache warm-up): answered locally, never billed (E38)."""
    translator = StreamTranslator(decision.requested, provider="ccproxyd", upstream_model="none",
                                  input_estimate=tokens.count_request(body))
    events = translator.start()
    translator.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
    return events + translator.finish(saw_done=True)


def unavailable_events(decision: Decision, body: dict, tool: str) -> list[tuple[str, dict]]:
    """A web search or fetch the route's model cannot run, answered as Anthropic answers an
    unavailable one (translate.server_tools); never billed."""
    translator = StreamTranslator(decision.requested, provider="ccproxyd", upstream_model="none",
                                  input_estimate=tokens.count_request(body))
    primary = decision.primary
    return server_tools.unavailable_events(translator, body, tool, primary.model, primary.provider.name)


_NOT_JSON = object()


def _decode(datas: list[bytes], answer: Answer) -> tuple[list[tuple[str, dict]], bool]:
    """Events for the data payloads of one upstream read, and whether [DONE] was among them.
    A run of chunks that are only text goes to the translator at once (StreamTranslator.texts),
    unless its class reads chunks its own way; a text chunk written as the stream's last ones
    were is read without parsing it whole (translate.text_chunks)."""
    events: list[tuple[str, dict]] = []
    done = False
    translator = answer.translator
    runs = type(translator).feed is StreamTranslator.feed
    known = answer.text_chunks
    texts: list[str] = []                   # the run of plain text chunks not yet translated
    for data in datas:
        if data == b"[DONE]":
            done = True
            continue
        text = known.text(data) if runs else None
        if text is not None:
            texts.append(text)
            continue
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            chunk = _NOT_JSON
        if not isinstance(chunk, dict):
            if texts:                           # the text before it was produced (and is billed: cuts)
                translator.texts(texts)
            what = "JSON" if chunk is _NOT_JSON else "a JSON object"
            raise Untranslatable(f"provider '{answer.target.provider.name}' sent a data line that is not {what}: "
                                 f"{redact.scrub_bytes(data)[:200].decode('utf-8', 'replace')!r}")
        text = plain_text(chunk) if runs else None
        if text is not None:
            texts.append(text)
            known.learn(data, text)
            continue
        if texts:
            events += translator.texts(texts)
            texts = []
        events += translator.feed(chunk)
    if texts:
        events += translator.texts(texts)
    return coalesce(events), done


async def _events(answer: Answer):
    """Async iterator of event lists, one per upstream read; ends with the closing events.
    Whatever goes wrong ends as a ClientFacingError naming the provider: a translator that
    raises anything else on upstream data is an Untranslatable answer, logged with its traceback."""
    translator = answer.translator
    response = answer.response
    provider = answer.target.provider.name
    try:
        if "text/event-stream" not in response.headers.get("content-type", "text/event-stream"):
            yield translator.whole(orjson.loads(await response.aread()))
            yield await _finish(answer, True)
            return
        decoder = SSEDecoder()
        saw_done = False
        # decoded like aread() does, if a server compressed it anyway (pool.Upstreams.open vets the coding);
        # else the transport's own body (upstream.http11, upstream.http2), without httpx2's layer
        async for raw in response.aiter_bytes() if "content-encoding" in response.headers else response.stream:
            events, saw_done = _decode(decoder.feed(raw), answer)
            if saw_done:                        # the answer is complete; do not wait for EOF
                break
            if events:
                yield events
        else:
            events, saw_done = _decode(decoder.close(), answer)
        yield events + await _finish(answer, saw_done)
    except httpx2.HTTPError as exc:
        raise map_transport_error(exc, provider) from exc
    except ClientFacingError as exc:
        error = exc.within(provider=provider)
        if isinstance(error, Untranslatable):
            _untranslatable(answer, error, exc)
        raise error from exc.__cause__
    except Exception as exc:
        error = (Untranslatable(f"provider '{provider}' sent invalid JSON", provider=provider)
                 if isinstance(exc, orjson.JSONDecodeError) else
                 Untranslatable(f"provider '{provider}' sent an answer ccproxyd cannot translate "
                                f"({type(exc).__name__})", provider=provider))
        _untranslatable(answer, error, exc)
        raise error from exc
    finally:
        await answer.close()


def _untranslatable(answer: Answer, error: Untranslatable, cause: BaseException) -> None:
    """Logged once, at ERROR, with the request id and the traceback; counted by provider."""
    provider = answer.target.provider.name
    log.error("%s: %s", answer.request_id, error.message, exc_info=cause)
    observe.METRICS.inc("ccproxyd_untranslatable_total", (("provider", provider),),
                        help="Answers ended in an error because the upstream's data could not be translated")


async def _finish(answer: Answer, saw_done: bool) -> list[tuple[str, dict]]:
    """No usage from the upstream: ccproxyd counts the output once, and the input too unless it
    was counted before message_start (`stream_usage: false`), in a thread: tens of ms for a large
    request, which the event loop must not wait for."""
    translator = answer.translator
    if translator.usage is None:
        count_input = answer.target.model.stream_usage
        raw, output = answer.raw, translator.output_text()

        def count() -> tuple[int | None, int]:
            return (tokens.count_request(orjson.loads(raw)) if count_input else None), tokens.count_text(output)
        counted_input, translator.output_tokens = await asyncio.to_thread(count)
        if counted_input is not None:
            translator.input_estimate = counted_input
    return translator.finish(saw_done)


async def relay(answer: Answer, send: Callable[..., Awaitable[None]], ping_interval: float,
                on_events: Callable[[list], None] | None = None) -> dict:
    """Stream the answer to the client; returns a summary for the log line.
    `on_events` sees every event list sent (the cache uses it to build the final message).
    The batch that ends with message_stop goes as `send(data, True)` (Sanic's end_stream: the
    stream's last chunk and its end in one write); every other one as `send(data)`."""
    translator = answer.translator
    translator.live_tools = True                 # a streaming client sees tool arguments as they come
    start = translator.start()
    if on_events:
        on_events(start)
    await send(encode(start))
    pings = Pings(send, ping_interval)
    error: ClientFacingError | None = None
    first_event: float | None = None
    try:
        with cut_at_drain():
            async with aclosing(_events(answer)) as batches:
                async for events in batches:
                    if events:
                        now = pings.wrote()
                        first_event = first_event or now
                        if on_events:
                            on_events(events)
                        if events[-1][0] == "message_stop":     # the end: sent with the stream's end, one write
                            pings.stop()
                            await send(encode(events), True)
                        else:
                            await send(encode(events))
    except ClientFacingError as exc:
        error = exc
    finally:
        pings.stop()
    if error is not None:
        error = error.within(attempts=answer.attempts)
        if not isinstance(error, Untranslatable):             # that one is logged where it arose
            log.warning("%s: stream from %s broke: %s", answer.request_id, answer.target.provider.name, error.message)
        await send(encode(translator.fail(error)))
    return {"error": error, "first_event": first_event}


async def collect(answer: Answer) -> dict:
    """The whole answer as one Anthropic message (non-streaming clients)."""
    events = answer.translator.start()
    with cut_at_drain():
        async with aclosing(_events(answer)) as batches:
            async for batch in batches:
                events += batch
    return accumulate(events)


async def lead(upstreams: Upstreams, guards: Guards, decision: Decision, raw: bytes, first: Payload,
               flight: Flight, store: AnswerSink | None, key: str, ttl: float | None,
               ping_interval: float, request_id: str = "") -> None:
    """Run one upstream call for every request that follows `flight`, to its end even if they all
    go away, and store a complete answer from the primary target.  A fallback's answer is served
    to this flight's clients but not stored: the primary may be back for the next request."""
    events: list[tuple[str, dict]] = []
    message, storable = None, False
    try:
        answer = await open_answer(upstreams, guards, decision, raw, first, request_id)
    except BaseException as exc:                # an upstream error, or cancelled: every client left
        flight.error = exc if isinstance(exc, ClientFacingError) else CallCancelled()
        flight.finish(None)
        if isinstance(exc, ClientFacingError):
            return
        raise
    del first                                   # the serialised request: not held for the stream
    flight.answer = answer
    try:
        async def publish(data: bytes, end: bool = False) -> None:
            flight.publish(data)
        summary = await relay(answer, publish, ping_interval, events.extend)
        flight.error = summary["error"]
        if flight.error is None:
            cut: list[int] = []
            message = accumulate(events, cut)   # a call cut by max_tokens: left out, and not stored
            storable = not cut
    finally:
        await answer.close()
        if flight.error is None and message is None:         # cancelled mid-stream
            flight.error = CallCancelled()
        try:
            if message is None:
                await cuts.charge_cut(answer)   # the provider bills what it produced before the cut
        finally:
            flight.finish(message)              # clients complete before the disk write below
    if storable and store is not None and ttl is not None and answer.target is decision.primary:
        loop = asyncio.get_running_loop()
        stored = loop.create_future()
        store.put_later(key, message, ttl, lambda: loop.call_soon_threadsafe(_resolve, stored))
        await stored                            # the flight serves as a hit until the disk has it


def _resolve(future: asyncio.Future) -> None:
    if not future.done():                       # the waiting task may have been cancelled
        future.set_result(None)
