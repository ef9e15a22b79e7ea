"""Pure: the daemon's counters and state -> what the /ui page draws (GET /ui/data)."""

from __future__ import annotations

from ..observe.access import BUCKETS, Metrics, cumulative


def quantile(histogram: list, q: float) -> float | None:
    """Seconds at quantile q of a histogram kept as in observe.Metrics (a count for each bucket,
    then sum and count), interpolated inside the bucket as Prometheus' histogram_quantile does;
    None when nothing was observed, the last bound when the rank lies past it."""
    count = histogram[-1] if histogram else 0
    if not count:
        return None
    rank = q * count
    lower, below = 0.0, 0
    for bound, at_or_below in zip(BUCKETS, cumulative(histogram)):
        if at_or_below >= rank:
            return lower + (bound - lower) * (rank - below) / (at_or_below - below)
        lower, below = bound, at_or_below
    return BUCKETS[-1]


def _totals(metrics: Metrics, name: str, label: str) -> dict[str, float]:
    """A counter summed by one of its labels."""
    out: dict[str, float] = {}
    for (counter, labels), value in metrics.counters.items():
        if counter == name:
            key = dict(labels).get(label, "")
            out[key] = out.get(key, 0.0) + value
    return dict(sorted(out.items()))


def _latency(metrics: Metrics, name: str) -> dict:
    histogram = metrics.histograms.get(name)
    if not histogram:
        return {"count": 0, "p50_ms": None, "p95_ms": None}
    return {"count": histogram[-1],
            **{f"p{int(q * 100)}_ms": _ms(quantile(histogram, q)) for q in (0.5, 0.95)}}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _money(counter: dict) -> dict:
    """Cost and savings since start; a figure with no known part is None (shown as unknown)."""
    cost_unknown = int(counter.get("ccproxyd_cost_unknown_total", 0.0))
    savings_unknown = int(counter.get("ccproxyd_savings_unknown_total", 0.0))
    cost = counter.get("ccproxyd_cost_usd_total")
    savings = counter.get("ccproxyd_savings_usd_total")
    return {"cost_usd": round(cost or 0.0, 6) if cost is not None or not cost_unknown else None,
            "savings_usd": round(savings or 0.0, 6) if savings is not None or not savings_unknown else None,
            "cost_unknown": cost_unknown, "savings_unknown": savings_unknown}


def summary(metrics: Metrics, table, reload_state, breakers: dict, ledger: bool) -> dict:
    """Everything on the page but the spend ledger's history: the page reads /spend for that
    when `ledger` says the daemon keeps one."""
    by_status = _totals(metrics, "ccproxyd_requests_total", "status")
    counter = {name: value for (name, labels), value in metrics.counters.items() if not labels}
    return {
        "ledger": ledger,
        "requests": {"total": sum(by_status.values()),
                     "by_status": by_status,
                     "by_model": _totals(metrics, "ccproxyd_requests_total", "model"),
                     "by_route": _totals(metrics, "ccproxyd_requests_total", "route"),
                     "errors_by_type": _totals(metrics, "ccproxyd_errors_total", "type"),
                     "cache": _totals(metrics, "ccproxyd_cache_total", "result")},
        "latency": _latency(metrics, "ccproxyd_request_duration_seconds"),
        "ttft": _latency(metrics, "ccproxyd_time_to_first_token_seconds"),
        "money": _money(counter),
        "tokens": _totals(metrics, "ccproxyd_tokens_total", "kind"),
        "providers": breakers,
        "table": {"path": table.path, "version": table.version, "loaded_at": reload_state.loaded_at,
                  "accepted": reload_state.accepted, "rejected": reload_state.rejected,
                  "last_error": reload_state.last_error, "last_error_at": reload_state.last_error_at},
    }
