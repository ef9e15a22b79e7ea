"""Thin HTTP handlers: parse, call the flow, write.  Whether an answer is shared or stored is
decided in flights.py, who pays and when the access line is written in outcome.py."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from functools import partial

import orjson
from sanic import Request, Sanic
from sanic.exceptions import SanicException
from sanic.response import HTTPResponse, raw

from ..money import clock
from ..observe import access as observe
from ..flow import proxy, threads
from . import spend, status
from ..translate import tokens
from ..flow.cache import Flight, message_events
from ..flow.outcome import Outcome
from ..flow.pings import PING
from ..money.charge import write_ttl
from ..money.compare import rates_at
from ..errors import (ApiError,
                      AuthenticationFailed,
                      ClientFacingError,
                      InvalidRequest,
                      NotFound,
                      Overloaded,
                      RequestTooLarge,
                      to_anthropic)
from ..config.routing import counts_input, features_of, fit_window, input_room, resolve
from ..translate.sse import encode
from ..translate import attribution, server_tools
from ..translate.request import session_of_metadata
from ..translate.response import accumulate
from ..translate.wire import messages as messages_shape
from ..translate.stream import message_id

log = logging.getLogger("ccproxyd.http")

# Claude model ids advertised by GET /v1/models when the routing table routes them.
ADVERTISED_MODELS = (
    ("claude-opus-4-1-20250805", "Claude Opus 4.1"),
    ("claude-opus-4-20250514", "Claude Opus 4"),
    ("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5"),
    ("claude-sonnet-4-20250514", "Claude Sonnet 4"),
    ("claude-3-7-sonnet-20250219", "Claude Sonnet 3.7"),
    ("claude-haiku-4-5-20251001", "Claude Haiku 4.5"),
    ("claude-3-5-haiku-20241022", "Claude Haiku 3.5"),
)


def json_response(obj, status: int = 200, headers: dict | None = None) -> HTTPResponse:
    return raw(orjson.dumps(obj), status=status, headers=headers, content_type="application/json")


async def messages(request: Request):
    try:
        return await _messages(request)
    except asyncio.CancelledError:
        outcome = getattr(request.ctx, "outcome", None)
        if outcome is not None:                 # the client left: no response will reach it
            outcome.abandoned()                 # (Sanic's own 500 for this is not its status)
        raise
    finally:
        if getattr(request.ctx, "admitted", None) is not None:  # the client's tokens and spend, once
            await _charge_client(request)                       # the figures are in (a cut call's later)
        turn = getattr(request.ctx, "turn", None)
        if turn is not None:                    # a continue that produced no reply can be tried again
            await turn.close()
        if request.app.ctx.stopping:            # a stream that ran into the drain: close after it
            request.stream.keep_alive = False


async def _messages(request: Request):
    """Parse, route, then stream.  The parsed request (about three times its JSON size) is dropped
    as soon as the upstream call is under way, so an open stream holds only what it streams."""
    record = observe.Record(request.ctx.request_id, time.monotonic())
    table = request.app.ctx.table                       # read once: a reload never changes this request
    outcome = request.ctx.outcome = Outcome(record, table)
    if observe.telemetry is not None:
        record.carrier = request.headers                # the client's traceparent, for the span
    body, media = messages_shape.read(request.body)
    raw = request.body
    policy = getattr(request.ctx, "policy", None)
    if policy is not None:                              # clients: models, rpm, tpm, budget_usd
        await request.app.ctx.limits.admit(policy, body["model"], len(raw) // 4)
        request.ctx.admitted = len(raw) // 4
    turn = request.ctx.turn = await threads.open_turn(request.app.ctx.threads, body, getattr(request.ctx, "client", None))
    if turn is not None:                                # the whole conversation, a continue rebuilt
        body, raw, media = turn.body, turn.raw, None
    record.client_model, record.stream = body["model"], bool(body.get("stream"))
    record.cache_ttl = write_ttl(body)                 # the rate Claude would bill its cache writes at
    headers = request.headers
    record.session_id = (headers.get("x-claude-code-session-id") or session_of_metadata(body) or "")[:100] or None
    record.agent_id = headers.get("x-claude-code-agent-id", "")[:100] or None
    record.parent_agent_id = headers.get("x-claude-code-parent-agent-id", "")[:100] or None
    record.client = getattr(request.ctx, "client_name", None)
    record.attributed(attribution.read(body))
    if request.app.ctx.settings.log_bodies:
        observe.log_body(record.request_id, body)
    features = features_of(body, partial(tokens.count_request, body), subagent=record.agent_id is not None)
    if counts_input(table, body["model"], features):    # a min_input_tokens route: counted off the loop
        await asyncio.to_thread(getattr, features, "input_tokens")
    decision = resolve(table, body["model"], features)
    record.route, record.route_match = decision.route_index, decision.route.match
    if body["max_tokens"] == 0:                         # answered here, its input counted (in a thread)
        events = await asyncio.to_thread(proxy.empty_events, decision, body)
    else:
        tool = server_tools.unanswerable(body, decision.primary.model)
        events = await asyncio.to_thread(proxy.unavailable_events, decision, body, tool) if tool is not None else None
    if events is not None:
        if turn is not None:
            await turn.keep(accumulate(events))
        return await _local_answer(request, record, events)
    room = input_room(decision, body["max_tokens"])
    bound = (tokens.input_bound(raw, room) if media is None    # counted only near a window
             else tokens.shaped_bound(len(raw), len(body.get("tools") or ()), media))
    if bound > room:
        counted = await asyncio.to_thread(getattr, features, "input_tokens")     # counted once, off the loop
        decision = fit_window(decision, body["max_tokens"], counted)
    del features                                        # it holds the parsed body (for its count)
    flights = request.app.ctx.flights
    if turn is None and flights.shared(decision, headers.get("cache-control", "")):   # a thread point needs
        joined = await flights.join(body, raw, decision, getattr(request.ctx, "client", None), outcome)   # its own id
        del body
        return await _shared_answer(request, outcome, decision, joined)
    first = proxy.payload(body, decision.primary)
    del body
    answer = await proxy.open_answer(request.app.ctx.upstreams, request.app.ctx.guards, decision, raw,
                                     first, record.request_id)
    del first
    try:
        if not record.stream:
            message = await proxy.collect(answer)
            if turn is not None:
                await turn.keep(message)
            return json_response(message)
        outcome.streaming = True                        # response middleware runs before the stream
        response = await request.respond(content_type="text/event-stream",
                                         headers={"cache-control": "no-cache", "x-accel-buffering": "no"})
        send = response.send if turn is None else turn.sender(response.send)
        summary = await proxy.relay(answer, send, request.app.config.PING_INTERVAL,
                                    turn.watch if turn is not None else None)
        if summary["error"] is not None:
            record.failed(summary["error"])
        if summary["first_event"]:
            record.ttft_ms = round((summary["first_event"] - record.started) * 1000, 2)
        await response.eof()
    finally:
        await answer.close()
        outcome.direct(answer)


async def _charge_client(request: Request) -> None:
    """Count what an admitted request used against its client's tpm and budgets: nothing for an
    answer from the cache or another request's call.  Counted now when the figures are in (before
    the response goes out, so the client's next request sees it); a call cut before its usage came,
    or one its leader left running, is counted when its line is written."""
    outcome = getattr(request.ctx, "outcome", None)
    if outcome is None:                         # refused before its account was opened
        return
    limits = request.app.ctx.limits

    def settle():
        return limits.settle(request.ctx.policy, request.ctx.admitted, outcome.tokens_used(), outcome.cost())
    if not outcome.waiting:
        await settle()
        return
    background = request.app.ctx.background

    def later() -> None:
        task = asyncio.ensure_future(settle())
        background.add(task)
        task.add_done_callback(background.discard)
    outcome.on_emit = later


async def _local_answer(request: Request, record: observe.Record, events: list):
    """An answer made here, without an upstream call: max_tokens 0, or a server tool the route's
    model cannot run."""
    if not record.stream:
        return json_response(accumulate(events))
    response = await request.respond(content_type="text/event-stream")
    await response.send(encode(events))
    return await response.eof()


async def _shared_answer(request: Request, outcome: Outcome, decision, joined: dict | Flight):
    """A stored answer, written out; or the flight, followed to its end (flights.Flights.join)."""
    if not isinstance(joined, Flight):
        headers = {"x-ccproxyd-cache": outcome.record.cache}
        message = dict(joined, id=message_id(), model=decision.requested)
        if not outcome.record.stream:
            return json_response(message, headers=headers)
        response = await request.respond(content_type="text/event-stream", headers=headers)
        await response.send(encode(message_events(message)))
        return await response.eof()
    flight = joined
    flight.join()
    try:
        if outcome.record.stream:
            return await _follow(request, outcome, flight)
        return await _whole(outcome, decision, flight)
    finally:
        flight.leave()


async def _joined(outcome: Outcome, flight: Flight, ready) -> dict:
    """Wait for the flight (`ready`: its start, or its end); then who pays is known, and so the
    response's headers.  A client that leaves meanwhile leaves the flight; an error that came
    before any byte is this request's."""
    try:
        await ready()
    except asyncio.CancelledError:
        outcome.left(flight)
        raise
    headers = {"x-ccproxyd-cache": outcome.settled(flight)}
    if flight.error is not None and not flight.batches:
        raise flight.error
    return headers


