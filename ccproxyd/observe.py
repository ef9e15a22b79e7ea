"""One JSON log line per request (standard error; journald collects it)."""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import asdict, dataclass

import orjson

from . import pricing
from .config import RouteTable

access = logging.getLogger("ccproxyd.access")


def request_id() -> str:
    return "req_" + secrets.token_hex(12)


@dataclass
class Record:
    """Everything the log line says about one request.  Never keys, never bodies."""
    request_id: str
    started: float
    client_model: str | None = None
    route: int | None = None
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
    cached_tokens: int = 0
    cost_usd: float | None = None
    savings_usd: float | None = None

    def usage(self, usage: dict | None, table: RouteTable, tiers: tuple) -> None:
        if not usage:
            return
        self.input_tokens = usage.get("input_tokens", 0)
        self.output_tokens = usage.get("output_tokens", 0)
        self.cached_tokens = usage.get("cache_read_input_tokens", 0)
        self.cost_usd = pricing.cost(tiers, usage)
        reference = pricing.cost(pricing.claude_reference(table, self.client_model or ""), usage)
        if reference is not None and self.cost_usd is not None:
            self.savings_usd = round(reference - self.cost_usd, 6)
        if self.cost_usd is not None:
            self.cost_usd = round(self.cost_usd, 6)


def emit(record: Record) -> None:
    if not access.isEnabledFor(logging.INFO):
        return
    line = asdict(record)
    line["latency_ms"] = round((time.monotonic() - record.started) * 1000, 2)
    line["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    del line["started"], line["model"]
    access.info("%s", orjson.dumps(line).decode())
