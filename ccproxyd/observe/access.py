"""One JSON log line per request (standard error; journald collects it)."""

from __future__ import annotations

import bisect
import itertools
import logging
import os
import secrets
import sys
import time
from dataclasses import dataclass, field, fields
from typing import Callable

import orjson

from ..money import clock
from . import logformat, redact
from ..money import compare
from ..money.charge import Charge, charge, miss_cost, searches
from ..config.table import RouteTable
from ..translate.stream import reasoning_tokens

access = logging.getLogger("ccproxyd.access")


_log_format = "text"            # "json": logformat.JsonFormatter on every handler (--log-format)


def setup_logging(level: str, log_format: str = "text") -> None:
    """ccproxyd's log lines to stderr (the journal under systemd).  Called by `serve` and again in
    each worker process, which starts as a fresh interpreter.  Only the `ccproxyd` loggers get the
    handler: Sanic prints its own lines, and libraries stay at their WARNING default."""
    global _log_format
    _log_format = log_format
    logger = logging.getLogger("ccproxyd")
    own = [h for h in logger.handlers if getattr(h, "ccproxyd", False)]
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.ccproxyd = True
        logger.addHandler(handler)
        logger.propagate = False
        own = [handler]
    for handler in own:
        handler.setFormatter(Scrubbing(logformat.formatter(log_format)))
    logger.setLevel(level)
    scrub_handlers()


