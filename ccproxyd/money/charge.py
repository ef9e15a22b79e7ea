"""Pure arithmetic: an Anthropic-shaped usage at a model's prices at a moment -> a Charge.

    fresh   = usage.input_tokens                 at `input`
    written = usage.cache_creation_input_tokens  at `cache_write_1h` (a 1-hour write) or
                                                 `cache_write`, else `input`
    read    = usage.cache_read_input_tokens      at `cached_input`, else `input`
    output  = usage.output_tokens                at `output`
    searches (usage.server_tool_use)             at `web_search_per_1k` / 1000, else the caller's default

The row is the one in force at the request's time; inside one of its windows the window's rates
apply; then the tier whose `up_to` covers the whole prompt (fresh + written + read) prices every
token.  No prices, or a time before the first row: None, never $0.
"""

from __future__ import annotations

from dataclasses import dataclass

from .rates import Priced, Rates, tier_for

PER_TOKENS = 1_000_000
PER_SEARCHES = 1_000
ONE_HOUR = "1h"


@dataclass(frozen=True)
class Charge:
    usd: float
    rate: str              # which prices applied: "deepseek:deepseek-flash 2026-09-10 [peak] [≤128000]"


def searches(usage: dict) -> int:
    """The web searches an Anthropic-shaped usage counts (`server_tool_use.web_search_requests`)."""
    server = usage.get("server_tool_use")
    count = server.get("web_search_requests") if isinstance(server, dict) else 0
    return count if isinstance(count, int) and count > 0 else 0


def prompt_tokens(usage: dict) -> int:
    return (usage.get("input_tokens", 0) + usage.get("cache_creation_input_tokens", 0)
            + usage.get("cache_read_input_tokens", 0))


def charge(priced: Priced | None, usage: dict, at: float, *, write_ttl: str = "5m",
           search_default: float = 0.0) -> Charge | None:
    """USD for `usage` at `priced`'s prices in force at `at` (epoch seconds, UTC)."""
    found = _rates(priced, usage, at)
    if found is None:
        return None
    rates, label = found
    return Charge(usd=_usd(rates, usage, write_ttl, search_default), rate=label)


def miss_cost(priced: Priced | None, usage: dict, at: float, *, write_ttl: str = "5m") -> float | None:
    """What the input the provider's prompt cache did not serve cost (fresh input and cache
    writes at their rates, at the tier the whole prompt falls in); None when unpriced."""
    found = _rates(priced, usage, at)
    if found is None:
        return None
    uncached = {"input_tokens": usage.get("input_tokens", 0),
                "cache_creation_input_tokens": usage.get("cache_creation_input_tokens", 0)}
    return _usd(found[0], uncached, write_ttl, 0.0)


def _rates(priced: Priced | None, usage: dict, at: float) -> tuple[Rates, str] | None:
    """The rates the row in force at `at` charges this usage (its window, then its tier), and
    a label saying which: "deepseek:deepseek-flash 2026-09-10 [mon,… 01:00-04:00 UTC]"."""
    if priced is None:
        return None
    row = priced.row_at(at)
    if row is None:
        return None
    label = [f"{priced.origin}:{priced.model} {row.since_text}"]
    tiers = row.tiers
    if row.windows:
        window = row.window_at(at)
        if window is not None:
            tiers = window.tiers
            label.append(f"[{window.label}]")
        else:
            label.append("[outside windows]")
    prompt = prompt_tokens(usage)
    tier = tier_for(tiers, prompt)
    if len(tiers) > 1:
        label.append(f"[≤{tier.up_to}]" if tier.up_to is not None else f"[>{tiers[-2].up_to}]")
    return tier.rates, " ".join(label)


def _usd(r: Rates, usage: dict, write_ttl: str, search_default: float) -> float:
    read_rate = r.input if r.cached_input is None else r.cached_input
    write_rate = r.input if r.cache_write is None else r.cache_write
    if write_ttl == ONE_HOUR and r.cache_write_1h is not None:
        write_rate = r.cache_write_1h
    per_search = (search_default if r.web_search_per_1k is None else r.web_search_per_1k) / PER_SEARCHES
    tokens = (usage.get("input_tokens", 0) * r.input
              + usage.get("cache_creation_input_tokens", 0) * write_rate
              + usage.get("cache_read_input_tokens", 0) * read_rate
              + usage.get("output_tokens", 0) * r.output)
    return tokens / PER_TOKENS + searches(usage) * per_search


def savings(claude: Charge | None, cost: Charge | None) -> float | None:
    """What the Claude model would have cost minus what the route cost: negative when the route
    is dearer; None when either side is unknown."""
    if claude is None or cost is None:
        return None
    return claude.usd - cost.usd


def write_ttl(body: dict) -> str:
    """"1h" when the request writes Claude's prompt cache with the 1-hour lifetime (a
    `cache_control` of `ttl: "1h"` on its system, tools or messages), else "5m".  Claude Code
    writes most of its cache with the 1-hour lifetime."""
    for block in _cacheable_blocks(body):
        control = block.get("cache_control") if isinstance(block, dict) else None
        if isinstance(control, dict) and control.get("ttl") == ONE_HOUR:
            return ONE_HOUR
    return "5m"


def _cacheable_blocks(body: dict):
    system = body.get("system")
    if isinstance(system, list):
        yield from system
    tools = body.get("tools")
    if isinstance(tools, list):
        yield from tools
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages[-4:]:          # breakpoints sit on the last turns
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, list):
                yield from content
