"""`ccproxyd statusline`: a Claude Code `statusLine` command.

Claude Code runs it after each message, with its status JSON on stdin (`session_id`,
`model.id`/`display_name`, `workspace`, `cost`, ...), and shows the first line it prints.  This
one asks the daemon's spend ledger (`GET /spend?by=session&session=ID`) and prints the model that
really answers, what the session cost at the provider's prices, what it saved against the Claude
list price, and how much of its input the provider's prompt cache served.  It always exits 0
with one line, daemon down or not: a failing status line would only blank Claude Code's.

Kept light (local.py: the standard library only); `ccproxyd/__main__.py` reaches it without
loading the command-line framework.
"""

from __future__ import annotations

import json
import os
import sys

from . import local
from ..errors import Unreachable

TIMEOUT = 0.25               # seconds for the daemon's answer: Claude Code wants the line within 300 ms


def money(usd: float) -> str:
    return f"${usd:.4f}" if abs(usd) < 1 else f"${usd:,.2f}"


def _partly(row: dict, key: str) -> str:
    unknown = row.get(key) or 0
    return f" ({unknown} of {row['requests']} unknown)" if unknown else ""


def cost_text(row: dict) -> str:
    """Unknown is said, never shown as $0."""
    if row.get("cost_usd") is None:
        return "cost unknown"
    return money(row["cost_usd"]) + _partly(row, "cost_unknown")


def savings_text(row: dict) -> str:
    """Saved against the list prices of the exact Claude ids asked for; negative: the routes cost more."""
    savings = row.get("savings_usd")
    if savings is None:
        return "savings vs Claude unknown"
    if savings < 0:
        return f"{money(-savings)} more than Claude" + _partly(row, "savings_unknown")
    return f"saved {money(savings)} vs Claude" + _partly(row, "savings_unknown")


def answering_model(models: list[dict], requested: str | None) -> str | None:
    """The upstream model that answers `requested` lately, else the latest one of the session."""
    if not models:
        return None
    mine = [m for m in models if m.get("requested") == requested] or models
    latest = max(mine, key=lambda m: m.get("last_at") or "")
    return f"{latest['model']} ({latest['provider']})" if latest.get("provider") else latest["model"]


def line(status: dict, spend: dict) -> str:
    """The status line for Claude Code's status JSON and the daemon's /spend answer (pure)."""
    rows = spend.get("rows") or []
    if not rows:
        return "ccproxyd · no answers yet in this session"
    row = rows[0]
    model = status.get("model") if isinstance(status.get("model"), dict) else {}
    parts = ["ccproxyd", answering_model(row.get("models") or [], model.get("id")) or "?", cost_text(row)]
    parts.append(savings_text(row))
    prompt = row["input_tokens"] + row["cached_input_tokens"]
    if prompt:
        cached = f"{100 * row['cached_input_tokens'] / prompt:.0f}% cached"
        if row.get("miss_cost_usd"):          # what the input the prompt cache did not serve cost
            cached += f" (misses {money(row['miss_cost_usd'])})"
        parts.append(cached)
    return " · ".join(parts)


def main(argv: list[str]) -> int:
    url = None
    if len(argv) >= 2 and argv[0] == "--url":
        url = argv[1]
    elif argv and argv[0].startswith("--url="):
        url = argv[0][len("--url="):]
    elif argv and argv[0] in ("-h", "--help"):
        print("usage: ccproxyd statusline [--url URL]  (reads Claude Code's status JSON on stdin)")
        return 0
    try:
        status = json.loads("{}" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read() or "{}")
    except ValueError:
        status = {}
    if not isinstance(status, dict):
        status = {}
    base = local.daemon_url(url, os.environ.get("CCPROXYD_URL", ""), os.environ.get("ANTHROPIC_BASE_URL", ""))
    session = status.get("session_id")
    if not isinstance(session, str) or not session:
        print("ccproxyd · no session id from Claude Code")
        return 0
    try:
        spend = local.get_json(base, "/spend", {"by": "session", "session": session, "since": "1970-01-01"},
                               timeout=float(os.environ.get("CCPROXYD_STATUSLINE_TIMEOUT") or TIMEOUT))
    except Unreachable as exc:
        print(f"ccproxyd: {exc}"[:200])
        return 0
    try:
        print(line(status, spend))
    except (KeyError, TypeError, ValueError):
        print(f"ccproxyd: {base}/spend did not answer as a ccproxyd does")
    return 0