class Scrubbing(logging.Formatter):
    """Wraps a handler's formatter: the finished line, traceback included, is scrubbed of every
    provider secret (an upstream's echo can hide in any exception text)."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return redact.scrub(self.inner.format(record))


def scrub_handlers() -> None:
    """Every handler of ccproxyd's, Sanic's and the root logger formats through `Scrubbing`; with
    --log-format json, through the JSON formatter too, so that every line is one JSON object."""
    json_lines = _log_format == "json"
    for name in ("ccproxyd", "sanic.root", "sanic.error", "sanic.access", "sanic.server", "sanic.websockets", ""):
        for handler in logging.getLogger(name).handlers:
            current = handler.formatter
            if json_lines and not (isinstance(current, Scrubbing) and isinstance(current.inner, logformat.JsonFormatter)):
                handler.setFormatter(Scrubbing(logformat.JsonFormatter()))
            elif not isinstance(current, Scrubbing):
                handler.setFormatter(Scrubbing(current))


def request_id() -> str:
    return "req_" + secrets.token_hex(12)


@dataclass
class Record:
    """Everything the log line says about one request.  Never keys, never bodies."""
    request_id: str
    started: float
    at: float = field(default_factory=clock.now)   # wall clock (UTC): the prices in force, the ledger's day
    client_model: str | None = None
    session_id: str | None = None         # Claude Code's session (header, or metadata.user_id)
    agent_id: str | None = None           # set on a subagent's requests
    parent_agent_id: str | None = None
    client: str | None = None             # the name of the client key it presented (never the key)
    cc_version: str | None = None         # Claude Code's version, from its attribution line
    cc_entrypoint: str | None = None      # cli, sdk-cli, claude-vscode… (the same line)
    route: int | None = None
    route_match: str | None = None        # that route's `match` (or the alias)
    provider: str | None = None
    upstream_model: str | None = None
    model: str | None = None
    stream: bool = False
    status: int = 200
    error_type: str | None = None
    attempts: int = 0
    fallback_used: bool = False
    cache: str | None = None              # "hit" | "miss" | None (not cacheable)
    ttft_ms: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0                # input read from the provider's prompt cache
    cache_write_tokens: int = 0           # input written to it (billed at the write rate)
    reasoning_tokens: int = 0             # part of output_tokens, when the upstream says how many
    usage_estimated: bool = False         # counted by ccproxyd (o200k): the upstream reported none, or the call broke
    web_searches: int = 0                 # the provider's own web searches (usage.server_tool_use)
    cost_usd: float | None = None         # what this request paid: 0 for a cache hit or a follower; None: no price
    savings_usd: float | None = None      # claude_price_usd minus cost_usd: negative when dearer; None: unknown
    claude_price_usd: float | None = None  # the same usage at the list price of the exact client_model id
    rate: str | None = None               # the upstream prices that applied (catalog section, model, date, window, tier)
    claude_rate: str | None = None        # the Claude prices that applied
    cache_ttl: str = "5m"                 # the Claude cache-write lifetime the request asked for ("1h" or "5m")
    miss_cost_usd: float | None = None    # what the input the prompt cache did not serve cost (charge.miss_cost)
    finish_reason: str | None = None      # the upstream's own (stop, length, tool_calls, ...)
    # Not a field (kept out of the log line): the request's headers, for the trace context of
    # its OpenTelemetry span; set only while telemetry is on.
    carrier = None

    def attributed(self, found) -> None:
        """Claude Code's version and entry point, from its attribution line (translate/attribution)."""
        if found is not None:
            self.cc_version, self.cc_entrypoint = found.cc_version, found.cc_entrypoint

    def answered(self, answer, table: RouteTable, paid: bool = True) -> None:
        """Fill in who answered and what it cost, from a proxy.Answer (None: nobody answered).
        `paid` is False for a follower of another request's upstream call: that one carries the
        cost, this one costs nothing and saves the whole Claude price.  A call cut before its end
        (flow.cuts.charge_cut) is charged what it used, estimated, and bought no answer: Claude price
        0, savings minus its cost; its followers record nothing."""
        if answer is None:
            return
        cut = answer.translator.cut
        if cut and not paid:
            self.broke(origin_of(answer))
            return
        self.came_from(origin_of(answer))
        self.usage(answer.translator.final_usage, table, answer.target.model.prices, paid, cut)

    def hit(self, message: dict, target, table: RouteTable) -> None:
        """A stored answer served again: it was the route's primary target's; nothing is paid."""
        self.relayed(message, stored_origin(target), table)

    def relayed(self, message: dict, origin: dict, table: RouteTable) -> None:
        """A whole answer served without a call here, from `origin` (who answered, as `origin_of`
        says it): a stored answer, or in team mode another daemon's call followed.  Nothing is
        paid: its usage is the message's, the whole Claude price saved."""
        self.came_from(origin)
        self.usage(message.get("usage"), table, None, paid=False)

    def broke(self, origin: dict) -> None:
        """A follower of a call that broke or was cancelled before its end (here, or in team mode
        on the daemon that led it): who answered, and nothing of what the call used."""
        self.came_from(dict(origin, reasoning_tokens=0))

    def came_from(self, origin: dict) -> None:
        self.provider, self.upstream_model = origin["provider"], origin["upstream_model"]
        self.attempts = origin.get("attempts", 0)
        self.fallback_used = origin.get("fallback_used", False)
        self.usage_estimated = origin.get("usage_estimated", False)
        self.finish_reason = origin.get("finish_reason")
        self.reasoning_tokens = origin.get("reasoning_tokens", 0)

    def failed(self, exc) -> None:
        """A request that ended in an error (before or during its answer): the status and type
        the client saw (in a stream, those of its error event), and which upstream failed after
        how many attempts, when the error says so and no answer said it already."""
        self.status, self.error_type = exc.status, exc.error_type
        self.provider = self.provider or exc.provider
        self.upstream_model = self.upstream_model or exc.upstream_model
        self.attempts = self.attempts or exc.attempts

    def usage(self, usage: dict | None, table: RouteTable, prices, paid: bool = True, cut: bool = False) -> None:
        """Tokens, cost and savings of an Anthropic-shaped usage at the prices in force at `at`.
        Paid: the upstream's price, and the Claude price minus it.  Not paid (a cache hit, a
        follower): cost 0, and the whole Claude price saved.  Either side unknown: None."""
        if not usage:
            return
        self.input_tokens = usage.get("input_tokens", 0)
        self.output_tokens = usage.get("output_tokens", 0)
        self.cached_tokens = usage.get("cache_read_input_tokens", 0)
        self.cache_write_tokens = usage.get("cache_creation_input_tokens", 0)
        self.web_searches = searches(usage) if paid else 0     # run by the provider for this request
        cost = charge(prices, usage, self.at, write_ttl=self.cache_ttl) if paid else NOT_PAID
        misses = miss_cost(prices, usage, self.at, write_ttl=self.cache_ttl) if paid else 0.0
        self.miss_cost_usd = round(misses, 6) if misses is not None else None
        if cut:
            claude = NO_ANSWER
        else:
            claude = charge(compare.claude_price(table, self.client_model or ""), usage, self.at,
                            write_ttl=self.cache_ttl, search_default=compare.CLAUDE_WEB_SEARCH_PER_1K)
        self.rate = cost.rate if cost is not None else None
        self.claude_rate = claude.rate if claude is not None else None
        self.cost_usd = round(cost.usd, 6) if cost is not None else None
        self.claude_price_usd = round(claude.usd, 6) if claude is not None else None
        if cost is not None and claude is not None:
            self.savings_usd = round(claude.usd - cost.usd, 6)


