"""OpenTelemetry export of each Messages request: one span and the GenAI client metrics.

Imported only when `observe.telemetry_wanted()` (OTEL_EXPORTER_OTLP_ENDPOINT, or a per-signal
endpoint, is set): with it unset, nothing of opentelemetry is loaded and the request path pays
one `is None` test.  The standard OTel variables apply as the SDK reads them (endpoints, headers,
timeouts, compression, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_PROPAGATORS, the batch
and export intervals); the protocol must be http/protobuf, the only one this build exports.

The span follows the GenAI semantic conventions for an inference client span: name
`chat {client model}`, kind CLIENT, `gen_ai.request.model` the model the client asked for and
`gen_ai.response.model` the upstream model that answered.  It is made when the request ends, with
the start time it had, as the child of the client's W3C `traceparent` when one came.  Spans and
metrics leave on the SDK's own threads (BatchSpanProcessor, PeriodicExportingMetricReader), never
on the event loop.  No attribute carries a key, a header or a body: only names, counts and times.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from urllib.parse import urlsplit

from opentelemetry import propagate
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from .. import __version__
from ..errors import ConfigError, Problem

log = logging.getLogger("ccproxyd.otel")
PROTOCOL = "http/protobuf"
# Bucket boundaries the GenAI metric conventions give for each histogram.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
FIRST_CHUNK_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
# Hosts whose provider has a well-known `gen_ai.provider.name`; any other provider is named as
# routes.yaml names it.
WELL_KNOWN = {"api.openai.com": "openai", "api.deepseek.com": "deepseek", "api.x.ai": "x_ai",
              "api.groq.com": "groq", "api.mistral.ai": "mistral_ai", "api.perplexity.ai": "perplexity",
              "api.cohere.com": "cohere", "api.cohere.ai": "cohere", "api.anthropic.com": "anthropic"}


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def signals() -> tuple[bool, bool]:
    """(traces, metrics): each is on when an endpoint for it is set and its exporter is not `none`."""
    common = bool(_env("OTEL_EXPORTER_OTLP_ENDPOINT"))
    traces = (common or bool(_env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))) and _env("OTEL_TRACES_EXPORTER") != "none"
    metrics = (common or bool(_env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"))) and _env("OTEL_METRICS_EXPORTER") != "none"
    return traces, metrics


def check() -> None:
    """Raise ConfigError for a setting this build cannot honour (called once, before serving)."""
    for name in ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                 "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"):
        value = _env(name)
        if value and value != PROTOCOL:
            raise ConfigError([Problem("environment", 1, 1, f"{name}={value}: ccproxyd exports OpenTelemetry "
                                                             f"over {PROTOCOL} only; unset it or set {PROTOCOL}")])


def _resource() -> Resource:
    resource = Resource.create({SERVICE_VERSION: __version__})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "ccproxyd"}))
    return resource


class Telemetry:
    """One per worker process (the SDK's export threads do not survive a fork)."""

    def __init__(self) -> None:
        check()
        traces, metrics = signals()
        resource = _resource()
        sdk_log = logging.getLogger("opentelemetry")     # the SDK's export warnings, in ccproxyd's format
        if not sdk_log.handlers:
            for handler in logging.getLogger("ccproxyd").handlers:
                sdk_log.addHandler(handler)
            sdk_log.propagate = False
        self.tracer_provider = self.meter_provider = None
        self.tracer = None
        self.providers: dict[str, tuple] = {}      # name -> (gen_ai name, host, port, the base_url they came from)
        self.table = None                                                    # a callable: the live RouteTable
        if traces:
            self.tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)   # see shutdown
            self.tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            self.tracer = self.tracer_provider.get_tracer("ccproxyd", __version__)
        self.token_usage = self.duration = self.first_chunk = None
        if metrics:
            views = [View(instrument_name="gen_ai.client.token.usage",
                          aggregation=ExplicitBucketHistogramAggregation(TOKEN_BUCKETS)),
                     View(instrument_name="gen_ai.client.operation.duration",
                          aggregation=ExplicitBucketHistogramAggregation(DURATION_BUCKETS)),
                     View(instrument_name="gen_ai.client.operation.time_to_first_chunk",
                          aggregation=ExplicitBucketHistogramAggregation(FIRST_CHUNK_BUCKETS))]
            self.meter_provider = MeterProvider(resource=resource, views=views, shutdown_on_exit=False,
                                                metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())])
            meter = self.meter_provider.get_meter("ccproxyd", __version__)
            self.token_usage = meter.create_histogram("gen_ai.client.token.usage", unit="{token}",
                                                      description="Number of input and output tokens used.")
            self.duration = meter.create_histogram("gen_ai.client.operation.duration", unit="s",
                                                   description="GenAI operation duration.")
            self.first_chunk = meter.create_histogram(
                "gen_ai.client.operation.time_to_first_chunk", unit="s",
                description="Time to receive the first chunk of a streamed answer.")

    def provider(self, name: str | None) -> tuple[str, str | None, int | None]:
        """The provider's `gen_ai.provider.name`, host and port, from the live routing table."""
        if not name:
            return "ccproxyd", None, None                # answered here: a cache hit or a local answer
        table = self.table() if self.table is not None else None
        known = table.providers.get(name) if table is not None else None
        if known is None:
            return name, None, None
        cached = self.providers.get(name)
        if cached is None or cached[3] != known.base_url:
            url = urlsplit(known.base_url)
            port = url.port or (443 if url.scheme == "https" else 80)
            cached = self.providers[name] = (WELL_KNOWN.get(url.hostname or "", name), url.hostname, port,
                                             known.base_url)
        return cached[:3]

    def record(self, record, latency: float) -> None:
        """The span and metric points of one finished request (observe.Record).  A failure here
        is logged, never raised: the request it describes has been answered already."""
        try:
            self._record(record, latency)
        except Exception:
            log.exception("OpenTelemetry: could not record request %s", record.request_id)

    def _record(self, record, latency: float) -> None:
        provider, host, port = self.provider(record.provider)
        common = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": provider}
        if record.client_model:
            common["gen_ai.request.model"] = record.client_model
        if record.upstream_model:
            common["gen_ai.response.model"] = record.upstream_model
        if host is not None:
            common["server.address"], common["server.port"] = host, port
        if self.tracer is not None:
            self._span(record, latency, common)
        if self.duration is not None:
            self.duration.record(latency, dict(common, **({"error.type": record.error_type} if record.error_type else {})))
            if record.cache != "hit":                       # tokens paid for; a hit paid none
                if record.input_tokens or record.cached_tokens:
                    self.token_usage.record(record.input_tokens + record.cached_tokens,
                                            dict(common, **{"gen_ai.token.type": "input"}))
                if record.output_tokens:
                    self.token_usage.record(record.output_tokens, dict(common, **{"gen_ai.token.type": "output"}))
            if record.stream and record.ttft_ms is not None:
                self.first_chunk.record(record.ttft_ms / 1000, common)

    def _span(self, record, latency: float, common: dict) -> None:
        end = time.time_ns()
        attributes = dict(common)
        attributes.update({"gen_ai.request.stream": record.stream,
                           # the conventions' input count includes the cached part; Anthropic's does not
                           "gen_ai.usage.input_tokens": record.input_tokens + record.cached_tokens,
                           "gen_ai.usage.output_tokens": record.output_tokens,
                           "gen_ai.usage.cache_read.input_tokens": record.cached_tokens,
                           "ccproxyd.request_id": record.request_id, "ccproxyd.status": record.status,
                           "ccproxyd.attempts": record.attempts, "ccproxyd.fallback_used": record.fallback_used})
        if record.session_id:
            attributes["gen_ai.conversation.id"] = record.session_id
        if record.finish_reason:
            attributes["gen_ai.response.finish_reasons"] = (record.finish_reason,)
        if record.ttft_ms is not None:
            attributes["gen_ai.response.time_to_first_chunk"] = record.ttft_ms / 1000
        if record.route is not None:
            attributes["ccproxyd.route"] = record.route
        if record.cache:
            attributes["ccproxyd.cache"] = record.cache
        if record.cost_usd is not None:
            attributes["ccproxyd.cost_usd"] = record.cost_usd
        if record.error_type:
            attributes["error.type"] = record.error_type
        carrier = record.carrier
        context = propagate.extract(carrier) if carrier is not None else None
        span = self.tracer.start_span(f"chat {record.client_model}" if record.client_model else "chat",
                                      context=context, kind=SpanKind.CLIENT, attributes=attributes,
                                      start_time=end - int(latency * 1e9))
        if record.error_type:
            span.set_status(Status(StatusCode.ERROR, record.error_type))
        span.end(end_time=end)

    def shutdown(self) -> None:
        """Export what is pending and stop the export threads (blocking)."""
        for provider in (self.tracer_provider, self.meter_provider):
            if provider is not None:
                provider.shutdown()

    async def stop(self, timeout: float) -> None:
        """`shutdown` in a daemon thread, waited for at most `timeout` seconds: a receiver that is
        down (the exporter retries for up to its own timeout) must not hold up the daemon's exit."""
        done = asyncio.Event()
        loop = asyncio.get_running_loop()

        def run() -> None:
            try:
                self.shutdown()
            finally:
                with contextlib.suppress(RuntimeError):         # the loop closed: nobody waits
                    loop.call_soon_threadsafe(done.set)
        threading.Thread(target=run, name="otel-shutdown", daemon=True).start()
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except asyncio.TimeoutError:
            log.warning("OpenTelemetry: the last export did not finish within %.0f s; dropped", timeout)