async def _whole(outcome: Outcome, decision, flight: Flight):
    headers = await _joined(outcome, flight, flight.finished)
    outcome.answered_by(flight)
    if flight.message is None:
        raise flight.error or ApiError("the upstream answer was incomplete")
    return json_response(dict(flight.message, model=decision.requested), headers=headers)


async def _follow(request: Request, outcome: Outcome, flight: Flight):
    record = outcome.record
    headers = await _joined(outcome, flight, flight.started)
    outcome.streaming = True
    try:
        response = await request.respond(content_type="text/event-stream", headers=headers)
        async for batch in flight.follow():
            await response.send(batch)
            if record.ttft_ms is None and batch is not flight.batches[0] and batch != PING:
                record.ttft_ms = round((time.monotonic() - record.started) * 1000, 2)   # after message_start
        await response.eof()
    finally:
        outcome.followed(flight)


async def count_tokens(request: Request):
    body = messages_shape.check_body(request.body)
    messages_shape.validate_count(body)
    return json_response({"input_tokens": await asyncio.to_thread(tokens.count_request, body)})


def served_models(table) -> list[dict]:
    """What /v1/models lists: the Claude ids the table routes, then its aliases, each with a
    display name that says what answers and the answering model's limits."""
    out = []
    for model_id, display in ADVERTISED_MODELS:
        try:
            target = resolve(table, model_id).primary
        except NotFound:
            continue
        out.append(_model_object(model_id, f"{display} → {_answers(target)}", target.model))
    for alias, route in table.aliases.items():
        target = resolve(table, alias).primary
        out.append(_model_object(route.match, _answers(target), target.model))
    return out


