"""`ccproxyd costs --by …`: the daemon's /spend answer as a table, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
import sys

from . import local
from ..errors import Unreachable

COLUMNS = (("key", "key"), ("requests", "requests"), ("cache_hits", "cache hits"), ("cost_usd", "cost $"),
           ("savings_usd", "saved $"), ("claude_price_usd", "Claude price $"), ("input_tokens", "input"),
           ("cached_input_tokens", "cached input"), ("cache_write_tokens", "cache writes"),
           ("cached_share", "cached %"), ("miss_cost_usd", "misses $"),
           ("output_tokens", "output"), ("reasoning_tokens", "reasoning"),
           ("savings_unknown", "savings unknown"), ("estimated", "estimated"))


def costs_by(url: str | None, by: str, since: str | None, session: str | None, fmt: str) -> int:
    base = local.daemon_url(url)
    if base.endswith("/metrics"):
        base = base[: -len("/metrics")]
    query = {"by": by, **({"since": since} if since else {}), **({"session": session} if session else {})}
    try:
        answer = local.get_json(base, "/spend", query)
        rows, total = answer["rows"], answer["total"]
        if by == "client":                  # use against limits and budgets: the clients: policy
            answer["limits"] = local.get_json(base, "/health").get("clients") or {}
        text = (json.dumps(answer, indent=2) if fmt == "json" else
                as_csv(rows, answer["by"]) if fmt == "csv" else
                as_table(rows, total, answer["by"], answer["since"]) + limits_table(answer.get("limits") or {}))
    except Unreachable as exc:
        print(f"ccproxyd: {exc}", file=sys.stderr)
        return 1
    except (KeyError, TypeError, ValueError):
        print(f"ccproxyd: {base}/spend did not answer as a ccproxyd does", file=sys.stderr)
        return 1
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def _models(row: dict) -> str:
    return " ".join(sorted({f"{m['provider']}:{m['model']}" for m in row["models"]}))


def _cell(name: str, value) -> str:
    """A money figure no request of the group has (no price on that side) is "unknown", never 0."""
    if value is None:
        return "unknown" if name.endswith("_usd") else "-"
    if name == "cached_share":               # the input the provider's prompt cache served
        return f"{100 * value:.1f}"
    return f"{value:.4f}" if name.endswith("_usd") else str(value)


def as_csv(rows: list[dict], by: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([by if name == "key" else name for name, _ in COLUMNS] + ["models"])
    for row in rows:
        writer.writerow([row.get(name) if row.get(name) is not None else "" for name, _ in COLUMNS] + [_models(row)])
    return out.getvalue()


def as_table(rows: list[dict], total: dict, by: str, since: str) -> str:
    header = [by if name == "key" else title for name, title in COLUMNS] + ["models"]
    body = [[_cell(name, row.get(name)) for name, _ in COLUMNS] + [_models(row)] for row in rows]
    body.append(["total"] + [_cell(name, total.get(name)) for name, _ in COLUMNS[1:]] + [""])
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def fmt(line: list[str]) -> str:
        cells = [line[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(line[1:-1], widths[1:-1])] + [line[-1]]
        return "  ".join(cells).rstrip()
    return "\n".join([f"spend since {since} (UTC), by {by}", fmt(header), *map(fmt, body)]) + "\n"


def _use(spent: float, limit) -> str:
    return f"${spent:.4f}" + (f" of ${limit:g} ({100 * spent / limit:.0f}%)" if limit else "")


def limits_table(clients: dict) -> str:
    """One line per client of the table's `clients:`: today's and this month's spend against its
    budgets (and when they reset), and the last minute against rpm and tpm."""
    if not clients:
        return ""
    lines = ["", "limits and budgets (fleet-wide with Redis, else the answering worker's)"]
    for name, use in sorted(clients.items()):
        limits, spent = use["limits"], use["spent_usd"]
        parts = [f"{period} {_use(spent[period], limits['budget_usd'][period])}"
                 + (f", resets {use['resets_at'][period]}" if limits["budget_usd"][period] else "")
                 for period in ("day", "month")]
        parts.append(f"{use['requests_last_minute']}" + (f" of {limits['rpm']}" if limits["rpm"] else "") + " rpm")
        parts.append(f"{use['tokens_last_minute']}" + (f" of {limits['tpm']}" if limits["tpm"] else "") + " tpm")
        lines.append(f"{name}: " + "; ".join(parts) + f" [{use['scope']}]")
    return "\n".join(lines) + "\n"
