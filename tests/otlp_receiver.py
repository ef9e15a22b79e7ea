"""A real OTLP/HTTP receiver on loopback: POST /v1/traces and /v1/metrics, protobuf bodies decoded
with opentelemetry-proto.  It keeps every request's headers and raw body, and the decoded spans
and metrics.  `python -m tests.otlp_receiver` runs one as a sink (for `make bench`) and prints its
port."""

from __future__ import annotations

import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (ExportMetricsServiceRequest,
                                                                         ExportMetricsServiceResponse)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                     ExportTraceServiceResponse)


def value_of(any_value):
    """An OTLP AnyValue as Python."""
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [value_of(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


def attributes(key_values) -> dict:
    return {kv.key: value_of(kv.value) for kv in key_values}


class OtlpReceiver:
    def __init__(self, keep: bool = True) -> None:
        self.keep = keep
        self.raw: list[tuple[str, dict, bytes]] = []        # path, headers, body as sent
        self.spans: list[dict] = []
        self.metrics: list[dict] = []
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path == "/v1/traces":
                    answer = ExportTraceServiceResponse()
                elif self.path == "/v1/metrics":
                    answer = ExportMetricsServiceResponse()
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                if receiver.keep:
                    receiver.take(self.path, dict(self.headers), body)
                data = answer.SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def take(self, path: str, headers: dict, body: bytes) -> None:
        with self.changed:
            self.raw.append((path, headers, body))
            if path == "/v1/traces":
                request = ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    resource = attributes(resource_spans.resource.attributes)
                    for scope in resource_spans.scope_spans:
                        for span in scope.spans:
                            self.spans.append({"name": span.name, "kind": span.kind, "trace_id": span.trace_id.hex(),
                                               "span_id": span.span_id.hex(), "parent": span.parent_span_id.hex(),
                                               "status": span.status.code, "resource": resource,
                                               "start": span.start_time_unix_nano, "end": span.end_time_unix_nano,
                                               "attributes": attributes(span.attributes)})
            else:
                request = ExportMetricsServiceRequest.FromString(body)
                for resource_metrics in request.resource_metrics:
                    for scope in resource_metrics.scope_metrics:
                        for metric in scope.metrics:
                            kind = metric.WhichOneof("data")
                            points = [{"attributes": attributes(p.attributes), "count": p.count, "sum": p.sum,
                                       "bounds": list(p.explicit_bounds)}
                                      for p in getattr(metric, kind).data_points] if kind == "histogram" else []
                            self.metrics.append({"name": metric.name, "unit": metric.unit, "kind": kind,
                                                 "points": points})
            self.changed.notify_all()

    def wait_for(self, condition, timeout: float = 20.0) -> bool:
        with self.changed:
            return self.changed.wait_for(condition, timeout)

    def start(self) -> "OtlpReceiver":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


if __name__ == "__main__":
    sink = OtlpReceiver(keep=False)
    print(sink.port, flush=True)
    sink.server.serve_forever()