def _answers(target) -> str:
    return f"{target.model.upstream} ({target.provider.name}) via ccproxyd"


def _model_object(model_id: str, display: str, model) -> dict:
    return {"type": "model", "id": model_id, "display_name": display, "created_at": "2025-01-01T00:00:00Z",
            "max_input_tokens": model.context_window, "max_tokens": model.max_output_tokens,
            "description": _price_line(model)}


def _price_line(model) -> str:
    """What Claude Code's /model picker shows under the name (it reads a gateway's `description`)."""
    window = f"{model.context_window // 1000}k context"
    rates = rates_at(model.prices, clock.now())
    if rates is None:
        return f"no price known, {window}"
    return f"${rates.input:g} in / ${rates.output:g} out per Mtok, {window}"


async def models(request: Request):
    """Paginated as the API is: `limit` (1-1000, default 20), `after_id`, `before_id`."""
    data = served_models(request.app.ctx.table)
    args = request.args
    try:
        limit = int(args.get("limit", 20))
    except ValueError:
        raise InvalidRequest("limit: must be an integer from 1 to 1000") from None
    if not 1 <= limit <= 1000:
        raise InvalidRequest("limit: must be an integer from 1 to 1000")
    ids = [m["id"] for m in data]
    start, end = 0, len(data)
    if args.get("after_id") in ids:
        start = ids.index(args.get("after_id")) + 1
    if args.get("before_id") in ids:
        end = ids.index(args.get("before_id"))
        start = max(start, end - limit)
    page = data[start:end][:limit]
    return json_response({"data": page, "has_more": start + len(page) < end,
                          "first_id": page[0]["id"] if page else None,
                          "last_id": page[-1]["id"] if page else None})