def origin_of(answer) -> dict:
    """Who answered a call (a proxy.Answer) and how, as a request's line says it beside the usage.
    In team mode the daemon that led the call sends it with the answer to the daemons that
    followed it (flow.fleet), whose lines say the same."""
    translator, target = answer.translator, answer.target
    return {"provider": target.provider.name, "upstream_model": target.model.upstream, "attempts": answer.attempts,
            "fallback_used": target is not answer.decision.primary, "usage_estimated": translator.usage_estimated,
            "finish_reason": translator.finish_reason,
            "reasoning_tokens": reasoning_tokens(translator.usage) if translator.final_usage else 0}


def stored_origin(target) -> dict:
    """A stored answer's origin: the route's primary target (only its answers are stored), no
    attempt of this request's, nothing more known."""
    return {"provider": target.provider.name, "upstream_model": target.model.upstream}


NOT_PAID = Charge(0.0, "not paid: served from another request's call or the cache")
NO_ANSWER = Charge(0.0, "no answer: the call broke or was cancelled")


BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def cumulative(histogram: list) -> list[int]:
    """A histogram's counts at or below each of BUCKETS (as Prometheus' `le` buckets say them):
    Metrics keeps each observation in its own bucket only, one step instead of one per bound."""
    return list(itertools.accumulate(histogram[:len(BUCKETS)]))


class Metrics:
    """Counters and histograms of this process, rendered in Prometheus text format."""

    def __init__(self) -> None:
        self.counters: dict[tuple[str, tuple], float] = {}
        self.histograms: dict[str, list] = {}          # name -> [count in each bucket…, sum, count] (cumulative())
        self.help: dict[str, tuple[str, str]] = {}
        self.gauges: list[tuple[str, tuple, float, str]] = []     # other workers' (see merged)

    def inc(self, name: str, labels: tuple = (), value: float = 1.0, help: str = "") -> None:
        self.help.setdefault(name, ("counter", help))
        self.counters[(name, labels)] = self.counters.get((name, labels), 0.0) + value

    def observe(self, name: str, seconds: float, help: str = "") -> None:
        self.help.setdefault(name, ("histogram", help))
        h = self.histograms.setdefault(name, [0] * len(BUCKETS) + [0.0, 0])
        i = bisect.bisect_left(BUCKETS, seconds)        # the first bound >= seconds: its bucket alone
        if i < len(BUCKETS):
            h[i] += 1
        h[-2] += seconds
        h[-1] += 1

    def record(self, r: "Record", latency: float) -> None:
        labels = (("route", str(r.route)), ("provider", r.provider or ""), ("model", r.upstream_model or ""),
                  ("status", str(r.status)))
        self.inc("ccproxyd_requests_total", labels, help="Messages requests by route, provider, model, status")
        for kind, value in (("input", r.input_tokens), ("output", r.output_tokens), ("cached", r.cached_tokens)):
            if value:
                self.inc("ccproxyd_tokens_total", (("kind", kind),), value, help="Tokens by kind")
        if r.web_searches:
            self.inc("ccproxyd_web_searches_total", (("provider", r.provider or ""),), r.web_searches,
                     help="Web searches the providers ran for web_search server tools")
        if r.usage_estimated:
            self.inc("ccproxyd_estimated_usage_total", (("provider", r.provider or ""),),
                     help="Answers whose usage ccproxyd counted itself (the upstream reported none)")
        if r.cost_usd:
            self.inc("ccproxyd_cost_usd_total", (), r.cost_usd, help="Upstream cost in USD")
        if r.savings_usd:
            self.inc("ccproxyd_savings_usd_total", (), r.savings_usd,
                     help="Claude list price of the exact model asked for minus cost, USD (negative: dearer)")
        if r.upstream_model is not None and (r.input_tokens or r.output_tokens or r.cached_tokens):
            if r.cost_usd is None:
                self.inc("ccproxyd_cost_unknown_total", (), help="Answered requests whose upstream model has no price")
            if r.savings_usd is None:
                self.inc("ccproxyd_savings_unknown_total", (),
                         help="Answered requests whose savings are unknown (no price on one side)")
        if r.miss_cost_usd:
            self.inc("ccproxyd_miss_cost_usd_total", (("route", str(r.route)),), r.miss_cost_usd,
                     help="What the input that the providers' prompt caches did not serve cost, USD")
        if r.error_type:
            self.inc("ccproxyd_errors_total", (("type", r.error_type),), help="Errors by Anthropic error type")
        if r.cache:
            self.inc("ccproxyd_cache_total", (("result", r.cache),), help="Cache lookups by result")
        self.observe("ccproxyd_request_duration_seconds", latency, help="Whole request duration")
        if r.ttft_ms is not None:
            self.observe("ccproxyd_time_to_first_token_seconds", r.ttft_ms / 1000, help="Time to first token")

    def snapshot(self, gauges: list[tuple[str, tuple, float, str]] = ()) -> bytes:
        return orjson.dumps({"counters": [[n, [list(l) for l in labels], v] for (n, labels), v in self.counters.items()],
                             "histograms": self.histograms, "help": self.help,
                             "gauges": [[n, [list(l) for l in labels], v, h] for n, labels, v, h in gauges]})

    def merged(self, snapshots: list[bytes]) -> "Metrics":
        """This process's metrics plus other workers' snapshots: counters and histograms summed,
        the other workers' gauges (labelled by worker) collected in `gauges`."""
        total = Metrics()
        total.help = dict(self.help)
        total.counters = dict(self.counters)
        total.histograms = {name: list(h) for name, h in self.histograms.items()}
        for raw in snapshots:
            try:
                other = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue                                   # a snapshot being rewritten right now
            for name, kind_help in other["help"].items():
                total.help.setdefault(name, tuple(kind_help))
            for name, labels, value in other["counters"]:
                key = (name, tuple(tuple(pair) for pair in labels))
                total.counters[key] = total.counters.get(key, 0.0) + value
            for name, h in other["histograms"].items():
                mine = total.histograms.setdefault(name, [0] * len(h))
                total.histograms[name] = [a + b for a, b in zip(mine, h)]
            total.gauges += [(name, tuple(tuple(pair) for pair in labels), value, help)
                             for name, labels, value, help in other.get("gauges", ())]
        return total

    def render(self, gauges: list[tuple[str, tuple, float, str]] = ()) -> str:
        lines: list[str] = []
        seen: set[str] = set()

        def header(name: str, kind: str, help: str) -> None:
            if name not in seen:
                seen.add(name)
                lines.extend((f"# HELP {name} {help}", f"# TYPE {name} {kind}"))

        def fmt(labels: tuple) -> str:
            if not labels:
                return ""
            inner = ",".join(f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                             for k, v in labels)
            return "{" + inner + "}"

        for (name, labels), value in sorted(self.counters.items()):
            header(name, "counter", self.help[name][1])
            lines.append(f"{name}{fmt(labels)} {value:g}")
        for name, h in sorted(self.histograms.items()):
            header(name, "histogram", self.help[name][1])
            for bound, below in zip(BUCKETS, cumulative(h)):
                lines.append(f'{name}_bucket{{le="{bound:g}"}} {below}')
            lines.append(f'{name}_bucket{{le="+Inf"}} {h[-1]}')
            lines.extend((f"{name}_sum {h[-2]:g}", f"{name}_count {h[-1]}"))
        for name, labels, value, help in sorted(gauges, key=lambda g: (g[0], g[1])):   # one family, one block
            header(name, "gauge", help)
            lines.append(f"{name}{fmt(labels)} {value:g}")
        return "\n".join(lines) + "\n"


METRICS = Metrics()


bodies = logging.getLogger("ccproxyd.bodies")


def redacted(body: dict) -> dict:
    """A request body fit for a debug log: no user identity, no image or document payloads."""
    def clean(value):
        if isinstance(value, dict):
            return {k: ("[redacted]" if k in ("data", "user_id") and isinstance(v, str) else clean(v))
                    for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value
    return clean(body)


def log_body(request_id: str, body: dict) -> None:
    bodies.info("%s %s", request_id, orjson.dumps(redacted(body)).decode())


# ccproxyd.otel.Telemetry of this process while OpenTelemetry export is on; None (the default) costs
# the request path one test and loads nothing of opentelemetry.
telemetry = None


def telemetry_wanted() -> bool:
    """OpenTelemetry export is on when an OTLP endpoint is set (and the SDK is not disabled)."""
    env = os.environ
    return (any(env.get(f"OTEL_EXPORTER_OTLP{signal}_ENDPOINT", "").strip() for signal in ("", "_TRACES", "_METRICS"))
            and env.get("OTEL_SDK_DISABLED", "").strip().lower() != "true")


SINKS: list[Callable[[Record], None]] = []    # also told of each finished request (the spend ledger)


LINE_FIELDS = tuple(f.name for f in fields(Record) if f.name not in ("started", "model", "at"))


def emit(record: Record) -> None:
    latency = time.monotonic() - record.started
    METRICS.record(record, latency)
    if telemetry is not None:
        telemetry.record(record, latency)
    for sink in SINKS:
        sink(record)
    if not access.isEnabledFor(logging.INFO):
        return
    line = {name: getattr(record, name) for name in LINE_FIELDS}     # scalars all: no deep copy
    line["latency_ms"] = round(latency * 1000, 2)
    line["time"] = clock.stamp(clock.now())
    access.info("%s", orjson.dumps(line).decode(), extra={"fields": line})   # fields: --log-format json