async def model(request: Request, model_id: str):
    listed = {m["id"]: m for m in served_models(request.app.ctx.table)}
    if model_id in listed:
        return json_response(listed[model_id])
    try:
        target = resolve(request.app.ctx.table, model_id).primary     # any id the table routes
    except NotFound:
        raise NotFound(f"model: '{model_id}' is not served by this ccproxyd") from None
    return json_response(_model_object(model_id, _answers(target), target.model))


# what a client key guards when the table has client_keys: the API, and the spend it records
KEYED_PATHS = ("/v1/", "/ui/data", "/spend")


async def root(request: Request):
    return json_response({"name": "ccproxyd", "status": "ok"})


async def on_error(request: Request, exc: Exception):
    if isinstance(exc, SanicException) and not isinstance(exc, ClientFacingError):
        status = getattr(exc, "status_code", 500)
        if status == 413:
            exc = RequestTooLarge("request body is larger than the proxy's limit")
        elif status in (404, 405):
            exc = NotFound(f"{request.method} {request.path} is not an endpoint of this API")
        elif status < 500:
            exc = InvalidRequest(str(exc))
    if not isinstance(exc, ClientFacingError):
        log.exception("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    request_id = getattr(request.ctx, "request_id", None)
    status, body, headers = to_anthropic(exc, request_id)
    outcome = getattr(request.ctx, "outcome", None)
    if outcome is not None:
        outcome.record.failed(exc if isinstance(exc, ClientFacingError) else ApiError(type(exc).__name__))
    return raw(body, status=status, headers=headers, content_type="application/json")


async def start_request(request: Request) -> None:
    request.ctx.request_id = request.headers.get("x-request-id") or observe.request_id()
    if request.app.ctx.stopping:                # a new request on a kept-alive connection
        request.stream.keep_alive = False
        if request.path.startswith("/v1/messages"):
            raise Overloaded("ccproxyd is shutting down; retry the request", retry_after=1)
    table = request.app.ctx.table
    keys = table.client_keys
    if keys and request.path.startswith(KEYED_PATHS):
        authorization = request.headers.get("authorization", "")
        presented = request.headers.get("x-api-key") or (
            authorization[7:] if authorization.lower().startswith("bearer ") else "")
        name = next((name for key, name in zip(keys, table.client_key_names)
                     if hmac.compare_digest(presented.encode(), key.encode())), None)
        if name is None:
            raise AuthenticationFailed("invalid x-api-key")
        request.ctx.client_name = name                  # the key's variable: what spend is reported by
        request.ctx.policy = table.clients.get(name)
        # which client this is, for the cache key; a hash, so the key itself is never stored
        request.ctx.client = hashlib.sha256(presented.encode()).hexdigest()[:16]




async def finish_request(request: Request, response: HTTPResponse) -> None:
    request_id = getattr(request.ctx, "request_id", None)
    if request_id is None:                      # the client hung up before its request was read
        log.debug("a client closed its connection before sending a whole request")
        return
    response.headers["request-id"] = request_id
    if request.app.ctx.stopping:
        request.stream.keep_alive = False       # the connection closes after this answer
    outcome = getattr(request.ctx, "outcome", None)
    if outcome is not None:
        outcome.responded(response.status)


def register(app: Sanic) -> None:
    app.add_route(messages, "/v1/messages", methods=["POST"])
    app.add_route(count_tokens, "/v1/messages/count_tokens", methods=["POST"])
    app.add_route(models, "/v1/models", methods=["GET"])
    app.add_route(model, "/v1/models/<model_id:str>", methods=["GET"])
    app.add_route(status.health, "/health", methods=["GET"])
    app.add_route(status.metrics, "/metrics", methods=["GET"])
    app.add_route(spend.spend, "/spend", methods=["GET"])
    app.add_route(root, "/", methods=["GET", "HEAD"])
    app.error_handler.add(Exception, on_error)
    app.register_middleware(start_request, "request")
    app.register_middleware(finish_request, "response")
